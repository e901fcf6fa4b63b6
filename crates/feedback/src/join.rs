//! Impressions ⋈ later outcomes → labelled training rows, in one streaming
//! pass with bounded memory.
//!
//! Feed [`Joiner::push`] the events in time order (the log's sequence order
//! is append order, which is time order up to client clock skew). The
//! joiner keeps a *clock*: the largest timestamp seen so far.
//!
//! - An **impression** with a request id opens a pending row keyed by
//!   `(request_id, user, video)`, due at `impression time + window`
//!   ([`JoinOptions::attribution_window_ms`], default 6 hours: long videos watched back to back, then liked, land well after the impression).
//! - An **outcome** (click, watch, like, dismiss, rating) with the same
//!   request id, user and video that arrives while the row is pending sets
//!   its labels (below) and counts as *matched*. A row is pending until the
//!   clock passes its due time, so an outcome at most `window` after its
//!   impression is attributed and a later one is not. An outcome with no
//!   pending row (never shown, shown too long ago, or evicted) counts as
//!   *unmatched*.
//! - **Organic** events (empty request id, impressions included) are
//!   counted and otherwise ignored: they answer no recommendation.
//! - Rows are emitted, in impression order, as soon as the clock passes
//!   their due time; [`Joiner::finish`] emits the rest. If more than
//!   [`JoinOptions::max_pending`] rows are pending, the oldest is emitted
//!   early with the labels it has so far and counted as *evicted*; that is
//!   the memory bound.
//! - The same `(request_id, user, video)` shown again while its first row is
//!   pending opens a second row (counted as a duplicate impression); later
//!   outcomes go to the newer one.
//!
//! Labels of a row, from the outcomes matched to it:
//! - `click`: a click was seen, or a watch (a video cannot be watched
//!   without being opened, and some clients only report watches);
//! - `watch_seconds`: the sum of `seconds_watched` over its watches;
//! - `video_duration_seconds`: the largest non-zero duration its watches
//!   reported, 0 if none did;
//! - `watch_fraction`: `watch_seconds / video_duration_seconds` clamped to
//!   `0..=1`, or 0 when the duration is unknown;
//! - `like`, `dismiss`: whether one was seen;
//! - `rating`: the value of the last rating, `None` without one.

use std::collections::{HashMap, VecDeque};

use watchnext_core::{
    Device, UserId, VideoId,
    event::{Event, EventKind, FeatureVector, Impression, Vote},
};

/// How the join attributes outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// How long after an impression an outcome still counts for it. Default 6 hours.
    pub attribution_window_ms: i64,
    /// The most rows pending at once; beyond it the oldest is emitted early.
    /// A pending row costs a few hundred bytes plus its features. Default 1,000,000.
    pub max_pending: usize,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self { attribution_window_ms: 6 * 60 * 60 * 1000, max_pending: 1_000_000 }
    }
}

/// One labelled impression: what the trainer learns from.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRow {
    /// When the impression was shown (Unix epoch milliseconds).
    pub timestamp_ms: i64,
    pub request_id: String,
    pub user_id: String,
    pub video_id: String,
    /// The video being watched when the list was shown.
    pub query_video_id: Option<String>,
    pub device: Device,
    /// 1-based position in the list; the shallow tower learns position bias from it.
    pub position: u32,
    /// Every generator that proposed the video, with its score.
    pub sources: Vec<Vote>,
    /// The features the ranker used, when the logging policy recorded them.
    pub features: Option<FeatureVector>,
    pub model_version: String,
    pub experiment_arm: String,
    /// Probability that the logging policy showed the video here; 0 = unknown.
    pub propensity: f32,
    pub click: bool,
    pub watch_seconds: f32,
    pub video_duration_seconds: f32,
    pub watch_fraction: f32,
    pub like: bool,
    pub dismiss: bool,
    pub rating: Option<f32>,
}

/// What a join saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JoinSummary {
    /// Events pushed.
    pub events: u64,
    /// Impressions with a request id (each opened a row).
    pub impressions: u64,
    /// Rows emitted (equals `impressions` after `finish`).
    pub rows: u64,
    /// Outcomes that set labels of a row.
    pub matched_outcomes: u64,
    /// Outcomes with a request id but no pending row to go to.
    pub unmatched_outcomes: u64,
    /// Events without a request id.
    pub organic_events: u64,
    /// Rows emitted early because `max_pending` rows were pending.
    pub evicted: u64,
    /// Impressions of a `(request_id, user, video)` that already had a pending row.
    pub duplicate_impressions: u64,
    /// The most rows pending at once (never above `max_pending`).
    pub peak_pending: usize,
}

/// `(request_id, user, video)`: what an outcome must share with its impression.
type Key = (String, UserId, VideoId);

/// A row waiting for its outcomes.
#[derive(Debug)]
struct Pending {
    /// To remove the index entry when the row leaves.
    key: Key,
    /// The clock value after which no outcome is attributed any more.
    due_ms: i64,
    row: TrainingRow,
}

/// The streaming join; see the module documentation.
#[derive(Debug)]
pub struct Joiner {
    options: JoinOptions,
    /// The largest timestamp seen.
    clock_ms: i64,
    /// Pending rows in impression order; the front is the oldest.
    pending: VecDeque<Pending>,
    /// Id of `pending[0]`; row ids grow by one per impression, so a row's
    /// slot is `id - front_id`.
    front_id: u64,
    /// The pending row (by id) each key's outcomes go to.
    index: HashMap<Key, u64>,
    summary: JoinSummary,
}

impl Joiner {
    pub fn new(options: JoinOptions) -> Self {
        Self {
            options,
            clock_ms: i64::MIN,
            pending: VecDeque::new(),
            front_id: 0,
            index: HashMap::new(),
            summary: JoinSummary::default(),
        }
    }

    /// Takes the next event; `emit` receives every row that became final.
    pub fn push<E>(&mut self, event: Event, emit: &mut impl FnMut(TrainingRow) -> Result<(), E>) -> Result<(), E> {
        self.summary.events += 1;
        if event.timestamp_ms > self.clock_ms {
            self.clock_ms = event.timestamp_ms;
            while self.pending.front().is_some_and(|p| p.due_ms < self.clock_ms) {
                self.emit_oldest(emit)?;
            }
        }
        if event.request_id.is_empty() {
            self.summary.organic_events += 1;
            return Ok(());
        }
        let Event { timestamp_ms, request_id, user, video, device, kind } = event;
        let key = (request_id, user, video);
        match kind {
            EventKind::Impression(imp) => {
                if self.pending.len() >= self.options.max_pending.max(1) {
                    self.summary.evicted += 1;
                    self.emit_oldest(emit)?;
                }
                self.summary.impressions += 1;
                let row = new_row(timestamp_ms, &key, device, imp);
                let id = self.front_id + self.pending.len() as u64;
                if self.index.insert(key.clone(), id).is_some() {
                    self.summary.duplicate_impressions += 1;
                }
                let due_ms = timestamp_ms.saturating_add(self.options.attribution_window_ms);
                self.pending.push_back(Pending { key, due_ms, row });
                self.summary.peak_pending = self.summary.peak_pending.max(self.pending.len());
            }
            outcome => match self.index.get(&key) {
                Some(&id) => {
                    let slot = (id - self.front_id) as usize;
                    if let Some(p) = self.pending.get_mut(slot) {
                        apply_outcome(&mut p.row, &outcome);
                        self.summary.matched_outcomes += 1;
                    }
                }
                None => self.summary.unmatched_outcomes += 1,
            },
        }
        Ok(())
    }

    /// Emits every pending row and returns the summary.
    pub fn finish<E>(mut self, emit: &mut impl FnMut(TrainingRow) -> Result<(), E>) -> Result<JoinSummary, E> {
        while !self.pending.is_empty() {
            self.emit_oldest(emit)?;
        }
        Ok(self.summary)
    }

    /// Rows pending now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The counts so far.
    pub fn summary(&self) -> JoinSummary {
        self.summary
    }

    fn emit_oldest<E>(&mut self, emit: &mut impl FnMut(TrainingRow) -> Result<(), E>) -> Result<(), E> {
        let Some(Pending { key, mut row, .. }) = self.pending.pop_front() else { return Ok(()) };
        // A newer duplicate may own the key by now; only remove our own entry.
        if self.index.get(&key) == Some(&self.front_id) {
            self.index.remove(&key);
        }
        self.front_id += 1;
        row.watch_fraction = if row.video_duration_seconds > 0.0 {
            (row.watch_seconds / row.video_duration_seconds).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.summary.rows += 1;
        emit(row)
    }
}

/// Joins a whole stream: every event of `events`, then `finish`.
pub fn join_events<E>(
    events: impl IntoIterator<Item = Event>,
    options: JoinOptions,
    mut emit: impl FnMut(TrainingRow) -> Result<(), E>,
) -> Result<JoinSummary, E> {
    let mut joiner = Joiner::new(options);
    for event in events {
        joiner.push(event, &mut emit)?;
    }
    joiner.finish(&mut emit)
}

fn new_row(timestamp_ms: i64, key: &Key, device: Device, imp: Impression) -> TrainingRow {
    TrainingRow {
        timestamp_ms,
        request_id: key.0.clone(),
        user_id: key.1.as_str().to_owned(),
        video_id: key.2.as_str().to_owned(),
        query_video_id: imp.query_video.map(|v| v.as_str().to_owned()),
        device,
        position: imp.position,
        sources: imp.sources,
        features: imp.features,
        model_version: imp.model_version,
        experiment_arm: imp.experiment_arm,
        propensity: imp.propensity,
        click: false,
        watch_seconds: 0.0,
        video_duration_seconds: 0.0,
        watch_fraction: 0.0,
        like: false,
        dismiss: false,
        rating: None,
    }
}

fn apply_outcome(row: &mut TrainingRow, outcome: &EventKind) {
    match *outcome {
        EventKind::Impression(_) => {}
        EventKind::Click => row.click = true,
        EventKind::Watch { seconds_watched, video_duration_seconds } => {
            row.click = true;
            row.watch_seconds += seconds_watched;
            row.video_duration_seconds = row.video_duration_seconds.max(video_duration_seconds);
        }
        EventKind::Like => row.like = true,
        EventKind::Dismiss => row.dismiss = true,
        EventKind::Rating { value } => row.rating = Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchnext_core::event::Source;

    const MIN: i64 = 60_000;

    fn ev(t: i64, request: &str, user: &str, video: &str, kind: EventKind) -> Event {
        Event {
            timestamp_ms: t,
            request_id: request.into(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind,
        }
    }

    fn impression(t: i64, request: &str, user: &str, video: &str, position: u32) -> Event {
        ev(
            t,
            request,
            user,
            video,
            EventKind::Impression(Impression {
                position,
                query_video: Some(VideoId::parse("q", "q1").unwrap()),
                sources: vec![Vote::new(Source::Cowatch, 0.5, 1), Vote::new(Source::Topic, 0.25, 2)],
                features: Some(FeatureVector { schema_hash: "h".into(), dense: vec![1.0, 2.0], sparse: vec![3] }),
                model_version: "m1".into(),
                experiment_arm: "arm-a".into(),
                propensity: 0.5,
            }),
        )
    }

    fn run(events: Vec<Event>, options: JoinOptions) -> (Vec<TrainingRow>, JoinSummary) {
        let mut rows = Vec::new();
        let summary = join_events(events, options, |r| {
            rows.push(r);
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap();
        (rows, summary)
    }

    #[test]
    fn all_outcomes_of_one_impression_label_its_row() {
        let watch = |s, d| EventKind::Watch { seconds_watched: s, video_duration_seconds: d };
        let events = vec![
            impression(0, "r1", "u1", "v1", 1),
            impression(0, "r1", "u1", "v2", 2),
            ev(MIN, "r1", "u1", "v1", EventKind::Click),
            ev(2 * MIN, "r1", "u1", "v1", watch(30.0, 100.0)),
            ev(3 * MIN, "r1", "u1", "v1", watch(50.0, 0.0)),
            ev(4 * MIN, "r1", "u1", "v1", EventKind::Like),
            ev(5 * MIN, "r1", "u1", "v1", EventKind::Rating { value: 3.0 }),
            ev(6 * MIN, "r1", "u1", "v1", EventKind::Rating { value: 4.5 }),
            ev(7 * MIN, "r1", "u1", "v2", EventKind::Dismiss),
        ];
        let (rows, s) = run(events, JoinOptions::default());
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!((r.video_id.as_str(), r.position, r.timestamp_ms), ("v1", 1, 0));
        assert!(r.click && r.like && !r.dismiss);
        assert_eq!(r.watch_seconds, 80.0);
        assert_eq!(r.video_duration_seconds, 100.0);
        assert!((r.watch_fraction - 0.8).abs() < 1e-6);
        assert_eq!(r.rating, Some(4.5));
        assert_eq!(r.query_video_id.as_deref(), Some("q1"));
        assert_eq!(r.sources, vec![Vote::new(Source::Cowatch, 0.5, 1), Vote::new(Source::Topic, 0.25, 2)]);
        assert_eq!(r.features.as_ref().unwrap().dense, vec![1.0, 2.0]);
        assert_eq!((r.model_version.as_str(), r.experiment_arm.as_str(), r.propensity), ("m1", "arm-a", 0.5));
        assert_eq!(r.device, Device::Phone);
        let r = &rows[1];
        assert!(r.dismiss && !r.click && !r.like && r.rating.is_none());
        assert_eq!((r.watch_seconds, r.watch_fraction), (0.0, 0.0));
        assert_eq!((s.rows, s.impressions, s.matched_outcomes, s.unmatched_outcomes), (2, 2, 7, 0));
    }

    #[test]
    fn watch_fraction_is_clamped_and_zero_without_a_duration() {
        let watch = |s, d| EventKind::Watch { seconds_watched: s, video_duration_seconds: d };
        let events = vec![
            impression(0, "r", "u", "a", 1),
            impression(0, "r", "u", "b", 2),
            ev(1, "r", "u", "a", watch(150.0, 100.0)),
            ev(2, "r", "u", "b", watch(10.0, 0.0)),
        ];
        let (rows, _) = run(events, JoinOptions::default());
        assert_eq!(rows[0].watch_fraction, 1.0);
        assert_eq!((rows[1].watch_fraction, rows[1].watch_seconds, rows[1].click), (0.0, 10.0, true));
    }

    #[test]
    fn outcomes_after_the_window_do_not_count() {
        let window = JoinOptions::default().attribution_window_ms;
        assert_eq!(window, 360 * MIN, "the documented default");
        let events = vec![
            impression(0, "r1", "u1", "v1", 1),
            impression(0, "r1", "u1", "v2", 2),
            ev(window, "r1", "u1", "v1", EventKind::Click), // exactly at the edge: counts
            ev(window + 1, "r1", "u1", "v2", EventKind::Click), // one ms late: does not
        ];
        let (rows, s) = run(events, JoinOptions::default());
        assert!(rows[0].click);
        assert!(!rows[1].click);
        assert_eq!((s.matched_outcomes, s.unmatched_outcomes), (1, 1));
    }

    #[test]
    fn organic_and_unmatched_events_are_counted_not_joined() {
        let events = vec![
            impression(0, "", "u1", "v1", 1),         // organic impression
            ev(1, "", "u1", "v1", EventKind::Click),  // organic click
            ev(2, "r9", "u1", "v1", EventKind::Like), // no impression with r9
            impression(3, "r1", "u1", "v1", 1),
            ev(4, "r1", "u2", "v1", EventKind::Click), // other user
            ev(5, "r1", "u1", "v7", EventKind::Click), // other video
        ];
        let (rows, s) = run(events, JoinOptions::default());
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].click);
        assert_eq!((s.organic_events, s.unmatched_outcomes, s.matched_outcomes, s.events), (2, 3, 0, 6));
    }

    #[test]
    fn rows_leave_in_impression_order_once_the_clock_passes_their_window() {
        let mut joiner = Joiner::new(JoinOptions { attribution_window_ms: 10, max_pending: 100 });
        let mut out = Vec::new();
        let mut emit = |r: TrainingRow| {
            out.push(r.video_id);
            Ok::<_, std::convert::Infallible>(())
        };
        for (t, v) in [(0, "a"), (5, "b"), (8, "c")] {
            joiner.push(impression(t, "r", "u", v, 1), &mut emit).unwrap();
        }
        assert_eq!(joiner.pending(), 3);
        joiner.push(ev(16, "", "u", "x", EventKind::Click), &mut emit).unwrap(); // passes a (due 10) and b (due 15)
        assert_eq!(joiner.pending(), 1);
        let summary = joiner.finish(&mut emit).unwrap();
        assert_eq!(out, ["a", "b", "c"]);
        assert_eq!(summary.rows, 3);
    }

    #[test]
    fn the_pending_cap_evicts_the_oldest_and_bounds_memory() {
        let cap = 10;
        let mut events = Vec::new();
        for i in 0..1000 {
            events.push(impression(i, &format!("r{i}"), "u", "v", 1));
            // The outcome of impression i-5 arrives 5 impressions later: with a
            // cap of 10 it is still pending.
            if i >= 5 {
                events.push(ev(i, &format!("r{}", i - 5), "u", "v", EventKind::Click));
            }
            // The outcome of impression i-50 arrives after its row was evicted.
            if i >= 50 {
                events.push(ev(i, &format!("r{}", i - 50), "u", "v", EventKind::Like));
            }
        }
        let mut joiner = Joiner::new(JoinOptions { attribution_window_ms: i64::MAX / 2, max_pending: cap });
        let mut rows = Vec::new();
        for e in events {
            joiner
                .push(e, &mut |r| {
                    rows.push(r);
                    Ok::<_, std::convert::Infallible>(())
                })
                .unwrap();
            assert!(joiner.pending() <= cap);
        }
        let s = joiner
            .finish(&mut |r| {
                rows.push(r);
                Ok::<_, std::convert::Infallible>(())
            })
            .unwrap();
        assert_eq!(s.peak_pending, cap);
        assert_eq!(s.evicted, 1000 - cap as u64);
        assert_eq!(s.rows, 1000);
        assert_eq!((s.matched_outcomes, s.unmatched_outcomes), (995, 950));
        assert!(rows.iter().take(995).all(|r| r.click && !r.like));
        let order: Vec<i64> = rows.iter().map(|r| r.timestamp_ms).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "rows leave in impression order");
    }

    #[test]
    fn a_repeated_impression_opens_a_second_row() {
        let events = vec![
            impression(0, "r", "u", "v", 1),
            impression(1, "r", "u", "v", 4),
            ev(2, "r", "u", "v", EventKind::Click),
        ];
        let (rows, s) = run(events, JoinOptions::default());
        assert_eq!(rows.len(), 2);
        assert!(!rows[0].click && rows[1].click);
        assert_eq!(s.duplicate_impressions, 1);
    }

    #[test]
    fn an_emit_error_stops_the_join() {
        let events = vec![impression(0, "r", "u", "a", 1), impression(0, "r", "u", "b", 1)];
        let mut n = 0;
        let err = join_events(events, JoinOptions::default(), |_| {
            n += 1;
            if n == 2 { Err("disk full") } else { Ok(()) }
        })
        .unwrap_err();
        assert_eq!(err, "disk full");
    }
}
