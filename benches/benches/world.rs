//! The synthetic world: how fast the `default` preset (20k videos, 5k users,
//! what the demo uses) is built, and how many events per second its log
//! generator writes, into a counting sink and into a `Vec` (which adds the
//! cost of keeping every event).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use watchnext_core::event::Event;
use watchnext_world::{CountingSink, LoggingPolicy, World, WorldConfig, generate_logs};

const EVENTS: u64 = 200_000;

fn bench(c: &mut Criterion) {
    let config = WorldConfig::default();
    let world = World::build(&config).expect("world");
    let policy = LoggingPolicy::PopularityNoise { noise: 1.0 };

    let mut group = c.benchmark_group("world");
    group.sample_size(10);
    group.bench_function("build_default", |b| b.iter(|| World::build(std::hint::black_box(&config)).expect("world")));

    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("generate_default_counting", |b| {
        b.iter(|| {
            let mut sink = CountingSink::default();
            generate_logs(&world, policy, EVENTS, &mut sink, false).expect("log");
            sink.events
        })
    });
    group.bench_function("generate_default_vec", |b| {
        b.iter(|| {
            let mut sink: Vec<Event> = Vec::with_capacity(EVENTS as usize);
            generate_logs(&world, policy, EVENTS, &mut sink, false).expect("log");
            sink
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
