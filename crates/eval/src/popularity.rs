//! The popularity baseline as a [`Generator`]: the most watched videos so far
//! (all-time watch counts of what it observed), minus the query video and
//! the request's history. The bar every recommender must clear, fed through
//! the same `observe` path as the real generators so that a point-in-time
//! replay asks it at the same moments.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use watchnext_core::{
    event::{Event, EventKind, Source},
    generator::{Candidate, Generated, Generator},
    ids::VideoId,
    request::Query,
};

#[derive(Debug, Default)]
struct State {
    counts: HashMap<VideoId, u64>,
    /// Videos by count (best first, ties by id); rebuilt when stale.
    ranked: Vec<(VideoId, u64)>,
    stale: bool,
}

/// Most watched first.
#[derive(Debug, Default)]
pub struct Popularity {
    state: Mutex<State>,
}

impl Popularity {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Generator for Popularity {
    /// Reported as "unspecified": a baseline, never a serving source.
    fn source(&self) -> Source {
        Source::Unspecified
    }

    fn generate(&self, query: &Query, max: usize) -> Generated {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.stale {
            let mut ranked: Vec<(VideoId, u64)> = s.counts.iter().map(|(v, c)| (v.clone(), *c)).collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            s.ranked = ranked;
            s.stale = false;
        }
        let excluded: HashSet<&VideoId> =
            query.history.0.iter().map(|h| &h.video).chain([&query.query_video]).collect();
        let candidates = s
            .ranked
            .iter()
            .filter(|(v, _)| !excluded.contains(v))
            .take(max)
            .map(|(v, c)| Candidate { video: v.clone(), score: *c as f32 })
            .collect();
        Generated { candidates, note: String::new(), version: "popularity".into() }
    }

    fn observe(&self, events: &[Event]) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in events {
            if matches!(e.kind, EventKind::Watch { .. }) {
                *s.counts.entry(e.video.clone()).or_default() += 1;
                s.stale = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use watchnext_core::{Device, History, RequestContext, RequestId, UserId, request::HistoryEntry};

    use super::*;

    fn watch(user: &str, video: &str) -> Event {
        Event {
            timestamp_ms: 1,
            request_id: String::new(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind: EventKind::Watch { seconds_watched: 1.0, video_duration_seconds: 2.0 },
        }
    }

    #[test]
    fn proposes_the_most_watched_videos_not_yet_seen() {
        let p = Popularity::new();
        p.observe(&[watch("a", "x"), watch("b", "x"), watch("a", "y"), watch("c", "z"), watch("d", "z")]);
        p.observe(&[watch("e", "z")]);
        let v = |id: &str| VideoId::parse("v", id).unwrap();
        let query = Query {
            request_id: RequestId::parse("r", "r1").unwrap(),
            user: UserId::parse("u", "a").unwrap(),
            query_video: v("q"),
            device: Device::Phone,
            history: History(vec![HistoryEntry { video: v("x"), watched_at_ms: 1, seconds_watched: 1.0 }]),
            context: RequestContext::default(),
        };
        let got: Vec<String> = p.generate(&query, 5).candidates.iter().map(|c| c.video.as_str().to_owned()).collect();
        assert_eq!(got, ["z", "y"]);
        assert_eq!(p.generate(&query, 1).candidates.len(), 1);
    }
}
