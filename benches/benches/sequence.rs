//! The sequence generator: `generate` latency (100 candidates) — encoding
//! the history with ONNX Runtime, searching the index, filtering.
//!
//! - `default_20k/<index>`: a model trained (2 epochs) on the `default`
//!   world's 500k-event log, served with `hnsw_rs` (the default) and with
//!   `FlatHnsw`; queries are the last 20 watches of 2,000 users.
//! - `large_1m/flat_hnsw`: a vocabulary of the `large` preset's 1M videos
//!   (an untrained network: the cost of a request does not depend on the
//!   weights), `FlatHnsw` only — building `hnsw_rs` over 1M vectors takes
//!   minutes (see the HNSW section of BENCHMARKS.md).
//!
//! Set-up timings (training, model load, index build, index memory) are
//! printed once per case. `SEQUENCE_BENCH_1M=0` skips the 1M case;
//! `SEQUENCE_BENCH_1M_HNSW_RS=1` adds `hnsw_rs` (the default) at 1M, whose
//! build takes several minutes here.

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use watchnext_core::{
    Device, History, RequestContext, RequestId, UserId, VideoId, event::Event, generator::Generator,
    request::HistoryEntry, request::Query,
};
use watchnext_sequence::{SequenceConfig, SequenceGenerator};
use watchnext_trainer::sequence::{
    SequenceNet, SequenceTrainerConfig, Sequences, train_sequence, write_sequence_model,
};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

const MAX: usize = 100;
const HISTORY: usize = 20;
const QUERIES: usize = 2_000;

fn query(user: &str, videos: &[&VideoId]) -> Query {
    let (last, earlier) = videos.split_last().expect("a watch");
    Query {
        request_id: RequestId::parse("request_id", "bench").expect("valid id"),
        user: UserId::parse("user_id", user).expect("valid id"),
        query_video: (*last).clone(),
        device: Device::Phone,
        history: History(
            earlier
                .iter()
                .map(|v| HistoryEntry { video: (*v).clone(), watched_at_ms: 0, seconds_watched: 60.0 })
                .collect(),
        ),
        context: RequestContext::default(),
    }
}

fn generator(index: &str, ef_construction: usize, dir: &std::path::Path, name: &str) -> SequenceGenerator {
    let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())
        .expect("ONNX Runtime (run scripts/setup.sh)");
    let config = SequenceConfig { index: index.into(), ef_construction, ..SequenceConfig::default() };
    let g = SequenceGenerator::new(config, runtime, watchnext_onnx::SessionOptions::default()).expect("config");
    let r = g.load_dir(dir).expect("model loads");
    eprintln!(
        "sequence/{name}/{index}: {} videos, model load {:.2}s, index build {:.1}s, index {:.0} MiB",
        r.videos,
        r.load_seconds,
        r.index_seconds,
        r.index_bytes as f64 / (1 << 20) as f64
    );
    g
}

fn run(c: &mut Criterion, name: &str, g: &SequenceGenerator, queries: &[Query]) {
    let sizes: Vec<usize> = queries.iter().map(|q| g.generate(q, MAX).candidates.len()).collect();
    eprintln!(
        "sequence/{name}: mean answer {:.1} candidates of {MAX}",
        sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
    );
    let mut group = c.benchmark_group("sequence_generate");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(g.generate(&queries[i], MAX))
        });
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let scratch = tempfile::tempdir().expect("scratch folder");

    // A model trained on the default world.
    let started = Instant::now();
    let world = World::build(&WorldConfig::default()).expect("world");
    let mut events: Vec<Event> = Vec::new();
    generate_logs(&world, LoggingPolicy::default(), 500_000, &mut events, false).expect("log");
    let config = SequenceTrainerConfig { max_epochs: 2, ..SequenceTrainerConfig::default() };
    let data = Sequences::from_events(&events, &config);
    let (net, report) = train_sequence(&data, &config, false).expect("training");
    let dir = scratch.path().join("default");
    write_sequence_model(&dir, &net, &data, "default", &report).expect("write");
    eprintln!(
        "sequence/default_20k: {} watches, {} videos, {} examples, trained in {:.1?} (validation HR@{:?} {:?})",
        data.watches,
        data.videos.len(),
        data.examples.len(),
        started.elapsed(),
        report.ks,
        report.epochs.last().map(|e| e.validation_hit.clone())
    );
    let queries: Vec<Query> = data
        .users
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() >= 2)
        .take(QUERIES)
        .map(|(u, s)| {
            let last: Vec<&VideoId> =
                s[s.len().saturating_sub(HISTORY)..].iter().map(|&r| &data.videos[r as usize]).collect();
            query(&format!("bench-user-{u}"), &last)
        })
        .collect();
    for index in ["hnsw_rs", "flat_hnsw"] {
        let g = generator(index, 200, &dir, "default_20k");
        run(c, &format!("default_20k/{index}"), &g, &queries);
        if index == "flat_hnsw" {
            // Where the time goes: the encoder alone (one history, ONNX Runtime).
            let model = g.current().expect("a model");
            let l = model.history_len;
            let inputs: Vec<Vec<i64>> = data
                .users
                .iter()
                .take(QUERIES)
                .map(|s| {
                    let h = &s[s.len().saturating_sub(HISTORY)..];
                    let mut row = vec![0i64; l - h.len().min(l)];
                    row.extend(h.iter().map(|&r| i64::from(r) + 1));
                    row
                })
                .collect();
            let mut group = c.benchmark_group("sequence_generate");
            let mut i = 0;
            group.bench_function("default_20k/encoder_only", |b| {
                b.iter(|| {
                    i = (i + 1) % inputs.len();
                    black_box(model.encode(inputs[i].clone()).expect("encodes"))
                });
            });
            group.finish();
        }
    }
    drop((net, data, events));
    if std::env::var("SEQUENCE_BENCH_1M").is_ok_and(|v| v == "0") {
        return; // the 1M-video case takes ~2 minutes to set up
    }

    // A 1M-video vocabulary.
    let large = WorldConfig::large();
    let world = World::build(&large).expect("large world");
    let mut videos: Vec<VideoId> = (0..world.num_videos()).map(|v| world.video_id(v).clone()).collect();
    videos.sort_unstable();
    let n = videos.len();
    let config = SequenceTrainerConfig::default();
    let net = SequenceNet::new(&config, n).expect("network");
    let data = Sequences { videos, ..Sequences::default() };
    let report = watchnext_trainer::sequence::SequenceReport {
        videos: n,
        users: 0,
        watches: 0,
        examples: 0,
        validation_cases: 0,
        ks: Vec::new(),
        epochs: Vec::new(),
        best_epoch: 0,
        stopped_early: false,
    };
    let dir = scratch.path().join("large");
    write_sequence_model(&dir, &net, &data, "large", &report).expect("write");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let queries: Vec<Query> = (0..QUERIES)
        .map(|u| {
            let picks: Vec<&VideoId> = (0..HISTORY).map(|_| &data.videos[rng.random_range(0..n)]).collect();
            query(&format!("bench-user-{u}"), &picks)
        })
        .collect();
    let g = generator("flat_hnsw", 100, &dir, "large_1m");
    run(c, "large_1m/flat_hnsw", &g, &queries);
    drop(g);
    if std::env::var("SEQUENCE_BENCH_1M_HNSW_RS").is_ok_and(|v| v == "1") {
        // The default index at 1M videos: minutes to build, hence opt-in.
        let g = generator("hnsw_rs", 100, &dir, "large_1m");
        run(c, "large_1m/hnsw_rs", &g, &queries);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
