//! Recall of the context generator on the synthetic world: learn from the first
//! 80% of a log, then ask for 50 candidates at every held-out watch that
//! followed a recommendation, and count how often the watched video is
//! among them, against a uniformly random list of 50.

use std::sync::Arc;

use watchnext_context::{ContextConfig, ContextGenerator};
use watchnext_core::{History, RequestContext, VideoId, event::Event, generator::Generator, request::Query};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

const K: usize = 50;

use watchnext_eval::holdout::{NextWatch as Case, next_watches};

/// (recall@K of `g`, expected recall@K of a uniformly random list); every
/// answer must respect the K bound.
fn recall(g: &dyn Generator, cases: &[Case], videos: usize) -> (f64, f64) {
    let r = watchnext_eval::holdout::recall_vs_random(g, cases, K, videos);
    assert_eq!(r.oversized, 0, "answers longer than K");
    (r.recall, r.random)
}

#[test]
fn context_recall_at_50_beats_random_on_the_toy_world() {
    let world = World::build(&WorldConfig::toy()).unwrap();
    let mut events: Vec<Event> = Vec::new();
    generate_logs(&world, LoggingPolicy::default(), 200_000, &mut events, false).unwrap();
    let split = events.len() * 4 / 5;
    let cases = next_watches(&events, split, 20, 3);
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
