//! The ranker and the Recommend pipeline around it, on one thread
//! (`intra_op_threads = 1`, one session, no spinning).
//!
//! - `ranker/ort_only/N`: ONNX Runtime alone on prebuilt features of N
//!   candidates (N = 100, 500, 1,000) — the achieved multiply-adds per
//!   second are printed as a share of this machine's fp32 peak, measured
//!   in the same run by [`watchnext_benches::peak`] (one multiply-add per
//!   lane counted as one operation), and the int8 dot-product peak beside
//!   it (what an INT8 graph could reach);
//! - `ranker/features_only/N`: building the N feature rows with the shared
//!   schema code;
//! - `ranker/rank/N`: `Ranker::rank` (features + run + gate statistics);
//! - `recommend/500`: a whole in-process Recommend with 500 candidates
//!   (fan-out to topic, co-watch and context generators fed with the
//!   default world's log, merge, rank, combine) — its share outside ONNX
//!   Runtime is printed.
//!
//! The graph is the default `[trainer]` MMoE (bottom 256, 8 experts
//! 128→64, 5 tasks with towers 32→1), exported untrained: the cost of a run
//! does not depend on the weights. When `.venv` has Python's `onnxruntime`
//! (`benches/python/setup.sh`), the same graph on the same rows is timed by
//! `benches/python/ranker_ort.py` in the same run.

use std::{
    hint::black_box,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use watchnext_core::{
    Device, History, RequestContext, RequestId, UserId, VideoId,
    catalog::Catalog,
    event::{Event, Source, Vote},
    features::{DENSE_LEN, FeatureSchema},
    generator::Generator,
    history::RecentWatches,
    request::{Query, RankCandidate},
};
use watchnext_ranker::{Ranker, RankerSettings};
use watchnext_recommender::{
    Recommender,
    clients::{GeneratorClient, LocalGenerator, LocalRanker},
    config::{FanoutConfig, Settings},
};
use watchnext_trainer::{config::TrainerConfig, export, model::Model};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

const SIZES: [usize; 3] = [100, 500, 1_000];

/// Multiply-adds per candidate of the serving graph of `c`.
fn macs_per_row(c: &TrainerConfig) -> f64 {
    let input = Model::input_width(c) as f64;
    let (bottom, e, t) = (c.bottom as f64, c.experts as f64, c.tasks.len() as f64);
    let mut macs = input * bottom;
    let mut width = bottom;
    for &h in &c.expert_layers {
        macs += e * width * h as f64;
        width = h as f64;
    }
    macs += bottom * t * e; // gates
    macs += t * e * width; // mixtures
    for &h in c.tower_layers.iter().chain(std::iter::once(&1)) {
        macs += t * width * h as f64;
        width = h as f64;
    }
    macs
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median wall time of `f` over `runs` runs after a few warm-up runs.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn query(catalog: &Catalog, n: usize) -> Query {
    Query {
        request_id: RequestId::parse("request_id", "bench").expect("id"),
        user: UserId::parse("user_id", "u17").expect("id"),
        query_video: VideoId::parse("v", &catalog.videos()[n].id).expect("id"),
        device: Device::Phone,
        history: History::default(),
        context: RequestContext { time_ms: 1_700_000_000_000, ..RequestContext::default() },
    }
}

fn python_side_by_side(dir: &Path, dense: &[f32], sparse: &[i64]) -> Option<String> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ranker_ort.py");
    let ok = Command::new(&python).args(["-c", "import onnxruntime, numpy"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("ranker: Python onnxruntime not in .venv (benches/python/setup.sh installs it): no side-by-side");
        return None;
    }
    std::fs::write(dir.join("dense.f32"), dense.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).ok()?;
    std::fs::write(dir.join("sparse.i64"), sparse.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).ok()?;
    let sizes: Vec<String> = SIZES.iter().map(usize::to_string).collect();
    let out = Command::new(&python).arg(&script).arg(dir).args(&sizes).output().ok()?;
    if !out.status.success() {
        eprintln!("ranker: {} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn runtime_for_calibration() -> std::sync::Arc<watchnext_onnx::OnnxRuntime> {
    watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default()).expect("ONNX Runtime")
}

fn bench(c: &mut Criterion) {
    let scratch = tempfile::tempdir().expect("scratch");
    let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())
        .expect("ONNX Runtime (run scripts/setup.sh)");

    // The default MMoE, exported untrained.
    let config = TrainerConfig::default();
    let model =
        Model::new(&config, vec![0.0; DENSE_LEN], vec![1.0; DENSE_LEN], &vec![0.1; config.tasks.len()]).expect("model");
    let bytes = export::serving_graph(&model, "bench").expect("graph");
    let manifest = export::manifest(&model, "bench", Default::default());
    let dir = scratch.path().join("models/bench");
    export::write_model_dir(&dir, &bytes, &manifest).expect("model dir");

    // The default world: catalogue for the features, log for the generators.
    let world = World::build(&WorldConfig::default()).expect("world");
    let catalog = Arc::new(world.catalog().clone());
    let schema = FeatureSchema::new(config.features).expect("schema");
    let settings = RankerSettings { sessions: 1, ..RankerSettings::default() };
    let ranker =
        Arc::new(Ranker::new(settings, schema, runtime, watchnext_onnx::SessionOptions::default()).expect("ranker"));
    ranker.update_catalog(&catalog);
    ranker.load_dir(&dir).expect("loads");
    let model = ranker.active().expect("active");

    let q = query(&catalog, 7);
    let all: Vec<RankCandidate> = catalog
        .videos()
        .iter()
        .skip(100)
        .take(1_000)
        .enumerate()
        .map(|(i, v)| RankCandidate {
            video: VideoId::parse("v", &v.id).expect("id"),
            sources: vec![Vote::new(if i % 3 == 0 { Source::Topic } else { Source::Cowatch }, 0.5, (i / 3 + 1) as u32)],
        })
        .collect();
    // The peak in this run, before and after the ONNX Runtime timings (the
    // larger of the two: a busy neighbour only lowers a measurement).
    let peak_before = watchnext_benches::peak::fp32();
    let int8 = watchnext_benches::peak::int8();
    eprintln!(
        "peak (this run, one thread): fp32 {:.1} G multiply-adds/s ({}); int8 {}",
        peak_before.giga(),
        peak_before.isa,
        int8.map_or_else(
            || "not measured (no AVX-512 VNNI)".to_owned(),
            |r| format!("{:.1} G/s ({})", r.giga(), r.isa)
        )
    );
    let mut ort_times = Vec::new();
    let macs = macs_per_row(&config);
    eprintln!("ranker: {:.3} M multiply-adds per candidate ({:.3} G for 500)", macs / 1e6, macs * 500.0 / 1e9);

    // The same model as an INT8 graph, calibrated on these rows.
    let int8_model = {
        let (dense, sparse) = ranker.features(&q, &all);
        let fp32 = Model::new(&config, vec![0.0; DENSE_LEN], vec![1.0; DENSE_LEN], &vec![0.1; config.tasks.len()])
            .expect("model");
        // The same seed: the same weights as the fp32 graph above.
        let calibration =
            export::calibrate_rows(&runtime_for_calibration(), &fp32, &dense, &sparse).expect("calibrates");
        let bytes = export::serving_graph_int8(&fp32, "bench-int8", &calibration).expect("int8 graph");
        let manifest = export::manifest(&fp32, "bench-int8", Default::default());
        let dir = scratch.path().join("models/bench-int8");
        export::write_model_dir(&dir, &bytes, &manifest).expect("model dir");
        ranker.load_dir(&dir).expect("loads the int8 graph");
        ranker.model(Some("bench-int8")).expect("int8 loaded")
    };
    // The fp32 graph serves again (rank/ and recommend/ below use it).
    ranker.load_dir(&dir).expect("fp32 active again");
    let mut group = c.benchmark_group("ranker");
    for n in SIZES {
        let cands = &all[..n];
        let (dense, sparse) = ranker.features(&q, cands);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("ort_only/{n}"), |b| {
            b.iter(|| black_box(model.run(&dense, &sparse, n).expect("runs")));
        });
        group.bench_function(format!("features_only/{n}"), |b| b.iter(|| black_box(ranker.features(&q, cands))));
        group.bench_function(format!("rank/{n}"), |b| {
            b.iter(|| black_box(ranker.rank(&q, cands, None).expect("ranks")))
        });
        group.bench_function(format!("ort_only_int8/{n}"), |b| {
            b.iter(|| black_box(int8_model.run(&dense, &sparse, n).expect("runs")));
        });
        let t = time(200, || {
            black_box(model.run(&dense, &sparse, n).expect("runs"));
        });
        let t8 = time(200, || {
            black_box(int8_model.run(&dense, &sparse, n).expect("runs"));
        });
        let (p32, _) = model.run(&dense, &sparse, n).expect("runs");
        let (p8, _) = int8_model.run(&dense, &sparse, n).expect("runs");
        let gap = p32.iter().zip(&p8).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!(
            "ranker/{n}: INT8 graph {:.3} ms vs fp32 {:.3} ms median, alternating: {:.2}x faster; largest prediction \
             gap {gap:.4} (untrained weights)",
            t8 * 1e3,
            t * 1e3,
            t / t8
        );
        ort_times.push((n, t));
    }
    group.finish();
    let peak_after = watchnext_benches::peak::fp32();
    let peak = peak_before.giga().max(peak_after.giga());
    eprintln!(
        "peak fp32 before / after the runs: {:.1} / {:.1} G/s; shares below are of {peak:.1}",
        peak_before.giga(),
        peak_after.giga()
    );
    for (n, t) in ort_times {
        let gmacs = macs * n as f64 / t / 1e9;
        eprintln!(
            "ranker/{n}: ONNX Runtime {:.3} ms median = {gmacs:.1} G multiply-adds/s = {:.0}% of the fp32 peak \
             measured in this run (= {:.0} GFLOP/s counting 2 per multiply-add){}",
            t * 1e3,
            100.0 * gmacs / peak,
            2.0 * gmacs,
            int8.map_or_else(String::new, |r| format!("; {:.0}% of the int8 peak", 100.0 * gmacs / r.giga()))
        );
    }
    let (dense, sparse) = ranker.features(&q, &all);
    if let Some(report) = python_side_by_side(scratch.path(), &dense, &sparse) {
        // Each weight's matrix product alone, as ONNX Runtime runs it: how
        // close its own kernels come to the peak on this model's shapes.
        let (mut macs_all, mut ms_all) = (0.0, 0.0);
        for line in report.lines() {
            let gemm: Vec<&str> = line.split_whitespace().collect();
            match gemm[..] {
                ["gemm", name, macs, ms] => {
                    let (macs, ms): (f64, f64) = (macs.parse().unwrap_or(0.0), ms.parse().unwrap_or(f64::NAN));
                    macs_all += macs;
                    ms_all += ms;
                    eprintln!(
                        "python onnxruntime, {name} alone at {} rows: {ms:.3} ms = {:.0}% of the fp32 peak",
                        SIZES[SIZES.len() - 1],
                        100.0 * macs / (ms / 1e3) / 1e9 / peak
                    );
                }
                _ => eprintln!("python onnxruntime {line}"),
            }
        }
        if ms_all > 0.0 {
            eprintln!(
                "python onnxruntime, every weight's product alone: {ms_all:.3} ms for {:.3} G multiply-adds = {:.0}% \
                 of the fp32 peak (the whole graph's ceiling on this machine with ONNX Runtime's own kernels)",
                macs_all / 1e9,
                100.0 * macs_all / (ms_all / 1e3) / 1e9 / peak
            );
        }
    }

    // A whole Recommend in this process, 500 candidates.
    let mut events: Vec<Event> = Vec::new();
    generate_logs(&world, LoggingPolicy::default(), 300_000, &mut events, false).expect("log");
    let topic = Arc::new(watchnext_topic::TopicGenerator::new(Default::default()).expect("topic"));
    let cowatch = Arc::new(watchnext_cowatch::CowatchGenerator::new(Default::default()).expect("cowatch"));
    let context =
        Arc::new(watchnext_context::ContextGenerator::with_catalog(Default::default(), &catalog).expect("context"));
    let generators: Vec<Arc<dyn Generator>> = vec![topic, cowatch, context];
    for g in &generators {
        g.update_catalog(&catalog);
        for chunk in events.chunks(10_000) {
            g.observe(chunk);
        }
    }
    let pools = watchnext_recommender::cpu::CpuPools::new(0, 1_024);
    let clients: Vec<Arc<dyn GeneratorClient>> = generators
        .iter()
        .map(|g| Arc::new(LocalGenerator(g.clone(), pools.generators.clone())) as Arc<dyn GeneratorClient>)
        .collect();
    let settings = Settings {
        fanout: FanoutConfig {
            per_generator: 400,
            default_deadline_ms: 5_000,
            ranker_timeout_ms: 5_000,
            ..FanoutConfig::default()
        },
        ..Settings::default()
    };
    let rec = Recommender::new(
        settings,
        500,
        clients,
        Some(Arc::new(LocalRanker(ranker.clone(), pools.ranker))),
        None,
        Arc::new(RecentWatches::new(50)),
    )
    .expect("recommender");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let popular = {
        let mut counts = std::collections::HashMap::<&VideoId, u32>::new();
        for e in &events {
            *counts.entry(&e.video).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(v, n)| (*n, (*v).clone())).map(|(v, _)| v.clone()).expect("a video")
    };
    let rq = Query { query_video: popular, ..q.clone() };
    let merged: std::collections::HashSet<VideoId> = generators
        .iter()
        .flat_map(|g| g.generate(&rq, 400).candidates.into_iter().map(|c| c.video))
        .filter(|v| v != &rq.query_video)
        .collect();
    eprintln!("recommend: the generators propose {} distinct videos; the ranker gets at most 500", merged.len());
    for g in &generators {
        let t = time(200, || {
            black_box(g.generate(&rq, 400));
        });
        eprintln!("recommend: {:?} generate(400) {:.1} µs median", g.source(), t * 1e6);
    }
    let probe = rt.block_on(rec.recommend(rq.clone(), 100, "", None)).expect("recommends");
    eprintln!(
        "recommend: {} items, model {:?}, degraded {:?}",
        probe.items.len(),
        probe.model_version,
        probe.degraded_reasons
    );
    let mut group = c.benchmark_group("recommend");
    group.bench_function("500", |b| {
        b.iter(|| black_box(rt.block_on(rec.recommend(rq.clone(), 100, "", Some(Duration::from_secs(5))))))
    });
    group.finish();
    // Side by side: ONNX Runtime alone and the whole request, alternating,
    // so that both medians see the same machine state.
    let cands: Vec<RankCandidate> = all[..500].to_vec();
    let (dense, sparse) = ranker.features(&q, &cands);
    let (mut ort, mut total) = (Vec::new(), Vec::new());
    for i in 0..205 {
        let t = Instant::now();
        black_box(model.run(&dense, &sparse, 500).expect("runs"));
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        black_box(rt.block_on(rec.recommend(rq.clone(), 100, "", Some(Duration::from_secs(5)))).expect("recommends"));
        let b = t.elapsed().as_secs_f64();
        if i >= 5 {
            ort.push(a);
            total.push(b);
        }
    }
    let (ort, total) = (median(ort), median(total));
    eprintln!(
        "recommend/500: {:.3} ms median, ONNX Runtime alone {:.3} ms (alternating runs): {:.1}% of the request \
         outside ONNX Runtime (fan-out, merge, features, combiner)",
        total * 1e3,
        ort * 1e3,
        100.0 * (total - ort) / total
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
