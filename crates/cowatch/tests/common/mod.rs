//! Helpers shared by the integration tests.
#![allow(dead_code)]

use watchnext_core::{
    Device, RequestContext,
    event::{Event, EventKind},
    ids::{RequestId, UserId, VideoId},
    request::{History, HistoryEntry, Query},
};
use watchnext_cowatch::{CowatchConfig, CowatchGenerator};

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
/// 2024-01-01 UTC.
pub const T0: i64 = 1_704_067_200_000;

pub fn watch(user: &str, video: &str, t_ms: i64) -> Event {
    watch_fraction(user, video, t_ms, 1.0)
}

pub fn watch_fraction(user: &str, video: &str, t_ms: i64, fraction: f32) -> Event {
    Event {
        timestamp_ms: t_ms,
        request_id: String::new(),
        user: UserId::parse("user", user).expect("valid id"),
        video: VideoId::parse("video", video).expect("valid id"),
        device: Device::Phone,
        kind: EventKind::Watch { seconds_watched: 100.0 * fraction, video_duration_seconds: 100.0 },
    }
}

/// One user's session: the videos watched a minute apart from `t_ms`.
pub fn session(user: &str, videos: &[&str], t_ms: i64) -> Vec<Event> {
    videos.iter().enumerate().map(|(i, v)| watch(user, v, t_ms + i as i64 * MINUTE)).collect()
}

pub fn query(video: &str) -> Query {
    query_with_history(video, &[])
}

pub fn query_with_history(video: &str, history: &[&str]) -> Query {
    Query {
        request_id: RequestId::parse("request_id", "r1").expect("valid id"),
        user: UserId::parse("user_id", "someone").expect("valid id"),
        query_video: VideoId::parse("query_video_id", video).expect("valid id"),
        device: Device::Phone,
        history: History(
            history
                .iter()
                .map(|v| HistoryEntry {
                    video: VideoId::parse("v", v).expect("valid id"),
                    watched_at_ms: 0,
                    seconds_watched: 1.0,
                })
                .collect(),
        ),
        context: RequestContext::default(),
    }
}

pub fn generator(config: CowatchConfig) -> CowatchGenerator {
    CowatchGenerator::new(config).expect("valid config")
}

/// The candidate ids of `video`, best first.
pub fn ids(g: &CowatchGenerator, video: &str, max: usize) -> Vec<String> {
    use watchnext_core::generator::Generator;
    g.generate(&query(video), max).candidates.iter().map(|c| c.video.as_str().to_owned()).collect()
}
