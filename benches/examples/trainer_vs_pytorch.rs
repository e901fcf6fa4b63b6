//! Our trainer's half of `benches/scripts/trainer_vs_pytorch.sh` (issue 13,
//! item 7): the reference MMoE of the trainer bench, trained by
//! `watchnext_trainer` on the bench's synthetic rows, and those rows written
//! out so that `benches/python/trainer_pytorch.py` trains the same model on
//! exactly the same rows with PyTorch.
//!
//! ```sh
//! trainer_vs_pytorch write DIR      # the rows, raw little-endian arrays + rows.json
//! trainer_vs_pytorch train EPOCHS   # examples/s of each epoch, one JSON line
//! trainer_vs_pytorch peak           # this machine's fp32 peak (one thread) and the
//!                                   # model's multiply-adds per training example
//! ```
//!
//! Each epoch is one `train::train` with `max_epochs: 1` over 8 batches of
//! 512 rows; its own `seconds` are timed (batch building, forward, loss,
//! backward, AdamW update, loss read-back), as in the criterion bench. The
//! first epoch is a warm-up and is not reported. Threads come from
//! `RAYON_NUM_THREADS` (the script sets it).

use std::{io::Write as _, path::Path};

use watchnext_core::features::{DENSE_LEN, SPARSE_LEN};
use watchnext_trainer::{
    config::Architecture,
    dataset::Examples,
    model::Model,
    train::{self, TrainOptions},
};

#[path = "../shared/trainer_rows.rs"]
mod trainer_rows;
use trainer_rows::{BATCH, ROWS, forward_macs, reference, synthetic};

fn write_raw<T: Copy>(path: &Path, values: &[T], to_le: impl Fn(T) -> Vec<u8>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        out.write_all(&to_le(*v))?;
    }
    out.flush()
}

fn write(dir: &Path, ex: &Examples) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = reference(Architecture::Mmoe, 0.1);
    let f = config.features;
    let header = serde_json::json!({
        "rows": ex.len,
        "dense": DENSE_LEN,
        "sparse": SPARSE_LEN,
        "tasks": config.tasks.iter().map(|t| serde_json::json!({
            "name": t.name,
            "binary": t.kind == watchnext_core::model::TaskKind::Binary,
            "debias": t.debias,
            "loss_weight": t.loss_weight,
        })).collect::<Vec<_>>(),
        "field_table": watchnext_trainer::model::FIELD_TABLE,
        "table_rows": [f.user_buckets, f.video_buckets, f.topic_buckets, 5, 24],
        "embedding_dim": config.embedding_dim,
        "bottom": config.bottom,
        "experts": config.experts,
        "expert_layers": config.expert_layers,
        "tower_layers": config.tower_layers,
        "gate_dropout": config.gate_dropout,
        "max_position": config.max_position,
        "devices": 5,
        "batch": BATCH,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
    });
    std::fs::write(dir.join("rows.json"), serde_json::to_vec_pretty(&header)?)?;
    write_raw(&dir.join("dense.f32"), &ex.dense, |v: f32| v.to_le_bytes().to_vec())?;
    write_raw(&dir.join("sparse.i64"), &ex.sparse, |v: i64| v.to_le_bytes().to_vec())?;
    write_raw(&dir.join("labels.f32"), &ex.labels, |v: f32| v.to_le_bytes().to_vec())?;
    write_raw(&dir.join("mask.f32"), &ex.mask, |v: f32| v.to_le_bytes().to_vec())?;
    write_raw(&dir.join("position.u32"), &ex.position, |v: u32| v.to_le_bytes().to_vec())?;
    write_raw(&dir.join("device.u8"), &ex.device, |v: u8| vec![v])?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (tr, va) = (synthetic(ROWS, 1), synthetic(64, 2));
    match args.first().map(String::as_str) {
        Some("write") => {
            let dir = args.get(1).ok_or("write DIR")?;
            write(Path::new(dir), &tr)?;
            eprintln!("trainer_vs_pytorch: {} rows written to {dir}", tr.len);
        }
        Some("train") => {
            let epochs: usize = args.get(1).ok_or("train EPOCHS")?.parse()?;
            let config = reference(Architecture::Mmoe, 0.1);
            config.validate()?;
            let (mean, inv) = train::dense_standardisation(&tr);
            let model = Model::new(&config, mean, inv, &train::label_means(&tr))?;
            let (mut rates, mut loss) = (Vec::with_capacity(epochs), f64::NAN);
            for epoch in 0..=epochs {
                let report = train::train(&model, &tr, &va, &TrainOptions::default())?;
                if epoch > 0 {
                    rates.push(ROWS as f64 / report.epochs[0].seconds);
                }
                loss = report.epochs[0].train_loss;
            }
            let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({
                    "trainer": "watchnext (candle)",
                    "threads": threads,
                    "examples_per_s": rates,
                    "last_epoch_loss": loss,
                })
            );
        }
        Some("peak") => {
            let peak = watchnext_benches::peak::fp32();
            let macs = forward_macs(&reference(Architecture::Mmoe, 0.1));
            // Training ≈ forward + two backward products per matmul.
            println!(
                "{}",
                serde_json::json!({
                    "fp32_peak_multiply_adds_per_s": peak.per_second,
                    "isa": peak.isa,
                    "training_multiply_adds_per_example": 3 * macs,
                })
            );
        }
        _ => return Err("usage: trainer_vs_pytorch write DIR | train EPOCHS | peak".into()),
    }
    Ok(())
}
