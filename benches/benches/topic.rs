//! The topic generator: `generate` latency (100 candidates) at the `default`
//! preset (20k videos, 60 topics) and at the `large` preset's catalogue (1M
//! videos, 1,000 topics: the biggest topic holds ~150k videos), after
//! observing a synthetic log (500k / 3M events) streamed straight into
//! `observe` in 10k-event batches. Queries are held-out requests of the same
//! log: the query video, the user's last 20 watches, device and time.
//! Setup timings (world build, log + observe, prior re-sort, catalogue swap)
//! are printed once per preset.

use std::{hint::black_box, sync::Arc, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use watchnext_core::{generator::Generator, request::Query};
use watchnext_topic::{TopicConfig, TopicGenerator};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

use watchnext_benches::feed::{BATCH, Feed, MAX};

/// A generator that has observed `events` events of `config`'s world, and queries.
fn setup(name: &str, config: &WorldConfig, events: u64) -> (TopicGenerator, Vec<Query>) {
    let started = Instant::now();
    let world = World::build(config).expect("world");
    let built = started.elapsed();
    let catalog = Arc::new(world.catalog().clone());
    let t = Instant::now();
    let generator =
        TopicGenerator::with_catalog(TopicConfig { prior_refresh_ms: 0, ..TopicConfig::default() }, &catalog)
            .expect("config");
    let indexed = t.elapsed();
    let t = Instant::now();
    let mut feed = Feed {
        world: &world,
        generator: &generator,
        batch: Vec::with_capacity(BATCH),
        history: vec![Vec::new(); world.num_users() as usize],
        pushed: 0,
        tail_from: events * 9 / 10,
        queries: Vec::new(),
    };
    generate_logs(&world, LoggingPolicy::default(), events, &mut feed, false).expect("log");
    generator.observe(&feed.batch);
    let queries = std::mem::take(&mut feed.queries);
    let fed = t.elapsed();
    let t = Instant::now();
    generator.refresh_prior();
    let sorted = t.elapsed();
    let t = Instant::now();
    generator.update_catalog(&catalog);
    let swapped = t.elapsed();
    let status = generator.status();
    eprintln!(
        "topic/{name}: {} videos, {} topics; world built in {built:.1?}, first index {indexed:.1?}, \
         {events} events logged + observed in {fed:.1?} ({} applied), prior re-sort {sorted:.1?}, \
         catalogue swap {swapped:.1?}, total {:.1?}; {} queries",
        status.videos,
        status.topics,
        status.events_applied,
        started.elapsed(),
        queries.len()
    );
    (generator, queries)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_generate");
    group.throughput(Throughput::Elements(1));
    for (name, config, events) in
        [("default_20k", WorldConfig::default(), 500_000), ("large_1m", WorldConfig::large(), 3_000_000)]
    {
        let (generator, queries) = setup(name, &config, events);
        let sizes: Vec<usize> = queries.iter().map(|q| generator.generate(q, MAX).candidates.len()).collect();
        eprintln!(
            "topic/{name}: mean answer {:.1} candidates of {MAX}",
            sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
        );
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(generator.generate(black_box(&queries[i]), MAX))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
