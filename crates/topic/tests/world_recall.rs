//! Recall of the topic generator on the synthetic world: learn from the first
//! 80% of a log, then ask for 50 candidates at every held-out watch that
//! followed a recommendation, and count how often the watched video is
//! among them, against a uniformly random list of 50.

use std::{collections::HashSet, sync::Arc};

use watchnext_core::{event::Event, generator::Generator};
use watchnext_topic::{TopicConfig, TopicGenerator};
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

fn learn(config: TopicConfig, world: &World, events: &[Event]) -> TopicGenerator {
    let g = TopicGenerator::with_catalog(config, &Arc::new(world.catalog().clone())).expect("valid test input");
    for chunk in events.chunks(1_000) {
        g.observe(chunk);
    }
    g.refresh_prior();
    g
}

#[test]
fn topic_recall_at_50_beats_random_on_the_toy_world() {
    let world = World::build(&WorldConfig::toy()).unwrap();
    let mut events: Vec<Event> = Vec::new();
    generate_logs(&world, LoggingPolicy::default(), 200_000, &mut events, false).unwrap();
    let split = events.len() * 4 / 5;
    let cases = next_watches(&events, split, 20, 3);
    assert!(cases.len() > 500, "{} cases", cases.len());

    let config = TopicConfig { prior_refresh_ms: 0, ..TopicConfig::default() };
    let g = learn(config.clone(), &world, &events[..split]);
    let n = world.catalog().len();
    let (topic, random) = recall(&g, &cases, n);

    // The same generator that learned nothing: how much the estimators add.
    let blind = learn(config, &world, &[]);
    let (blind, _) = recall(&blind, &cases, n);
    println!(
        "toy world, {} held-out next watches: topic recall@{K} = {topic:.3} (no feedback: {blind:.3}), random = {random:.3}",
        cases.len()
    );
    assert!(topic > 3.0 * random && topic > random + 0.15, "topic {topic:.3} vs random {random:.3}");
    assert!(topic > blind, "learning from feedback helps: {topic:.3} vs {blind:.3}");
}

#[test]
fn the_bounded_scan_keeps_the_exhaustive_answer_on_the_default_world() {
    // 20k videos, 60 topics: a topic holds ~500-3,000 videos; a request reads 3,000 postings.
    let world = World::build(&WorldConfig::default()).unwrap();
    let mut events: Vec<Event> = Vec::new();
    generate_logs(&world, LoggingPolicy::default(), 300_000, &mut events, false).unwrap();
    let split = events.len() * 4 / 5;
    let cases = next_watches(&events, split, 20, 10);
    assert!(cases.len() > 200, "{} cases", cases.len());

    let bounded = learn(TopicConfig { prior_refresh_ms: 0, ..TopicConfig::default() }, &world, &events[..split]);
    let exhaustive = learn(
        TopicConfig {
            prior_refresh_ms: 0,
            scan_budget: 1_000_000,
            min_scan_per_topic: 1_000_000,
            ..TopicConfig::default()
        },
        &world,
        &events[..split],
    );
    let n = world.catalog().len();
    let (b, random) = recall(&bounded, &cases, n);
    let (e, _) = recall(&exhaustive, &cases, n);
    let mut overlap = 0usize;
    for case in &cases {
        let a: HashSet<_> = bounded.generate(&case.query, K).candidates.into_iter().map(|c| c.video).collect();
        let x = exhaustive.generate(&case.query, K).candidates;
        overlap += x.iter().filter(|c| a.contains(&c.video)).count();
    }
    let agreement = overlap as f64 / (cases.len() * K) as f64;
    println!(
        "default world, {} cases: recall@{K} bounded = {b:.3}, exhaustive = {e:.3}, random = {random:.4}; \
         top-{K} agreement = {agreement:.3}",
        cases.len()
    );
    assert!(agreement > 0.8, "the bounded scan finds most of the exhaustive top-{K}: {agreement:.3}");
    assert!(b > 0.9 * e, "and nearly its recall: {b:.3} vs {e:.3}");
    assert!(b > 10.0 * random);
}
