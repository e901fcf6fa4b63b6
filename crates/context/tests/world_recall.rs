//! Recall of the context generator on the synthetic world: learn from the first
//! 80% of a log, then ask for 50 candidates at every held-out watch that
//! followed a recommendation, and count how often the watched video is
//! among them, against a uniformly random list of 50.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use watchnext_context::{ContextConfig, ContextGenerator};
use watchnext_core::{
    History, RequestContext, RequestId, VideoId,
    event::{Event, EventKind},
    generator::Generator,
    request::{HistoryEntry, Query},
};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

const K: usize = 50;

/// One held-out next watch and the request it answered.
struct Case {
    query: Query,
    target: VideoId,
}

/// Held-out cases: watches at or after `split` that answered a request,
/// with the user's last `history_len` watches as history (targets already
/// in the history or equal to the query are skipped), every `stride`-th.
fn held_out(events: &[Event], split: usize, history_len: usize, stride: usize) -> Vec<Case> {
    let mut history: HashMap<&str, VecDeque<(&VideoId, i64)>> = HashMap::new();
    let mut query_of: HashMap<&str, &VideoId> = HashMap::new();
    let mut cases = Vec::new();
    let mut seen = 0usize;
    for (i, e) in events.iter().enumerate() {
        match &e.kind {
            EventKind::Impression(imp) => {
                if let Some(q) = &imp.query_video {
                    query_of.insert(e.request_id.as_str(), q);
                }
            }
            EventKind::Watch { seconds_watched, .. } => {
                let h = history.entry(e.user.as_str()).or_default();
                if i >= split
                    && let Some(&q) = query_of.get(e.request_id.as_str())
                    && e.video != *q
                    && !h.iter().any(|(v, _)| **v == e.video)
                {
                    seen += 1;
                    if seen.is_multiple_of(stride) {
                        let entries = h
                            .iter()
                            .map(|&(v, t)| HistoryEntry { video: v.clone(), watched_at_ms: t, seconds_watched: 1.0 })
                            .collect();
                        cases.push(Case {
                            query: Query {
                                request_id: RequestId::parse("r", &e.request_id).expect("valid test input"),
                                user: e.user.clone(),
                                query_video: q.clone(),
                                device: e.device,
                                history: History(entries),
                                context: RequestContext { time_ms: e.timestamp_ms, ..RequestContext::default() },
                            },
                            target: e.video.clone(),
                        });
                    }
                }
                let _ = seconds_watched;
                h.push_back((&e.video, e.timestamp_ms));
                if h.len() > history_len {
                    h.pop_front();
                }
            }
            _ => {}
        }
    }
    cases
}

/// (recall@K of `g`, expected recall@K of a uniformly random list).
fn recall(g: &dyn Generator, cases: &[Case], videos: usize) -> (f64, f64) {
    let mut hits = 0usize;
    let mut random = 0.0;
    for case in cases {
        let out = g.generate(&case.query, K);
        assert!(out.candidates.len() <= K);
        if out.candidates.iter().any(|c| c.video == case.target) {
            hits += 1;
        }
        let excluded: HashSet<_> = case.query.history.0.iter().map(|h| &h.video).collect();
        random += K as f64 / (videos - 1 - excluded.len()) as f64;
    }
    (hits as f64 / cases.len() as f64, random / cases.len() as f64)
}

#[test]
fn context_recall_at_50_beats_random_on_the_toy_world() {
    let world = World::build(&WorldConfig::toy()).unwrap();
    let mut events: Vec<Event> = Vec::new();
    generate_logs(&world, LoggingPolicy::default(), 200_000, &mut events, false).unwrap();
    let split = events.len() * 4 / 5;
    let cases = held_out(&events, split, 20, 3);
    assert!(cases.len() > 500, "{} cases", cases.len());

    let config = ContextConfig { publish_interval_ms: 0, ..ContextConfig::default() };
    let g = ContextGenerator::with_catalog(config, &Arc::new(world.catalog().clone())).unwrap();
    for chunk in events[..split].chunks(1_000) {
        g.observe(chunk);
    }
    let n = world.catalog().len();
    let (warm, random) = recall(&g, &cases, n);

    // Cold start: a brand-new user (no history) on a video the catalogue does not know yet.
    let cold_cases: Vec<Case> = cases
        .iter()
        .map(|c| Case {
            query: Query {
                query_video: VideoId::parse("q", "brand-new-upload").unwrap(),
                history: History::default(),
                ..c.query.clone()
            },
            target: c.target.clone(),
        })
        .collect();
    let (cold, cold_random) = recall(&g, &cold_cases, n);
    assert!(g.generate(&cold_cases[0].query, K).note.contains("fell back to trending"));

    // Time of day and device matter: the same requests at the opposite hour read the wrong cells.
    let shifted: Vec<Case> = cases
        .iter()
        .map(|c| Case {
            query: Query {
                context: RequestContext {
                    time_ms: c.query.context.time_ms + 12 * 3_600_000,
                    ..c.query.context.clone()
                },
                ..c.query.clone()
            },
            target: c.target.clone(),
        })
        .collect();
    let (shifted, _) = recall(&g, &shifted, n);
    println!(
        "toy world, {} held-out next watches: context recall@{K} = {warm:.3} (cold user on an unknown video: \
         {cold:.3}; request clock shifted 12 h: {shifted:.3}), random = {random:.3} (cold: {cold_random:.3})",
        cases.len()
    );
    assert!(warm > 3.0 * random && warm > random + 0.1, "context {warm:.3} vs random {random:.3}");
    assert!(cold > 3.0 * cold_random && cold > cold_random + 0.1, "cold {cold:.3} vs random {cold_random:.3}");
}
