//! The context generator: `generate` latency (100 candidates) at the
//! `default` preset (20k videos) and at the `large` preset's catalogue (1M
//! videos), after observing a synthetic log (500k / 3M events) streamed
//! straight into `observe` in 10k-event batches; then the same for a cold
//! request (unknown query video, no history: trending only). Queries are
//! held-out requests of the same log: the query video, the user's last 20
//! watches, device and time. Setup timings are printed once per preset.

use std::{hint::black_box, sync::Arc, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use watchnext_context::{ContextConfig, ContextGenerator};
use watchnext_core::{History, VideoId, generator::Generator, request::Query};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

use watchnext_benches::feed::{BATCH, Feed, MAX};

/// A generator that has observed `events` events of `config`'s world, and queries.
fn setup(name: &str, config: &WorldConfig, events: u64) -> (ContextGenerator, Vec<Query>) {
    let started = Instant::now();
    let world = World::build(config).expect("world");
    let built = started.elapsed();
    let catalog = Arc::new(world.catalog().clone());
    let t = Instant::now();
    let generator = ContextGenerator::with_catalog(ContextConfig::default(), &catalog).expect("config");
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
    generator.publish();
    let queries = std::mem::take(&mut feed.queries);
    let fed = t.elapsed();
    let t = Instant::now();
    generator.update_catalog(&catalog);
    let swapped = t.elapsed();
    let status = generator.status();
    eprintln!(
        "context/{name}: {} videos; world built in {built:.1?}, first index {indexed:.1?}, {events} events logged \
         + observed in {fed:.1?} ({} counted), catalogue swap {swapped:.1?}, total {:.1?}; {} queries",
        status.videos,
        status.events_counted,
        started.elapsed(),
        queries.len()
    );
    (generator, queries)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("context_generate");
    group.throughput(Throughput::Elements(1));
    for (name, config, events) in
        [("default_20k", WorldConfig::default(), 500_000), ("large_1m", WorldConfig::large(), 3_000_000)]
    {
        let (generator, queries) = setup(name, &config, events);
        let cold: Vec<Query> = queries
            .iter()
            .map(|q| Query {
                query_video: VideoId::parse("query_video_id", "brand-new-upload").expect("valid id"),
                history: History::default(),
                ..q.clone()
            })
            .collect();
        let sizes: Vec<usize> = queries.iter().map(|q| generator.generate(q, MAX).candidates.len()).collect();
        eprintln!(
            "context/{name}: mean answer {:.1} candidates of {MAX}",
            sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
        );
        for (kind, queries) in [("", &queries), ("_cold", &cold)] {
            let mut i = 0;
            group.bench_function(format!("{name}{kind}"), |b| {
                b.iter(|| {
                    i = (i + 1) % queries.len();
                    black_box(generator.generate(black_box(&queries[i]), MAX))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
