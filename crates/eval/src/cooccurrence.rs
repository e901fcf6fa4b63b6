//! The textbook item co-occurrence baseline, the bar the co-watch generator
//! must clear under the same protocol ([`crate::generators::evaluate`]
//! reports it as "item co-occurrence baseline").
//!
//! - **Counting.** Each user's watches, in log order: a watch pairs with the
//!   user's previous `window - 1` watches (so every pair of watches within
//!   `window` consecutive watches counts), no time limit, no weights; each
//!   pair adds 1 to count(i, j) and to count(j, i). A re-watch of a video
//!   still in the window does not pair with itself. pop(i) is the number of
//!   watches of i.
//! - **Score.** score(i, j) = count(i, j) / √(pop(i) · pop(j)).
//! - **Request.** The queries are the query video and the most recent
//!   distinct videos of the history, `queries` in all; a candidate's score
//!   is the sum of its scores over the queries; the query video and the
//!   history are excluded.
//!
//! It learns in [`Generator::observe`] from watch events like the real
//! generators, so one harness feeds both. Not built for serving: one lock
//! around plain hash maps, every neighbour kept.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{PoisonError, RwLock},
};

use watchnext_core::{
    event::{Event, EventKind, Source},
    generator::{Candidate, Generated, Generator},
    ids::VideoId,
    request::Query,
};

/// The baseline's two parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooccurrenceConfig {
    /// Watches pair within this many consecutive watches of a user.
    pub window: usize,
    /// Query videos per request: the query video and the most recent
    /// distinct history videos.
    pub queries: usize,
}

impl Default for CooccurrenceConfig {
    fn default() -> Self {
        Self { window: 10, queries: 5 }
    }
}

#[derive(Debug, Default)]
struct State {
    ids: HashMap<VideoId, u32>,
    names: Vec<VideoId>,
    /// pop(i): watches of i.
    pop: Vec<u64>,
    /// count(i, ·), per video.
    pairs: Vec<HashMap<u32, u32>>,
    /// Each user's last `window - 1` watches, oldest first.
    recent: HashMap<String, VecDeque<u32>>,
}

impl State {
    fn intern(&mut self, video: &VideoId) -> u32 {
        if let Some(&id) = self.ids.get(video) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 videos");
        self.ids.insert(video.clone(), id);
        self.names.push(video.clone());
        self.pop.push(0);
        self.pairs.push(HashMap::new());
        id
    }
}

/// The item co-occurrence baseline (see the module documentation).
#[derive(Debug, Default)]
pub struct CooccurrenceBaseline {
    config: CooccurrenceConfig,
    state: RwLock<State>,
}

impl CooccurrenceBaseline {
    /// An empty baseline; `window` and `queries` are at least 1.
    pub fn new(config: CooccurrenceConfig) -> Self {
        let config = CooccurrenceConfig { window: config.window.max(1), queries: config.queries.max(1) };
        Self { config, state: RwLock::default() }
    }

    /// count(a, b) (0 when either is unknown).
    pub fn count(&self, a: &str, b: &str) -> u32 {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let id = |v: &str| VideoId::parse("video", v).ok().and_then(|v| state.ids.get(&v).copied());
        match (id(a), id(b)) {
            (Some(a), Some(b)) => state.pairs[a as usize].get(&b).copied().unwrap_or(0),
            _ => 0,
        }
    }
}

impl Generator for CooccurrenceBaseline {
    /// It does co-watch's job.
    fn source(&self) -> Source {
        Source::Cowatch
    }

    fn generate(&self, query: &Query, max: usize) -> Generated {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut queries: Vec<&VideoId> = vec![&query.query_video];
        for entry in query.history.0.iter().rev() {
            if queries.len() >= self.config.queries {
                break;
            }
            if !queries.contains(&&entry.video) {
                queries.push(&entry.video);
            }
        }
        let excluded: HashSet<&VideoId> =
            query.history.0.iter().map(|h| &h.video).chain([&query.query_video]).collect();
        let mut scores: HashMap<u32, f64> = HashMap::new();
        for q in queries {
            let Some(&a) = state.ids.get(q) else { continue };
            let pop_a = state.pop[a as usize] as f64;
            for (&b, &count) in &state.pairs[a as usize] {
                if excluded.contains(&state.names[b as usize]) {
                    continue;
                }
                let pop_b = state.pop[b as usize] as f64;
                *scores.entry(b).or_default() += f64::from(count) / (pop_a * pop_b).sqrt();
            }
        }
        let mut ranked: Vec<(u32, f64)> = scores.into_iter().collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let candidates = ranked
            .into_iter()
            .take(max)
            .map(|(id, score)| Candidate { video: state.names[id as usize].clone(), score: score as f32 })
            .collect();
        Generated { candidates, note: String::new(), version: "item-cooccurrence".into() }
    }

    fn observe(&self, events: &[Event]) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let keep = self.config.window - 1;
        for e in events {
            if !matches!(e.kind, EventKind::Watch { .. }) {
                continue;
            }
            let b = state.intern(&e.video);
            state.pop[b as usize] += 1;
            let mut recent = state.recent.remove(e.user.as_str()).unwrap_or_default();
            for &a in &recent {
                if a != b {
                    *state.pairs[a as usize].entry(b).or_default() += 1;
                    *state.pairs[b as usize].entry(a).or_default() += 1;
                }
            }
            if keep > 0 {
                if recent.len() == keep {
                    recent.pop_front();
                }
                recent.push_back(b);
            }
            state.recent.insert(e.user.as_str().to_owned(), recent);
        }
    }
}

#[cfg(test)]
mod tests {
    use watchnext_core::{
        Device, RequestContext,
        ids::{RequestId, UserId},
        request::{History, HistoryEntry},
    };

    use super::*;

    fn watch(t: i64, user: &str, video: &str) -> Event {
        Event {
            timestamp_ms: t,
            request_id: String::new(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind: EventKind::Watch { seconds_watched: 10.0, video_duration_seconds: 20.0 },
        }
    }

    fn sessions(users: &[(&str, &[&str])]) -> Vec<Event> {
        let mut t = 0;
        let mut events = Vec::new();
        for (user, videos) in users {
            for v in *videos {
                t += 1;
                events.push(watch(t, user, v));
            }
        }
        events
    }

    fn query(video: &str, history: &[&str]) -> Query {
        Query {
            request_id: RequestId::parse("r", "r1").unwrap(),
            user: UserId::parse("u", "someone").unwrap(),
            query_video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            history: History(
                history
                    .iter()
                    .map(|v| HistoryEntry {
                        video: VideoId::parse("v", v).unwrap(),
                        watched_at_ms: 0,
                        seconds_watched: 1.0,
                    })
                    .collect(),
            ),
            context: RequestContext::default(),
        }
    }

    fn listed(g: &CooccurrenceBaseline, q: &Query) -> Vec<(String, f32)> {
        g.generate(q, 10).candidates.into_iter().map(|c| (c.video.as_str().to_owned(), c.score)).collect()
    }

    #[test]
    fn pairs_count_within_the_window_and_scores_are_cosines() {
        let g = CooccurrenceBaseline::new(CooccurrenceConfig { window: 3, queries: 5 });
        // u1: a b c d — within 3 consecutive watches: ab ac bc bd cd (not ad).
        // u2: a b        — ab.
        // u3: c e c      — ce; the re-watch of c pairs with e, not with itself.
        g.observe(&sessions(&[("u1", &["a", "b", "c", "d"]), ("u2", &["a", "b"]), ("u3", &["c", "e", "c"])]));
        assert_eq!(g.count("a", "b"), 2);
        assert_eq!(g.count("b", "a"), 2);
        assert_eq!(g.count("a", "d"), 0);
        assert_eq!(g.count("c", "e"), 2);
        assert_eq!(g.count("c", "c"), 0);
        // pop: a 2, b 2, c 3, d 1, e 1.
        // From a: b 2/√4 = 1, c 1/√6 ≈ 0.408.
        let got = listed(&g, &query("a", &[]));
        assert_eq!(got.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert!((got[0].1 - 1.0).abs() < 1e-6 && (got[1].1 - 1.0 / 6f32.sqrt()).abs() < 1e-6, "{got:?}");
        // From c: e 2/√3 ≈ 1.155, b 1/√6, d 1/√3 ≈ 0.577, a 1/√6.
        let got = listed(&g, &query("c", &[]));
        assert_eq!(got[0].0, "e");
        assert_eq!(got[1].0, "d");
    }

    #[test]
    fn scores_sum_over_the_query_and_recent_history_and_watched_videos_are_excluded() {
        let g = CooccurrenceBaseline::new(CooccurrenceConfig { window: 2, queries: 2 });
        // Adjacent pairs only: xp, yq ×2, yr, xr, zs.
        g.observe(&sessions(&[
            ("u1", &["x", "p"]),
            ("u2", &["y", "q"]),
            ("u3", &["y", "q"]),
            ("u4", &["y", "r"]),
            ("u5", &["x", "r"]),
            ("u6", &["z", "s"]),
        ]));
        // pop: x 2, y 3, z 1, p 1, q 2, r 2.
        // Query x alone: p 1/√2 ≈ 0.707, r 1/√4 = 0.5.
        let alone = listed(&g, &query("x", &[]));
        assert_eq!(alone.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["p", "r"]);
        // Query x with history [z, y] (y most recent): queries x and y only
        // (queries = 2), so s is not reached; r sums 0.5 + 1/√6 ≈ 0.908,
        // q gets 2/√6 ≈ 0.816, p stays 0.707.
        let q = query("x", &["z", "y", "x"]);
        let got = listed(&g, &q);
        assert_eq!(got.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["r", "q", "p"]);
        assert!((got[0].1 - (0.5 + 1.0 / 6f32.sqrt())).abs() < 1e-6, "{got:?}");
        // Watched videos never come back: with history [y, r] the queries
        // are x and r, whose partners y and x are the history and the query.
        let got = listed(&g, &query("x", &["y", "r"]));
        assert_eq!(got.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["p"]);
        assert_eq!(g.generate(&q, 1).candidates.len(), 1, "max is respected");
        assert!(g.generate(&query("unknown", &[]), 10).candidates.is_empty());
    }
}
