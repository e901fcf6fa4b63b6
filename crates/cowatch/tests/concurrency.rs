//! Requests served from several threads while others ingest: no panic, no
//! deadlock, and every answer is well formed.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use common::*;
use watchnext_core::generator::Generator;
use watchnext_cowatch::CowatchConfig;

#[test]
fn generate_from_several_threads_while_others_observe() {
    // A small budget and few users so that eviction sweeps run during the test too.
    let config = CowatchConfig {
        memory_budget_bytes: 256 * 1024,
        max_users: 300,
        max_neighbours: 16,
        ..CowatchConfig::default()
    };
    let g = Arc::new(generator(config));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));

    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let g = Arc::clone(&g);
            thread::spawn(move || {
                let mut t = T0;
                for batch in 0..150u64 {
                    let mut events = Vec::with_capacity(400);
                    for i in 0..100u64 {
                        let user = format!("w{w}-u{}", (batch * 7 + i) % 500);
                        let topic = (batch + i) % 40;
                        for step in 0..4u64 {
                            t += 500;
                            let video = format!("v{}", topic * 50 + (i * 13 + step * 7 + batch) % 50);
                            events.push(watch(&user, &video, t));
                        }
                    }
                    g.observe(&events);
                }
            })
        })
        .collect();

    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let (g, stop, answered) = (Arc::clone(&g), Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let video = format!("v{}", (i * 31) % 2_000);
                    let history = [format!("v{}", (i * 17) % 2_000)];
                    let q = query_with_history(&video, &[history[0].as_str()]);
                    let out = g.generate(&q, 25);
                    assert!(out.candidates.len() <= 25);
                    for c in &out.candidates {
                        assert_ne!(c.video.as_str(), video, "never the query video");
                        // A score is the sum of s(q, b) ≤ 1 weighted over the query videos:
                        // the query video (1) and the one history video (blend_weight 0.5).
                        assert!(c.score.is_finite() && c.score > 0.0 && c.score <= 1.5 + 1e-6, "{}", c.score);
                    }
                    assert!(out.candidates.windows(2).all(|w| w[0].score >= w[1].score));
                    let mut seen: Vec<_> = out.candidates.iter().map(|c| c.video.as_str()).collect();
                    seen.sort_unstable();
                    seen.dedup();
                    assert_eq!(seen.len(), out.candidates.len(), "no duplicates");
                    if !out.candidates.is_empty() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = g.memory();
                }
            })
        })
        .collect();

    for w in writers {
        w.join().expect("writer panicked");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader panicked");
    }
    let stats = g.stats();
    assert_eq!(stats.events_observed, 2 * 150 * 400);
    assert!(stats.pair_updates > 100_000, "{stats:?}");
    assert!(stats.memory.table_bytes <= 256 * 1024, "{stats:?}");
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert!(g.neighbour_lists().0 <= 16);
    // Still answers sensibly after the storm.
    let answering = (0..2_000).filter(|v| !ids(&g, &format!("v{v}"), 10).is_empty()).count();
    assert!(answering > 100, "{answering}");
}
