//! The domain form of what every request carries besides its ids: the device,
//! the request context (time, locale) and the user's recent history. The wire
//! types are converted here, once, and validated on the way in, so the
//! services below work with values that are known to be sane.

use watchnext_proto::v1 as pb;

use crate::{
    error::InvalidRequest,
    ids::{RequestId, UserId, VideoId},
};

/// The most history items a request may carry.
pub const MAX_HISTORY: usize = 1_000;
/// Longest accepted locale or country string, in bytes.
const MAX_LOCALE_BYTES: usize = 35;
/// UTC offsets beyond ±14 h do not exist.
const MAX_UTC_OFFSET_MINUTES: i32 = 14 * 60;

/// The device a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// The client did not say.
    Unknown,
    Phone,
    Tablet,
    Tv,
    Desktop,
}

impl Device {
    /// Every device, in wire order.
    pub const ALL: [Device; 5] = [Device::Unknown, Device::Phone, Device::Tablet, Device::Tv, Device::Desktop];

    /// Converts the wire enum; an unknown number is a client error.
    pub fn from_proto(field: &str, value: i32) -> Result<Self, InvalidRequest> {
        match pb::DeviceType::try_from(value) {
            Ok(pb::DeviceType::Unspecified) => Ok(Device::Unknown),
            Ok(pb::DeviceType::Phone) => Ok(Device::Phone),
            Ok(pb::DeviceType::Tablet) => Ok(Device::Tablet),
            Ok(pb::DeviceType::Tv) => Ok(Device::Tv),
            Ok(pb::DeviceType::Desktop) => Ok(Device::Desktop),
            Err(_) => Err(InvalidRequest::new(field, format!("unknown device type {value}; expected 0..=4"))),
        }
    }

    /// The wire enum.
    pub fn to_proto(self) -> pb::DeviceType {
        match self {
            Device::Unknown => pb::DeviceType::Unspecified,
            Device::Phone => pb::DeviceType::Phone,
            Device::Tablet => pb::DeviceType::Tablet,
            Device::Tv => pb::DeviceType::Tv,
            Device::Desktop => pb::DeviceType::Desktop,
        }
    }

    /// A dense index (0..5), e.g. for one-hot features.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lowercase name, as used in logs, metrics and files.
    pub fn name(self) -> &'static str {
        match self {
            Device::Unknown => "unknown",
            Device::Phone => "phone",
            Device::Tablet => "tablet",
            Device::Tv => "tv",
            Device::Desktop => "desktop",
        }
    }
}

/// When and where a request was made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestContext {
    /// Unix epoch milliseconds; the server's clock when the client sent 0.
    pub time_ms: i64,
    pub locale: String,
    pub country: String,
    pub utc_offset_minutes: i32,
}

impl RequestContext {
    /// Validates the wire context; `now_ms` fills a missing time.
    pub fn from_proto(ctx: Option<&pb::RequestContext>, now_ms: i64) -> Result<Self, InvalidRequest> {
        let Some(ctx) = ctx else {
            return Ok(Self { time_ms: now_ms, ..Self::default() });
        };
        if ctx.request_time_ms < 0 {
            return Err(InvalidRequest::new("context.request_time_ms", "must be >= 0 (Unix epoch milliseconds)"));
        }
        for (field, value) in [("context.locale", &ctx.locale), ("context.country", &ctx.country)] {
            if value.len() > MAX_LOCALE_BYTES || value.chars().any(char::is_control) {
                return Err(InvalidRequest::new(
                    field,
                    format!("must be a short code (at most {MAX_LOCALE_BYTES} printable bytes)"),
                ));
            }
        }
        if ctx.utc_offset_minutes.unsigned_abs() > MAX_UTC_OFFSET_MINUTES.unsigned_abs() {
            return Err(InvalidRequest::new(
                "context.utc_offset_minutes",
                format!("{} is outside -840..=840", ctx.utc_offset_minutes),
            ));
        }
        Ok(Self {
            time_ms: if ctx.request_time_ms == 0 { now_ms } else { ctx.request_time_ms },
            locale: ctx.locale.clone(),
            country: ctx.country.clone(),
            utc_offset_minutes: ctx.utc_offset_minutes,
        })
    }

    /// Local hour of day (0..24) at the client.
    pub fn local_hour(&self) -> u32 {
        let local_ms = self.time_ms + i64::from(self.utc_offset_minutes) * 60_000;
        let hour = local_ms.rem_euclid(86_400_000) / 3_600_000;
        u32::try_from(hour).unwrap_or(0)
    }
}

/// One watched video of a user's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub video: VideoId,
    pub watched_at_ms: i64,
    pub seconds_watched: f32,
}

/// A user's recent history, oldest first, at most [`MAX_HISTORY`] entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History(pub Vec<HistoryEntry>);

impl History {
    /// Validates the wire history.
    pub fn from_proto(field: &str, items: &[pb::HistoryItem]) -> Result<Self, InvalidRequest> {
        if items.len() > MAX_HISTORY {
            return Err(InvalidRequest::new(
                field,
                format!("has {} items; send at most the {MAX_HISTORY} most recent", items.len()),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = |name: &str| format!("{field}[{i}].{name}");
            let video = VideoId::parse(&at("video_id"), &item.video_id)?;
            if !item.seconds_watched.is_finite() || item.seconds_watched < 0.0 {
                return Err(InvalidRequest::new(at("seconds_watched"), "must be a finite number >= 0"));
            }
            if item.watched_at_ms < 0 {
                return Err(InvalidRequest::new(at("watched_at_ms"), "must be >= 0 (Unix epoch milliseconds)"));
            }
            out.push(HistoryEntry { video, watched_at_ms: item.watched_at_ms, seconds_watched: item.seconds_watched });
        }
        Ok(Self(out))
    }

    /// The wire form (oldest first), for a request to another role.
    pub fn to_proto(&self) -> Vec<pb::HistoryItem> {
        self.0
            .iter()
            .map(|h| pb::HistoryItem {
                video_id: h.video.as_str().to_owned(),
                watched_at_ms: h.watched_at_ms,
                seconds_watched: h.seconds_watched,
            })
            .collect()
    }

    /// Whether `video` is in the history.
    pub fn contains(&self, video: &VideoId) -> bool {
        self.0.iter().any(|e| &e.video == video)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Everything a generator, the ranker and the recommender need to know about
/// who asks and what they are watching.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub request_id: RequestId,
    pub user: UserId,
    pub query_video: VideoId,
    pub device: Device,
    pub history: History,
    pub context: RequestContext,
}

/// Checks a requested count against `1..=max`.
pub fn check_count(field: &str, value: u32, max: u32) -> Result<usize, InvalidRequest> {
    if value == 0 || value > max {
        return Err(InvalidRequest::new(field, format!("is {value}; it must be between 1 and {max}")));
    }
    Ok(value as usize)
}

impl Query {
    /// Validates the fields every request type shares, naming them as in the `.proto`.
    fn parse(
        request_id: &str,
        user: &str,
        query_video: &str,
        device: i32,
        history: &[pb::HistoryItem],
        context: Option<&pb::RequestContext>,
        now_ms: i64,
    ) -> Result<Self, InvalidRequest> {
        Ok(Self {
            request_id: RequestId::parse_or_generate("request_id", request_id)?,
            user: UserId::parse("user_id", user)?,
            query_video: VideoId::parse("query_video_id", query_video)?,
            device: Device::from_proto("device", device)?,
            history: History::from_proto("recent_history", history)?,
            context: RequestContext::from_proto(context, now_ms)?,
        })
    }

    /// Validates a Recommend request; returns the query and the number of
    /// results asked for (`1..=max_results`).
    pub fn from_recommend(
        req: &pb::RecommendRequest,
        max_results: u32,
        now_ms: i64,
    ) -> Result<(Self, usize), InvalidRequest> {
        let query = Self::parse(
            &req.request_id,
            &req.user_id,
            &req.query_video_id,
            req.device,
            &req.recent_history,
            req.context.as_ref(),
            now_ms,
        )?;
        let n = check_count("num_results", req.num_results, max_results)?;
        Ok((query, n))
    }

    /// Validates a Generate request; returns the query and the candidate
    /// budget (`1..=max_candidates`). The user id may be empty for a
    /// generator (cold, anonymous traffic); it then reads as `anonymous`.
    pub fn from_generate(
        req: &pb::GenerateRequest,
        max_candidates: u32,
        now_ms: i64,
    ) -> Result<(Self, usize), InvalidRequest> {
        let user = if req.user_id.is_empty() { "anonymous" } else { req.user_id.as_str() };
        let query = Self::parse(
            &req.request_id,
            user,
            &req.query_video_id,
            req.device,
            &req.recent_history,
            req.context.as_ref(),
            now_ms,
        )?;
        let n = check_count("max_candidates", req.max_candidates, max_candidates)?;
        Ok((query, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recommend() -> pb::RecommendRequest {
        pb::RecommendRequest {
            user_id: "u1".into(),
            query_video_id: "v1".into(),
            num_results: 10,
            device: pb::DeviceType::Tv as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_recommend_request_converts() {
        let (q, n) = Query::from_recommend(&recommend(), 100, 1_000).unwrap();
        assert_eq!(n, 10);
        assert_eq!(q.device, Device::Tv);
        assert_eq!(q.context.time_ms, 1_000, "missing time is the server's clock");
        assert!(!q.request_id.as_str().is_empty());
    }

    #[test]
    fn malformed_recommend_requests_name_the_field() {
        type Mutation = Box<dyn Fn(&mut pb::RecommendRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("user_id", Box::new(|r| r.user_id.clear())),
            ("query_video_id", Box::new(|r| r.query_video_id.clear())),
            ("num_results", Box::new(|r| r.num_results = 0)),
            ("num_results", Box::new(|r| r.num_results = 101)),
            ("device", Box::new(|r| r.device = 99)),
            (
                "recent_history[0].seconds_watched",
                Box::new(|r| {
                    r.recent_history.push(pb::HistoryItem {
                        video_id: "v".into(),
                        seconds_watched: -1.0,
                        ..Default::default()
                    })
                }),
            ),
            (
                "context.utc_offset_minutes",
                Box::new(|r| r.context = Some(pb::RequestContext { utc_offset_minutes: 5_000, ..Default::default() })),
            ),
            (
                // `abs()` of i32::MIN wraps to itself, which once let this through.
                "context.utc_offset_minutes",
                Box::new(|r| {
                    r.context = Some(pb::RequestContext { utc_offset_minutes: i32::MIN, ..Default::default() })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut req = recommend();
            mutate(&mut req);
            let err = Query::from_recommend(&req, 100, 0).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(field));
        }
    }

    #[test]
    fn local_hour_applies_the_offset() {
        let ctx = RequestContext { time_ms: 23 * 3_600_000, utc_offset_minutes: 120, ..Default::default() };
        assert_eq!(ctx.local_hour(), 1);
        let ctx = RequestContext { time_ms: 0, utc_offset_minutes: -60, ..Default::default() };
        assert_eq!(ctx.local_hour(), 23);
    }
}

/// A candidate sent to the ranker, with the generators that proposed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RankCandidate {
    pub video: VideoId,
    /// Every generator that proposed it, with its score and rank.
    pub sources: Vec<crate::event::Vote>,
}

impl Query {
    /// Validates a Rank request; returns the query and its candidates
    /// (`1..=max_candidates` of them).
    pub fn from_rank(
        req: &pb::RankRequest,
        max_candidates: u32,
        now_ms: i64,
    ) -> Result<(Self, Vec<RankCandidate>), InvalidRequest> {
        let query = Self::parse(
            &req.request_id,
            &req.user_id,
            &req.query_video_id,
            req.device,
            &req.recent_history,
            req.context.as_ref(),
            now_ms,
        )?;
        let n = u32::try_from(req.candidates.len()).unwrap_or(u32::MAX);
        check_count("candidates (count)", n, max_candidates)?;
        let mut candidates = Vec::with_capacity(req.candidates.len());
        for (i, c) in req.candidates.iter().enumerate() {
            let video = VideoId::parse(&format!("candidates[{i}].video_id"), &c.video_id)?;
            let mut sources = Vec::with_capacity(c.sources.len());
            for (j, p) in c.sources.iter().enumerate() {
                let source = pb::CandidateSource::try_from(p.source).map_err(|_| {
                    InvalidRequest::new(format!("candidates[{i}].sources[{j}].source"), "unknown candidate source")
                })?;
                if !p.score.is_finite() {
                    return Err(InvalidRequest::new(format!("candidates[{i}].sources[{j}].score"), "must be finite"));
                }
                sources.push(crate::event::Vote::new(source, p.score, p.rank));
            }
            candidates.push(RankCandidate { video, sources });
        }
        Ok((query, candidates))
    }
}
