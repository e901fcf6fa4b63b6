//! The feedback event schema every crate shares: what the feedback log
//! stores, what the synthetic world and the importers produce, what the
//! co-watch generator consumes and what the trainer's join reads.
//!
//! [`Event`] is the validated domain form. On disk and on the wire an event
//! is the protobuf `watchnext.v1.FeedbackEvent` ([`Event::to_proto`]), so
//! the log needs no second format and stays readable by any protobuf
//! implementation. [`Event::from_proto`] is the one place where incoming
//! events are checked; a batch is accepted or rejected whole and a rejection
//! names the first offending event by index (`events[3].watch.seconds_watched`).

use watchnext_proto::v1::{self as pb, feedback_event::Event as PbEvent};

use crate::{
    config::FeedbackConfig,
    error::InvalidRequest,
    ids::{MAX_ID_BYTES, UserId, VideoId},
    request::Device,
};

pub use pb::CandidateSource as Source;

/// Every candidate source, in wire order (from the generator registry).
pub use crate::registry::SOURCES;

/// The lowercase name a candidate source has in files, logs and reports
/// (its generator's registry name).
pub fn source_name(source: Source) -> &'static str {
    crate::registry::index(source).map_or("unspecified", |i| crate::registry::NAMES[i])
}

/// One generator's vote for a candidate (its provenance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    pub source: Source,
    /// The generator's own score, comparable only within that generator.
    pub score: f32,
    /// The candidate's 1-based place in that generator's list; 0 when not
    /// known (an imported log, an event written before ranks were kept).
    pub rank: u32,
}

impl Vote {
    pub fn new(source: Source, score: f32, rank: u32) -> Self {
        Self { source, score, rank }
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Provenance {
        pb::Provenance { source: self.source as i32, score: self.score, rank: self.rank }
    }
}

/// The source with that lowercase name.
pub fn source_from_name(name: &str) -> Option<Source> {
    SOURCES.iter().copied().find(|s| source_name(*s) == name)
}

/// The exact features the ranker used for one candidate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureVector {
    /// Hash of the feature schema that laid the vector out.
    pub schema_hash: String,
    pub dense: Vec<f32>,
    pub sparse: Vec<i64>,
}

/// A video shown at a position of a list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Impression {
    /// 1-based.
    pub position: u32,
    /// The video being watched when the list was shown.
    pub query_video: Option<VideoId>,
    /// Every generator that proposed the video, with its score.
    pub sources: Vec<Vote>,
    /// The features the ranker used (absent for logs of other policies).
    pub features: Option<FeatureVector>,
    pub model_version: String,
    pub experiment_arm: String,
    /// Probability that the logging policy showed this video here; 0 = unknown.
    pub propensity: f32,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Impression(Impression),
    Click,
    Watch {
        seconds_watched: f32,
        /// 0 when unknown.
        video_duration_seconds: f32,
    },
    Like,
    Dismiss,
    Rating {
        value: f32,
    },
}

impl EventKind {
    /// Lowercase name, as in files and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Impression(_) => "impression",
            EventKind::Click => "click",
            EventKind::Watch { .. } => "watch",
            EventKind::Like => "like",
            EventKind::Dismiss => "dismiss",
            EventKind::Rating { .. } => "rating",
        }
    }
}

/// One feedback event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix epoch milliseconds.
    pub timestamp_ms: i64,
    /// The Recommend request the event answers; empty for organic events.
    pub request_id: String,
    pub user: UserId,
    pub video: VideoId,
    pub device: Device,
    pub kind: EventKind,
}

fn finite_non_negative(field: &str, v: f32, what: &str) -> Result<(), InvalidRequest> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(InvalidRequest::new(field, format!("is {v}; must be a finite number >= 0{what}")))
    }
}

fn source_from_proto(field: &str, p: &pb::Provenance) -> Result<Vote, InvalidRequest> {
    let source = Source::try_from(p.source).map_err(|_| {
        InvalidRequest::new(format!("{field}.source"), format!("unknown candidate source {}", p.source))
    })?;
    if !p.score.is_finite() {
        return Err(InvalidRequest::new(format!("{field}.score"), "must be finite"));
    }
    Ok(Vote::new(source, p.score, p.rank))
}

impl Event {
    /// The event's [`content_id`]: its id in the event stream when no
    /// client gave one (impressions, imports).
    pub fn content_id(&self) -> String {
        content_id(&prost::Message::encode_to_vec(&self.to_proto()))
    }

    /// Validates a wire event; `now_ms` fills a missing timestamp.
    pub fn from_proto(event: &pb::FeedbackEvent, now_ms: i64) -> Result<Self, InvalidRequest> {
        let user = UserId::parse("user_id", &event.user_id)?;
        let video = VideoId::parse("video_id", &event.video_id)?;
        let device = Device::from_proto("device", event.device)?;
        if event.timestamp_ms < 0 {
            return Err(InvalidRequest::new("timestamp_ms", "must be >= 0 (Unix epoch milliseconds)"));
        }
        if event.request_id.len() > MAX_ID_BYTES || event.request_id.chars().any(char::is_control) {
            return Err(InvalidRequest::new("request_id", "must be at most 256 printable bytes"));
        }
        check_event_id(&event.event_id)?;
        let kind = match &event.event {
            None => {
                return Err(InvalidRequest::new(
                    "event",
                    "has no event type (or one this server does not know); set one of impression, click, watch, \
                     like, dismiss, rating",
                ));
            }
            Some(PbEvent::Impression(imp)) => {
                if imp.position == 0 {
                    return Err(InvalidRequest::new("impression.position", "must be >= 1 (positions are 1-based)"));
                }
                let query_video = if imp.query_video_id.is_empty() {
                    None
                } else {
                    Some(VideoId::parse("impression.query_video_id", &imp.query_video_id)?)
                };
                let sources = imp
                    .sources
                    .iter()
                    .enumerate()
                    .map(|(j, p)| source_from_proto(&format!("impression.sources[{j}]"), p))
                    .collect::<Result<_, _>>()?;
                let features = match &imp.features {
                    Some(f) if f.dense.iter().any(|v| !v.is_finite()) => {
                        return Err(InvalidRequest::new("impression.features.dense", "must be finite numbers"));
                    }
                    Some(f) => Some(FeatureVector {
                        schema_hash: f.schema_hash.clone(),
                        dense: f.dense.clone(),
                        sparse: f.sparse.clone(),
                    }),
                    None => None,
                };
                if !(imp.propensity.is_finite() && (0.0..=1.0).contains(&imp.propensity)) {
                    return Err(InvalidRequest::new("impression.propensity", "must be within 0..=1 (0 = unknown)"));
                }
                EventKind::Impression(Impression {
                    position: imp.position,
                    query_video,
                    sources,
                    features,
                    model_version: imp.model_version.clone(),
                    experiment_arm: imp.experiment_arm.clone(),
                    propensity: imp.propensity,
                })
            }
            Some(PbEvent::Click(_)) => EventKind::Click,
            Some(PbEvent::Watch(w)) => {
                finite_non_negative("watch.seconds_watched", w.seconds_watched, "")?;
                finite_non_negative("watch.video_duration_seconds", w.video_duration_seconds, " (0 = unknown)")?;
                EventKind::Watch {
                    seconds_watched: w.seconds_watched,
                    video_duration_seconds: w.video_duration_seconds,
                }
            }
            Some(PbEvent::Like(_)) => EventKind::Like,
            Some(PbEvent::Dismiss(_)) => EventKind::Dismiss,
            Some(PbEvent::Rating(r)) => {
                if !r.value.is_finite() {
                    return Err(InvalidRequest::new("rating.value", "must be a finite number"));
                }
                EventKind::Rating { value: r.value }
            }
        };
        Ok(Self {
            timestamp_ms: if event.timestamp_ms == 0 { now_ms } else { event.timestamp_ms },
            request_id: event.request_id.clone(),
            user,
            video,
            device,
            kind,
        })
    }

    /// The wire (and on-disk) form.
    pub fn to_proto(&self) -> pb::FeedbackEvent {
        let event = match &self.kind {
            EventKind::Impression(imp) => PbEvent::Impression(pb::Impression {
                position: imp.position,
                sources: imp.sources.iter().map(Vote::to_proto).collect(),
                model_version: imp.model_version.clone(),
                experiment_arm: imp.experiment_arm.clone(),
                features: imp.features.as_ref().map(|f| pb::FeatureVector {
                    schema_hash: f.schema_hash.clone(),
                    dense: f.dense.clone(),
                    sparse: f.sparse.clone(),
                }),
                query_video_id: imp.query_video.as_ref().map(|v| v.as_str().to_owned()).unwrap_or_default(),
                propensity: imp.propensity,
            }),
            EventKind::Click => PbEvent::Click(pb::Click {}),
            EventKind::Watch { seconds_watched, video_duration_seconds } => PbEvent::Watch(pb::Watch {
                seconds_watched: *seconds_watched,
                video_duration_seconds: *video_duration_seconds,
            }),
            EventKind::Like => PbEvent::Like(pb::Like {}),
            EventKind::Dismiss => PbEvent::Dismiss(pb::Dismiss {}),
            EventKind::Rating { value } => PbEvent::Rating(pb::Rating { value: *value }),
        };
        pb::FeedbackEvent {
            request_id: self.request_id.clone(),
            user_id: self.user.as_str().to_owned(),
            video_id: self.video.as_str().to_owned(),
            timestamp_ms: self.timestamp_ms,
            device: self.device.to_proto() as i32,
            event_id: String::new(),
            event: Some(event),
        }
    }
}

/// Most dense or sparse values an impression's feature vector may carry at
/// ingestion (today's schema has 38 and 7).
pub const MAX_FEATURES: usize = 4_096;

/// Most provenance entries an impression may carry at ingestion.
pub const MAX_SOURCES: usize = 16;

/// Longest `model_version`, `experiment_arm` or `schema_hash` at ingestion.
pub const MAX_LABEL_BYTES: usize = 256;

fn check_label(field: &str, value: &str) -> Result<(), InvalidRequest> {
    if value.len() > MAX_LABEL_BYTES || value.chars().any(char::is_control) {
        return Err(InvalidRequest::new(
            field,
            format!("has {} bytes; must be at most {MAX_LABEL_BYTES} printable bytes", value.len()),
        ));
    }
    Ok(())
}

/// The rules a new event must meet on top of [`Event::from_proto`]'s, from
/// `[feedback]`: what `Record` accepts into the log. They are not applied
/// when the log is read back, so events accepted under looser rules (or
/// older ones) stay readable.
pub fn check_ingest(
    wire: &pb::FeedbackEvent,
    event: &Event,
    limits: &FeedbackConfig,
    now_ms: i64,
) -> Result<(), InvalidRequest> {
    let latest =
        now_ms.saturating_add(i64::try_from(limits.max_future_seconds).unwrap_or(i64::MAX).saturating_mul(1000));
    if event.timestamp_ms > latest {
        return Err(InvalidRequest::new(
            "timestamp_ms",
            format!(
                "is {} ms, more than {} s ahead of the server's clock ({now_ms} ms); send Unix epoch milliseconds \
                 (0 = now) and check the client's clock",
                event.timestamp_ms, limits.max_future_seconds
            ),
        ));
    }
    match &event.kind {
        EventKind::Impression(imp) => {
            check_label("impression.model_version", &imp.model_version)?;
            check_label("impression.experiment_arm", &imp.experiment_arm)?;
            if imp.sources.len() > MAX_SOURCES {
                return Err(InvalidRequest::new(
                    "impression.sources",
                    format!("has {} entries; at most {MAX_SOURCES} (one per generator)", imp.sources.len()),
                ));
            }
            if let Some(f) = &imp.features {
                check_label("impression.features.schema_hash", &f.schema_hash)?;
                for (field, len) in [("dense", f.dense.len()), ("sparse", f.sparse.len())] {
                    if len > MAX_FEATURES {
                        return Err(InvalidRequest::new(
                            format!("impression.features.{field}"),
                            format!("has {len} values; at most {MAX_FEATURES}"),
                        ));
                    }
                }
            }
        }
        EventKind::Watch { seconds_watched, video_duration_seconds } => {
            let max = limits.max_watch_seconds;
            if *video_duration_seconds > max {
                return Err(InvalidRequest::new(
                    "watch.video_duration_seconds",
                    format!("is {video_duration_seconds}; at most {max} (feedback.max_watch_seconds)"),
                ));
            }
            if *seconds_watched > max {
                return Err(InvalidRequest::new(
                    "watch.seconds_watched",
                    format!("is {seconds_watched}; at most {max} in one event (feedback.max_watch_seconds)"),
                ));
            }
            let multiple = limits.max_watch_multiple;
            if *video_duration_seconds > 0.0 && *seconds_watched > video_duration_seconds * multiple {
                return Err(InvalidRequest::new(
                    "watch.seconds_watched",
                    format!(
                        "is {seconds_watched}, more than {multiple} times the video's duration \
                         ({video_duration_seconds} s; feedback.max_watch_multiple)"
                    ),
                ));
            }
        }
        EventKind::Rating { value } => {
            if !(limits.rating_min..=limits.rating_max).contains(value) {
                return Err(InvalidRequest::new(
                    "rating.value",
                    format!(
                        "is {value}; must be within {}..={} (feedback.rating_min, rating_max)",
                        limits.rating_min, limits.rating_max
                    ),
                ));
            }
        }
        EventKind::Click | EventKind::Like | EventKind::Dismiss => {}
    }
    let bytes = prost::Message::encoded_len(wire);
    if bytes > limits.max_event_bytes as usize {
        return Err(InvalidRequest::new(
            "event",
            format!("is {bytes} bytes encoded; at most {} (feedback.max_event_bytes)", limits.max_event_bytes),
        ));
    }
    Ok(())
}

/// Longest client `event_id` accepted, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;

fn check_event_id(id: &str) -> Result<(), InvalidRequest> {
    if id.len() > MAX_EVENT_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidRequest::new(
            "event_id",
            format!("must be at most {MAX_EVENT_ID_BYTES} printable ASCII characters without spaces (a UUID, say)"),
        ));
    }
    Ok(())
}

/// The id the event stream deduplicates a wire event on: the client's
/// `event_id`, or one derived from the event's encoding as sent (so a
/// byte-identical retry gets the same id). Call after validation.
pub fn event_id(event: &pb::FeedbackEvent) -> String {
    if event.event_id.is_empty() { content_id(&prost::Message::encode_to_vec(event)) } else { event.event_id.clone() }
}

/// A 128-bit content id of `bytes`: two independently keyed SipHash
/// digests, as 32 hex digits after `c-`. Stable for a given build; ids only
/// need to agree within the event stream's duplicate window.
pub fn content_id(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let digest = |key: u8| {
        #[allow(deprecated)] // SipHasher: keyed, deterministic, in std
        let mut h = std::hash::SipHasher::new_with_keys(u64::from(key), 0x7761_7463_686e_6578);
        bytes.hash(&mut h);
        h.finish()
    };
    format!("c-{:016x}{:016x}", digest(1), digest(2))
}

/// Validates a `Record` batch: its size, the event rules and the
/// ingestion limits of `[feedback]` ([`check_ingest`]).
pub fn parse_batch(
    events: &[pb::FeedbackEvent],
    limits: &FeedbackConfig,
    now_ms: i64,
) -> Result<Vec<Event>, InvalidRequest> {
    if events.is_empty() {
        return Err(InvalidRequest::new("events", "is empty; send at least one event"));
    }
    let max_batch = limits.max_batch_events as usize;
    if events.len() > max_batch {
        return Err(InvalidRequest::new(
            "events",
            format!("has {} events; split it into batches of at most {max_batch}", events.len()),
        ));
    }
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Event::from_proto(e, now_ms)
                .and_then(|event| check_ingest(e, &event, limits, now_ms).map(|()| event))
                .map_err(|err| err.within(&format!("events[{i}]")))
        })
        .collect()
}

/// Where producers of events (the synthetic world, the importers) put them:
/// a `Vec` in tests, the feedback log's bulk writer in production.
pub trait EventSink {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Takes one event; events arrive in time order.
    fn push(&mut self, event: Event) -> Result<(), Self::Error>;
}

impl EventSink for Vec<Event> {
    type Error = std::convert::Infallible;

    fn push(&mut self, event: Event) -> Result<(), Self::Error> {
        Vec::push(self, event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(e: PbEvent) -> pb::FeedbackEvent {
        pb::FeedbackEvent {
            user_id: "u".into(),
            video_id: "v".into(),
            timestamp_ms: 5,
            event: Some(e),
            ..Default::default()
        }
    }

    fn limits(max_batch_events: u32) -> FeedbackConfig {
        FeedbackConfig { max_batch_events, ..FeedbackConfig::default() }
    }

    #[test]
    fn ingestion_limits_name_the_field_and_the_setting() {
        let now = 1_700_000_000_000;
        let check = |e: pb::FeedbackEvent| parse_batch(&[e], &limits(10), now).map(|_| ()).map_err(|e| e.to_string());
        let watch = |seconds_watched, video_duration_seconds| {
            event(PbEvent::Watch(pb::Watch { seconds_watched, video_duration_seconds }))
        };
        // Within every limit.
        assert_eq!(check(watch(600.0, 60.0)), Ok(()), "ten times a short video");
        assert_eq!(check(watch(3_600.0, 0.0)), Ok(()), "unknown duration");
        assert_eq!(check(event(PbEvent::Rating(pb::Rating { value: -10.0 }))), Ok(()));
        let mut soon = event(PbEvent::Click(pb::Click {}));
        soon.timestamp_ms = now + 86_400_000;
        assert_eq!(check(soon.clone()), Ok(()), "a day of clock skew");

        let refused = |e: pb::FeedbackEvent, field: &str, says: &str| {
            let err = check(e).expect_err(field);
            assert!(err.contains(field) && err.contains(says), "{err}");
        };
        soon.timestamp_ms = i64::MAX;
        refused(soon, "events[0].timestamp_ms", "ahead of the server's clock");
        refused(watch(601.0, 60.0), "events[0].watch.seconds_watched", "max_watch_multiple");
        refused(watch(1e9, 0.0), "events[0].watch.seconds_watched", "max_watch_seconds");
        refused(watch(1.0, 1e9), "events[0].watch.video_duration_seconds", "max_watch_seconds");
        refused(event(PbEvent::Rating(pb::Rating { value: 1e30 })), "events[0].rating.value", "rating_max");
        let impression = |f: &dyn Fn(&mut pb::Impression)| {
            let mut imp = pb::Impression { position: 1, ..Default::default() };
            f(&mut imp);
            event(PbEvent::Impression(imp))
        };
        refused(impression(&|i| i.model_version = "m".repeat(300)), "impression.model_version", "256");
        refused(impression(&|i| i.experiment_arm = "a\u{7}b".into()), "impression.experiment_arm", "printable");
        refused(
            impression(&|i| i.features = Some(pb::FeatureVector { dense: vec![0.0; 1_000_000], ..Default::default() })),
            "impression.features.dense",
            "at most 4096",
        );
        refused(impression(&|i| i.sources = vec![pb::Provenance::default(); 17]), "impression.sources", "at most 16");
        // Each field within its limit, the whole still too large to follow.
        let small = FeedbackConfig { max_event_bytes: 16 * 1024, ..limits(10) };
        let big = impression(&|i| {
            i.features =
                Some(pb::FeatureVector { dense: vec![0.5; 4_096], sparse: vec![i64::MAX; 4_096], ..Default::default() })
        });
        let err = parse_batch(&[big], &small, now).expect_err("too large").to_string();
        assert!(err.contains("events[0].event") && err.contains("max_event_bytes"), "{err}");
        // None of this applies when a stored event is read back.
        let mut old = watch(1e9, 0.0);
        old.timestamp_ms = i64::MAX;
        assert!(Event::from_proto(&old, 0).is_ok());
    }

    #[test]
    fn valid_events_round_trip_through_the_wire_form() {
        let events = vec![
            event(PbEvent::Impression(pb::Impression {
                position: 3,
                sources: vec![pb::Provenance { source: Source::Cowatch as i32, score: 0.5, rank: 3 }],
                features: Some(pb::FeatureVector { schema_hash: "h".into(), dense: vec![1.0], sparse: vec![7] }),
                query_video_id: "q".into(),
                model_version: "m1".into(),
                experiment_arm: "a".into(),
                propensity: 0.25,
            })),
            event(PbEvent::Click(pb::Click {})),
            event(PbEvent::Watch(pb::Watch { seconds_watched: 30.0, video_duration_seconds: 60.0 })),
            event(PbEvent::Like(pb::Like {})),
            event(PbEvent::Dismiss(pb::Dismiss {})),
            event(PbEvent::Rating(pb::Rating { value: 4.5 })),
        ];
        let parsed = parse_batch(&events, &limits(10), 0).unwrap();
        assert_eq!(parsed.len(), 6);
        for (wire, domain) in events.iter().zip(&parsed) {
            assert_eq!(&domain.to_proto(), wire);
        }
        let names: Vec<_> = parsed.iter().map(|e| e.kind.name()).collect();
        assert_eq!(names, ["impression", "click", "watch", "like", "dismiss", "rating"]);
    }

    #[test]
    fn a_missing_timestamp_is_the_server_clock() {
        let mut e = event(PbEvent::Click(pb::Click {}));
        e.timestamp_ms = 0;
        assert_eq!(Event::from_proto(&e, 1234).unwrap().timestamp_ms, 1234);
    }

    #[test]
    fn the_first_bad_event_is_named() {
        let mut events = vec![event(PbEvent::Click(pb::Click {})); 3];
        events[1] = event(PbEvent::Watch(pb::Watch { seconds_watched: -1.0, video_duration_seconds: 0.0 }));
        assert_eq!(parse_batch(&events, &limits(10), 0).unwrap_err().field, "events[1].watch.seconds_watched");

        events[1] = event(PbEvent::Impression(pb::Impression { position: 0, ..Default::default() }));
        assert_eq!(parse_batch(&events, &limits(10), 0).unwrap_err().field, "events[1].impression.position");

        events[1] = pb::FeedbackEvent { user_id: "u".into(), video_id: "v".into(), ..Default::default() };
        assert_eq!(parse_batch(&events, &limits(10), 0).unwrap_err().field, "events[1].event");

        events[1] = event(PbEvent::Rating(pb::Rating { value: f32::INFINITY }));
        assert_eq!(parse_batch(&events, &limits(10), 0).unwrap_err().field, "events[1].rating.value");

        events[1] = event(PbEvent::Click(pb::Click {}));
        events[2].user_id.clear();
        assert_eq!(parse_batch(&events, &limits(10), 0).unwrap_err().field, "events[2].user_id");

        events[2].user_id = "u".into();
        let err = parse_batch(&events, &limits(2), 0).unwrap_err();
        assert!(err.field == "events" && err.problem.contains("at most 2"), "{err}");
        assert_eq!(parse_batch(&[], &limits(2), 0).unwrap_err().field, "events");
    }
}
