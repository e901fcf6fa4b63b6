//! The trainer benchmarks' model and rows, shared by `benches/trainer.rs`
//! (criterion) and `examples/trainer_vs_pytorch.rs` (the same model and
//! rows against PyTorch): the reference MMoE of
//! `shared/reference/machine-limits.md` at batch 512 and synthetic rows for
//! the 5 default tasks.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use watchnext_core::features::{DENSE_LEN, FeatureConfig};
use watchnext_trainer::{
    config::{Architecture, TrainerConfig},
    dataset::Examples,
    model::Model,
};

pub const BATCH: usize = 512;
pub const BATCHES: usize = 8;
pub const ROWS: usize = BATCH * BATCHES;

/// The reference model at batch 512.
pub fn reference(architecture: Architecture, gate_dropout: f32) -> TrainerConfig {
    TrainerConfig {
        architecture,
        embedding_dim: 32,
        bottom: 256,
        experts: 8,
        expert_layers: vec![128, 64],
        tower_layers: vec![32],
        gate_dropout,
        batch_size: BATCH,
        max_epochs: 1,
        patience: 1,
        ..TrainerConfig::default()
    }
}

/// `n` rows for the 5 default tasks (click, watch, like, dismiss, rating),
/// sparse ids drawn over the default schema's full bucket ranges (so the
/// embedding gathers touch tables of realistic size: 50k users, 100k videos).
pub fn synthetic(n: usize, seed: u64) -> Examples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tasks = ["click", "watch", "like", "dismiss", "rating"].map(String::from).to_vec();
    let mut ex = Examples { tasks, ..Examples::default() };
    let f = FeatureConfig::default();
    let buckets = [f.user_buckets, f.video_buckets, f.video_buckets, f.topic_buckets, f.topic_buckets, 5, 24];
    for i in 0..n {
        let dense: Vec<f32> = (0..DENSE_LEN).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let sparse: Vec<i64> = buckets.iter().map(|&b| i64::from(rng.random_range(0..b))).collect();
        let position = rng.random_range(1..=20u32);
        let logit = 2.0 * dense[0] + if sparse[1] % 2 == 0 { 0.5 } else { -0.5 } - 0.1 * position as f32;
        let click = rng.random::<f32>() < 1.0 / (1.0 + (-logit).exp());
        let watch = if click { (300.0 * rng.random::<f32>() * (1.0 + dense[1])).ln_1p() } else { 0.0 };
        let like = click && rng.random::<f32>() < 0.2 + 0.2 * dense[2];
        let dismiss = !click && rng.random::<f32>() < 0.05;
        let rated = click && rng.random::<f32>() < 0.3;
        let rating = if rated { (3.0 + 2.0 * dense[3]).round() } else { 0.0 };
        ex.dense.extend(&dense);
        ex.sparse.extend(&sparse);
        ex.labels.extend([
            f32::from(u8::from(click)),
            watch,
            f32::from(u8::from(like)),
            f32::from(u8::from(dismiss)),
            rating,
        ]);
        ex.mask.extend([1.0, 1.0, 1.0, 1.0, f32::from(u8::from(rated))]);
        ex.position.push(position);
        ex.device.push(sparse[5] as u8);
        ex.source.push(rng.random_range(0..5u8));
        ex.timestamp_ms.push(i as i64);
        ex.user.push(sparse[0] as u32);
        ex.video.push(sparse[1] as u32);
        ex.request.push((i / 20) as u32);
    }
    ex.len = n;
    ex
}

/// Multiply-adds of one example's forward pass (the matmuls; element-wise
/// work is left out, as in machine-limits.md).
pub fn forward_macs(c: &TrainerConfig) -> usize {
    let input = Model::input_width(c);
    let t = c.tasks.len();
    let e = c.experts;
    let mut macs = input * c.bottom; // bottom
    let first = c.expert_layers[0];
    macs += c.bottom * e * first; // first expert layer of every expert (one wide matmul)
    let later: usize = c.expert_layers.windows(2).map(|w| w[0] * w[1]).sum();
    let mut tower_in = Model::expert_width(c);
    match c.architecture {
        Architecture::Mmoe => {
            macs += e * later; // later expert layers, per expert
            macs += c.bottom * t * e; // gates
            macs += t * e * tower_in; // gate-weighted mixture
        }
        Architecture::SharedBottom => {
            // The second layer reads all E·h₁ units; later ones are plain.
            macs += c
                .expert_layers
                .windows(2)
                .enumerate()
                .map(|(l, w)| if l == 0 { e * w[0] * w[1] } else { w[0] * w[1] })
                .sum::<usize>();
            if c.expert_layers.len() == 1 {
                tower_in = e * first;
            }
        }
    }
    let mut widths = vec![tower_in];
    widths.extend(&c.tower_layers);
    widths.push(1);
    macs += t * widths.windows(2).map(|w| w[0] * w[1]).sum::<usize>(); // towers
    macs
}
