//! The trainer's throughput: training examples per second of one epoch of
//! `train::train` over 8 batches × 512 synthetic rows, for the reference
//! model of `shared/reference/machine-limits.md` (input 262 = 38 dense +
//! 7 sparse fields × 32, shared bottom 256, 8 experts 256→128→64, the 5
//! default tasks with towers 64→32→1, shallow tower, AdamW, batch 512).
//!
//! Variants: the MMoE (gate dropout 0.1, the default), the same MMoE without
//! gate dropout, and the shared-bottom baseline at the same sizes.
//!
//! Only the training loop is timed: each iteration runs `train::train` with
//! `max_epochs: 1` and reports the epoch's own `seconds` (batch building,
//! forward, loss, backward, AdamW update, loss read-back), not the set-up,
//! the 64-row validation pass or the best-parameter copies around it.
//!
//! Threads: candle's matmuls and element-wise ops read `RAYON_NUM_THREADS`
//! once per process (`CANDLE_NUM_THREADS`, if set, overrides it for the
//! element-wise ops); the workspace forbids `unsafe`, so neither can be set
//! from here. Run
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo bench -p watchnext-benches --bench trainer
//! RAYON_NUM_THREADS=2 cargo bench -p watchnext-benches --bench trainer
//! ```
//!
//! Before measuring, each variant prints where a step's time goes (batch
//! building, forward, loss, backward timed with `Instant` through the public
//! API; the private AdamW update is the rest of the epoch's mean step time;
//! see [`breakdown`]). A name filter selects what criterion measures, but
//! every variant's set-up and breakdown still run.

use std::{hint::black_box, time::Duration, time::Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use watchnext_trainer::{
    config::{Architecture, TrainerConfig},
    dataset::Examples,
    model::{BatchRng, Model},
    train::{self, TrainOptions},
};

#[path = "../shared/trainer_rows.rs"]
mod trainer_rows;
use trainer_rows::{BATCH, BATCHES, ROWS, forward_macs, reference, synthetic};

/// Rounds of the step breakdown.
const ROUNDS: usize = 7;

fn model_for(config: &TrainerConfig, ex: &Examples) -> Model {
    config.validate().expect("valid config");
    let (mean, inv) = train::dense_standardisation(ex);
    Model::new(config, mean, inv, &train::label_means(ex)).expect("model")
}

/// One epoch over `tr`; the seconds of its training loop alone.
fn epoch_seconds(model: &Model, tr: &Examples, va: &Examples) -> f64 {
    let report = train::train(model, tr, va, &TrainOptions::default()).expect("trains");
    report.epochs[0].seconds
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Where a step's time goes. Each of `ROUNDS` rounds times batch building,
/// forward, loss and backward of `BATCHES` steps through the public API
/// (mean per step), then one epoch of `train::train` on the same rows (its
/// mean step); the AdamW update (private) is the difference. Medians over
/// the rounds, so a busy neighbour hurts one round, not the figure.
fn breakdown(name: &str, model: &Model, tr: &Examples, va: &Examples) {
    let mut rng = BatchRng(ChaCha8Rng::seed_from_u64(17));
    let mut rounds: [Vec<f64>; 6] = Default::default();
    epoch_seconds(model, tr, va); // warm-up
    for _ in 0..ROUNDS {
        let mut sums = [0.0f64; 4];
        for s in 0..BATCHES {
            let start = s * BATCH;
            let t0 = Instant::now();
            let batch = model.batch(tr, start, start + BATCH, Some(&mut rng)).expect("batch");
            let t1 = Instant::now();
            let fwd = model.forward(&batch, true).expect("forward");
            let t2 = Instant::now();
            let (loss, _) = model.loss(&fwd, &batch).expect("loss");
            let t3 = Instant::now();
            let grads = loss.backward().expect("backward");
            let t4 = Instant::now();
            black_box(&grads);
            for (sum, (a, b)) in sums.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)]) {
                *sum += (b - a).as_secs_f64() / BATCHES as f64;
            }
        }
        let step = epoch_seconds(model, tr, va) / BATCHES as f64;
        let update = step - sums.iter().sum::<f64>();
        for (r, v) in rounds.iter_mut().zip([step, sums[0], sums[1], sums[2], sums[3], update]) {
            r.push(v);
        }
    }
    let [step, b, f, l, bw, update] = rounds.map(|mut r| median(&mut r));
    let ms = |x: f64| x * 1e3;
    let pct = |x: f64| 100.0 * x / step;
    eprintln!(
        "trainer/{name}: step {:.2} ms ({:.0} examples/s) = batch {:.2} ms ({:.0}%) + forward {:.2} ms ({:.0}%) + \
         loss {:.2} ms ({:.0}%) + backward {:.2} ms ({:.0}%) + AdamW update (the rest) {:.2} ms ({:.0}%) [medians of \
         {ROUNDS} rounds]",
        ms(step),
        BATCH as f64 / step,
        ms(b),
        pct(b),
        ms(f),
        pct(f),
        ms(l),
        pct(l),
        ms(bw),
        pct(bw),
        ms(update),
        pct(update),
    );
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset (candle: physical cores)".into());
    let (tr, va) = (synthetic(ROWS, 1), synthetic(64, 2));
    let mut group = c.benchmark_group("trainer");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, config) in [
        ("mmoe", reference(Architecture::Mmoe, 0.1)),
        ("mmoe_no_gate_dropout", reference(Architecture::Mmoe, 0.0)),
        ("shared_bottom", reference(Architecture::SharedBottom, 0.1)),
    ] {
        let model = model_for(&config, &tr);
        let macs = forward_macs(&config);
        let params: usize = model.params().iter().map(|p| p.var.elem_count()).sum();
        eprintln!(
            "trainer/{name}: RAYON_NUM_THREADS={threads}; input {}, {params} dense parameters, forward {macs} \
             multiply-adds per example, training ≈ 3× = {:.2} MFLOP per example",
            Model::input_width(&config),
            6.0 * macs as f64 / 1e6
        );
        breakdown(name, &model, &tr, &va);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let seconds: f64 = (0..iters).map(|_| epoch_seconds(&model, &tr, &va)).sum();
                Duration::from_secs_f64(seconds)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
