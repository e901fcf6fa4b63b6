//! `watchnext train` and `watchnext eval` end to end on a small synthetic
//! world: the model directory, the report, parity on real rows, and a resumed
//! run that equals an uninterrupted one.

use std::path::Path;

use watchnext_core::{
    features::FeatureSchema,
    model::{MODEL_FILE, ModelManifest},
};
use watchnext_trainer::{
    config::{BatchOrder, TrainerConfig},
    experiments,
    pipeline::{self, TrainRun},
    train::TrainOptions,
};
use watchnext_world::WorldConfig;

/// These tests exercise training and evaluation on the logged impressions;
/// the replayed examples have tests of their own (`tests/replay.rs`).
const LOGGED: pipeline::LoggedExamples = pipeline::LoggedExamples { history_len: 50 };

fn small_config() -> TrainerConfig {
    TrainerConfig {
        embedding_dim: 8,
        bottom: 32,
        experts: 4,
        expert_layers: vec![16, 8],
        tower_layers: vec![8],
        max_epochs: 2,
        batch_size: 256,
        // The toy world gives a few hundred batches: two epochs at the
        // default rate (tuned for real logs' many thousands) barely move.
        learning_rate: 2e-3,
        ..TrainerConfig::default()
    }
}

fn toy_data(dir: &Path) {
    experiments::world_data(dir, &WorldConfig::toy(), 40_000).expect("toy world");
}

#[test]
fn train_then_eval_writes_a_servable_model_and_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    toy_data(&data);
    let out = tmp.path().join("model");
    let run = TrainRun {
        config: small_config(),
        data_dir: data.clone(),
        out_dir: out.clone(),
        model_version: "toy-1".into(),
        progress: false,
        checkpoint_dir: None,
        resume: false,
    };
    let outcome = pipeline::run_training(&run, &LOGGED).expect("trains");
    assert!(outcome.train_rows > outcome.test_rows && outcome.test_rows > 0);
    let click = outcome.test_metrics.iter().find(|m| m.task == "click").expect("click metrics");
    assert!(click.auc.expect("auc") > 0.6, "click AUC {:?}", click.auc);
    assert_eq!(outcome.gates.len(), 5);

    let manifest = ModelManifest::read(&out).unwrap();
    manifest.check(&FeatureSchema::new(small_config().features).unwrap()).expect("the contract holds");
    assert!(manifest.metrics.contains_key("click.auc"));
    assert_eq!(manifest.training.test_rows as usize, outcome.test_rows);
    for file in [MODEL_FILE, "manifest.json", pipeline::CONFIG_FILE, pipeline::TRAINING_FILE, "bias_tower.json"] {
        assert!(out.join(file).is_file(), "{file}");
    }

    let eval = pipeline::run_eval(&out, &data, &LOGGED, false).expect("evaluates");
    // Eval rebuilds the same test period and runs the same graph: same numbers.
    let again = eval.metrics.iter().find(|m| m.task == "click").unwrap();
    assert_eq!(again.auc, click.auc);
    assert_eq!(eval.bias_curves.len(), 4);
    assert!(eval.ndcg_model.unwrap() > 0.0 && eval.ndcg_logged.is_some());
    let report = std::fs::read_to_string(&eval.report).unwrap();
    for section in
        ["Per-task metrics", "Expert utilisation", "Position bias", "NDCG@10", "## Training", "learning_curves.png"]
    {
        assert!(report.contains(section), "report lacks {section}");
    }
    for png in ["expert_utilisation.png", "bias_curves.png", "learning_curves.png"] {
        let bytes = std::fs::read(out.join("report").join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
}

#[test]
fn the_exported_graph_matches_the_trainer_on_real_rows() {
    let tmp = tempfile::tempdir().unwrap();
    toy_data(tmp.path());
    let config = TrainerConfig { max_epochs: 1, ..small_config() };
    let (split, _) = pipeline::load_split(tmp.path(), &config, &LOGGED, false).unwrap();
    let (model, _) = pipeline::fit(&config, &split, &TrainOptions::default()).unwrap();
    let dir = tmp.path().join("m");
    let (manifest, _, _, onnx) =
        pipeline::export_and_score(&model, &dir, "parity", Default::default(), &split.train, &split.test).unwrap();
    let batch = model.batch(&split.test, 0, split.test.len, None).unwrap();
    let fwd = model.forward(&batch, false).unwrap();
    let ours = model.predictions(&fwd.main).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(onnx.values.len(), ours.len());
    assert_eq!(manifest.tasks.len() * split.test.len, ours.len());
    for (i, (a, b)) in onnx.values.iter().zip(&ours).enumerate() {
        // 1e-5 relative, with an absolute floor of 1e-6 for outputs near zero.
        assert!((a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6, "row {i}: onnx {a} vs trainer {b}");
    }
}

#[test]
fn an_int8_export_keeps_the_fp32_figures_beside_its_own_and_stays_close() {
    let tmp = tempfile::tempdir().unwrap();
    toy_data(tmp.path());
    let config = TrainerConfig {
        max_epochs: 1,
        precision: watchnext_trainer::config::Precision::Int8,
        calibration_rows: 2_000,
        ..small_config()
    };
    let (split, _) = pipeline::load_split(tmp.path(), &config, &LOGGED, false).unwrap();
    let (model, _) = pipeline::fit(&config, &split, &TrainOptions::default()).unwrap();
    let dir = tmp.path().join("m8");
    let (manifest, metrics, _, _) =
        pipeline::export_and_score(&model, &dir, "int8", Default::default(), &split.train, &split.test).unwrap();
    assert_eq!(manifest.precision, "int8");
    assert_eq!(ModelManifest::read(&dir).unwrap().precision, "int8", "written to the directory too");
    // Every k-th training row: at most the rows asked for, and most of them.
    let rows = manifest.metrics["calibration.rows"];
    assert!((1_500.0..=2_000.0).contains(&rows), "{rows} calibration rows");
    for m in &metrics {
        if let Some(auc) = m.auc {
            let fp32 = manifest.metrics[&format!("fp32.{}.auc", m.task)];
            assert!((auc - fp32).abs() < 0.01, "{}: int8 AUC {auc} vs fp32 {fp32}", m.task);
        }
        if let Some(mse) = m.mse {
            let fp32 = manifest.metrics[&format!("fp32.{}.mse", m.task)];
            assert!((mse - fp32).abs() <= 0.05 * fp32, "{}: int8 MSE {mse} vs fp32 {fp32}", m.task);
        }
    }
    let bytes = std::fs::read(dir.join(MODEL_FILE)).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("MatMulIntegerToFloat"), "the directory holds the INT8 graph");
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    resumed_equals_uninterrupted(TrainerConfig { max_epochs: 3, patience: 10, ..small_config() });
}

/// The same with rows shuffled every epoch and a weight average: the
/// permutation of each epoch and the average are part of the resumed state.
#[test]
fn a_resumed_run_with_shuffled_rows_and_a_weight_average_equals_an_uninterrupted_one() {
    resumed_equals_uninterrupted(TrainerConfig {
        max_epochs: 3,
        patience: 10,
        order: BatchOrder::Shuffled,
        weight_average: 0.99,
        ..small_config()
    });
}

fn resumed_equals_uninterrupted(config: TrainerConfig) {
    let tmp = tempfile::tempdir().expect("temporary folder");
    toy_data(tmp.path());
    let (split, _) = pipeline::load_split(tmp.path(), &config, &LOGGED, false).expect("examples");
    let (_, whole) = pipeline::fit(&config, &split, &TrainOptions::default()).expect("trains");

    let ckpt = tmp.path().join("ckpt");
    let options = TrainOptions { progress: false, checkpoint_dir: Some(ckpt.clone()), resume: true };
    let first = TrainerConfig { max_epochs: 1, ..config.clone() };
    let (_, part) = pipeline::fit(&first, &split, &options).expect("trains");
    assert_eq!(part.epochs.len(), 1);
    let (_, rest) = pipeline::fit(&config, &split, &options).expect("resumes");
    assert_eq!(rest.resumed_epochs, 1);
    assert_eq!(rest.epochs.len(), 3);
    for (a, b) in whole.epochs.iter().zip(&rest.epochs) {
        assert_eq!(a.train_loss, b.train_loss, "epoch {}", a.epoch);
        assert_eq!(a.validation_loss, b.validation_loss, "epoch {}", a.epoch);
    }

    // A checkpoint of another configuration is refused, not silently mixed in.
    let other = TrainerConfig { learning_rate: 1e-3, ..config };
    let err = pipeline::fit(&other, &split, &options).expect_err("refused").to_string();
    assert!(err.contains("another configuration"), "{err}");
}
