//! `watchnext train` and `watchnext eval` end to end.
//!
//! **Train**: load the labelled impressions of a data folder (features by
//! the shared schema), split them by time into train / validation / test,
//! standardise on the training rows, train with early stopping, export the
//! serving graph, evaluate the *exported* graph on the test period with ONNX
//! Runtime, and write the model directory:
//!
//! | file | for whom |
//! |---|---|
//! | `model.onnx` | the ranker (serving graph, no position input) |
//! | `manifest.json` | the ranker (contract) and people (metrics, data) |
//! | `trainer_config.json` | `watchnext eval` and retraining: the exact config |
//! | `training.json` | per-epoch losses and AUCs (learning curves) |
//! | `bias_tower.json` | evaluation only: the shallow tower's weights |
//!
//! The manifest is written last, so a directory with a manifest is complete.
//!
//! **Eval**: rebuild the same test period from the data folder, run the
//! model directory's `model.onnx` over it, and write `report/report.md` with
//! PNG charts (learning curves, bias curves against the world's truth,
//! expert utilisation per gate).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use watchnext_core::{
    features::{DENSE_LEN, SPARSE_LEN},
    model::{ModelManifest, TrainingSummary},
};
use watchnext_world::{World, WorldConfig};

use crate::{
    config::{PositionMode, Precision, TrainerConfig},
    dataset::{self, DatasetSummary, Examples},
    evaluate::{self, BIAS_TOWER_FILE, BiasCurve, BiasTower, GateUtilisation, TaskMetric},
    export,
    model::Model,
    train::{self, TrainOptions, TrainReport},
};

pub const CONFIG_FILE: &str = "trainer_config.json";
pub const TRAINING_FILE: &str = "training.json";

/// Anything that stops a train or eval run, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("trainer config: {0}")]
    Config(String),
    /// Building examples failed in the caller's loader (e.g. the replay).
    #[error("building the training examples: {0}")]
    Examples(String),
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
    #[error(transparent)]
    Train(#[from] train::TrainError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error(transparent)]
    Eval(#[from] evaluate::EvalError),
    #[error(transparent)]
    Manifest(#[from] watchnext_core::model::ManifestError),
    #[error(transparent)]
    Onnx(#[from] watchnext_onnx::OnnxError),
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("building the model: {0}")]
    Tensor(#[from] candle_core::Error),
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), PipelineError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| PipelineError::File { path: path.to_owned(), problem: e.to_string() })?;
    watchnext_core::fsutil::write_atomic(path, &bytes)
        .map_err(|e| PipelineError::File { path: path.to_owned(), problem: e.to_string() })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, PipelineError> {
    let bytes =
        std::fs::read(path).map_err(|e| PipelineError::File { path: path.to_owned(), problem: e.to_string() })?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::File { path: path.to_owned(), problem: e.to_string() })
}

/// A training run.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub config: TrainerConfig,
    /// The data folder to learn from.
    pub data_dir: PathBuf,
    /// Where the model directory goes.
    pub out_dir: PathBuf,
    pub model_version: String,
    pub progress: bool,
    /// Checkpoint folder (kept for `resume`); `None` = `out_dir/checkpoint`.
    pub checkpoint_dir: Option<PathBuf>,
    pub resume: bool,
}

/// What a training run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub model_dir: PathBuf,
    pub model_version: String,
    pub dataset: DatasetSummary,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    pub report: TrainReport,
    pub test_metrics: Vec<TaskMetric>,
    pub gates: Vec<GateUtilisation>,
    pub seconds: f64,
}

/// The data split every command agrees on.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Examples,
    pub validation: Examples,
    pub test: Examples,
}

/// How a data folder becomes labelled examples. The server implements it
/// with its serving pipeline (a point-in-time replay, `crate::replay`, when
/// `config.examples = "replay"`); [`LoggedExamples`] reads the logged
/// impressions alone.
pub trait ExampleLoader: Sync {
    fn load(
        &self,
        data_dir: &Path,
        config: &TrainerConfig,
        progress: bool,
    ) -> Result<(Examples, DatasetSummary), PipelineError>;
}

/// The logged impressions of a data folder, with histories `history_len`
/// deep (the recommender's `fanout.history_len`).
#[derive(Debug, Clone, Copy)]
pub struct LoggedExamples {
    pub history_len: usize,
}

impl ExampleLoader for LoggedExamples {
    fn load(
        &self,
        data_dir: &Path,
        config: &TrainerConfig,
        progress: bool,
    ) -> Result<(Examples, DatasetSummary), PipelineError> {
        Ok(dataset::from_data_dir(data_dir, config, self.history_len, progress)?)
    }
}

/// Loads and splits a data folder's examples.
pub fn load_split(
    data_dir: &Path,
    config: &TrainerConfig,
    loader: &dyn ExampleLoader,
    progress: bool,
) -> Result<(Split, DatasetSummary), PipelineError> {
    let (all, summary) = loader.load(data_dir, config, progress)?;
    let (train, validation, test) = dataset::split_by_time(&all, config.validation_fraction, config.test_fraction);
    Ok((Split { train, validation, test }, summary))
}

/// Trains a model on `split` (fresh, seeded) and returns it with its report.
pub fn fit(
    config: &TrainerConfig,
    split: &Split,
    options: &TrainOptions,
) -> Result<(Model, TrainReport), PipelineError> {
    let (mean, inv_std) = train::dense_standardisation(&split.train);
    let model = Model::new(config, mean, inv_std, &train::label_means(&split.train))?;
    let report = train::train(&model, &split.train, &split.validation, options)?;
    Ok((model, report))
}

/// Exports `model` into `dir` and evaluates the exported graph on `test`.
/// With `precision = int8` the fp32 graph is scored first (its figures go
/// to the manifest as `fp32.<name>`), then the INT8 graph, calibrated on
/// rows of `train`, replaces it and is what the figures describe.
pub fn export_and_score(
    model: &Model,
    dir: &Path,
    version: &str,
    training: TrainingSummary,
    train: &Examples,
    test: &Examples,
) -> Result<(ModelManifest, Vec<TaskMetric>, Vec<GateUtilisation>, evaluate::Predictions), PipelineError> {
    let bytes = export::serving_graph(model, version)?;
    let mut manifest = export::manifest(model, version, training);
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::File { path: dir.to_owned(), problem: e.to_string() })?;
    let model_file = dir.join(watchnext_core::model::MODEL_FILE);
    watchnext_onnx::graph::write_model(&model_file, &bytes)?;
    write_json(&dir.join(CONFIG_FILE), &model.config)?;
    if let Some(tower) = model.bias_tower() {
        write_json(&dir.join(BIAS_TOWER_FILE), &tower)?;
    }
    let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())?;
    let mut predictions = evaluate::predict(&runtime, dir, &manifest, test, 4_096)?;
    if model.config.precision == Precision::Int8 {
        for m in evaluate::task_metrics(&manifest, test, &predictions) {
            if let Some(auc) = m.auc {
                manifest.metrics.insert(format!("fp32.{}.auc", m.task), auc);
            }
            if let Some(mse) = m.mse {
                manifest.metrics.insert(format!("fp32.{}.mse", m.task), mse);
            }
        }
        let (dense, sparse) = spread_rows(train, model.config.calibration_rows);
        let calibration = export::calibrate_rows(&runtime, model, &dense, &sparse)?;
        let int8 = export::serving_graph_int8(model, version, &calibration)?;
        watchnext_onnx::graph::write_model(&model_file, &int8)?;
        manifest.precision = "int8".into();
        manifest.metrics.insert("calibration.rows".into(), calibration.rows as f64);
        predictions = evaluate::predict(&runtime, dir, &manifest, test, 4_096)?;
    }
    let metrics = evaluate::task_metrics(&manifest, test, &predictions);
    let gates = evaluate::gate_report(&manifest, &predictions);
    for m in &metrics {
        if let Some(auc) = m.auc {
            manifest.metrics.insert(format!("{}.auc", m.task), auc);
        }
        if let Some(mse) = m.mse {
            manifest.metrics.insert(format!("{}.mse", m.task), mse);
        }
    }
    manifest.metrics.insert("gates.polarised".into(), gates.iter().filter(|g| g.polarised).count() as f64);
    manifest.check(&model.schema)?;
    manifest.write(dir)?;
    Ok((manifest, metrics, gates, predictions))
}

/// Up to `n` rows of `ex` spread evenly over it (every k-th), as flat
/// dense and sparse features.
fn spread_rows(ex: &Examples, n: usize) -> (Vec<f32>, Vec<i64>) {
    let step = ex.len.div_ceil(n.max(1)).max(1);
    let (mut dense, mut sparse) = (Vec::new(), Vec::new());
    for i in (0..ex.len).step_by(step) {
        dense.extend_from_slice(&ex.dense[i * DENSE_LEN..(i + 1) * DENSE_LEN]);
        sparse.extend_from_slice(&ex.sparse[i * SPARSE_LEN..(i + 1) * SPARSE_LEN]);
    }
    (dense, sparse)
}

/// `watchnext train`.
pub fn run_training(run: &TrainRun, loader: &dyn ExampleLoader) -> Result<TrainOutcome, PipelineError> {
    let started = Instant::now();
    run.config.validate().map_err(PipelineError::Config)?;
    let (split, summary) = load_split(&run.data_dir, &run.config, loader, run.progress)?;
    if run.progress {
        eprintln!(
            "{} rows: {} train, {} validation, {} test (time ordered)",
            summary.rows, split.train.len, split.validation.len, split.test.len
        );
        for note in &summary.notes {
            eprintln!("note: {note}");
        }
    }
    let checkpoint_dir = run.checkpoint_dir.clone().unwrap_or_else(|| run.out_dir.join("checkpoint"));
    let options = TrainOptions { progress: run.progress, checkpoint_dir: Some(checkpoint_dir), resume: run.resume };
    let (model, report) = fit(&run.config, &split, &options)?;
    write_json(&run.out_dir.join(TRAINING_FILE), &report)?;
    let mut details = std::collections::BTreeMap::new();
    details.insert("architecture".into(), serde_json::json!(run.config.architecture));
    details.insert("position_mode".into(), serde_json::json!(run.config.position_mode));
    details.insert("best_epoch".into(), serde_json::json!(report.best_epoch));
    details.insert("epochs".into(), serde_json::json!(report.epochs.len()));
    details.insert("seed".into(), serde_json::json!(run.config.seed));
    let training = TrainingSummary {
        source: summary.source.clone(),
        train_rows: split.train.len as u64,
        validation_rows: split.validation.len as u64,
        test_rows: split.test.len as u64,
        first_ms: summary.first_ms.unwrap_or(0),
        last_ms: summary.last_ms.unwrap_or(0),
        details,
    };
    let (_, test_metrics, gates, _) =
        export_and_score(&model, &run.out_dir, &run.model_version, training, &split.train, &split.test)?;
    Ok(TrainOutcome {
        model_dir: run.out_dir.clone(),
        model_version: run.model_version.clone(),
        dataset: summary,
        train_rows: split.train.len,
        validation_rows: split.validation.len,
        test_rows: split.test.len,
        report,
        test_metrics,
        gates,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What `watchnext eval` found.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOutcome {
    pub model_version: String,
    pub test_rows: usize,
    pub metrics: Vec<TaskMetric>,
    pub gates: Vec<GateUtilisation>,
    /// For data with positions: the shallow tower's position bias per
    /// device, beside the logged click rate by slot and (world) the truth.
    pub bias_curves: Vec<BiasCurve>,
    /// World data only: NDCG@10 against true relevance of the model's click
    /// prediction, and of the logged order.
    pub ndcg_model: Option<f64>,
    pub ndcg_logged: Option<f64>,
    pub report: PathBuf,
    pub notes: Vec<String>,
}

/// `watchnext eval`: scores the model directory on the data folder's test
/// period and writes `model_dir/report/`.
pub fn run_eval(
    model_dir: &Path,
    data_dir: &Path,
    loader: &dyn ExampleLoader,
    progress: bool,
) -> Result<EvalOutcome, PipelineError> {
    let manifest = ModelManifest::read(model_dir)?;
    let config: TrainerConfig = read_json(&model_dir.join(CONFIG_FILE))?;
    let schema = watchnext_core::features::FeatureSchema::new(config.features).map_err(PipelineError::Config)?;
    manifest.check(&schema)?;
    let (split, _) = load_split(data_dir, &config, loader, progress)?;
    let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())?;
    let predictions = evaluate::predict(&runtime, model_dir, &manifest, &split.test, 4_096)?;
    let metrics = evaluate::task_metrics(&manifest, &split.test, &predictions);
    let gates = evaluate::gate_report(&manifest, &predictions);
    let mut notes = Vec::new();
    let world_path = watchnext_core::datadir::DataDir::new(data_dir).world_config();
    let world = if world_path.is_file() {
        let config = WorldConfig::read(&world_path)
            .map_err(|e| PipelineError::File { path: world_path.clone(), problem: e.to_string() })?;
        Some(
            World::build(&config)
                .map_err(|e| PipelineError::File { path: world_path.clone(), problem: e.to_string() })?,
        )
    } else {
        notes.push("no synthetic world in the data folder: ground-truth comparisons skipped".into());
        None
    };
    let tower_path = model_dir.join(BIAS_TOWER_FILE);
    let mut bias_curves = Vec::new();
    if config.position_mode == PositionMode::ShallowTower && tower_path.is_file() {
        let tower: BiasTower = read_json(&tower_path)?;
        let top = world.as_ref().map_or(config.max_position, |w| config.max_position.min(w.config().list_size));
        bias_curves = evaluate::bias_curves(&tower, &split.test, world.as_ref(), top);
        if bias_curves.is_empty() {
            notes.push(
                "no test rows carry a list position (replayed candidates have none; served or logged impressions \
                 do): no position-bias curve"
                    .into(),
            );
        }
    }
    let (mut ndcg_model, mut ndcg_logged) = (None, None);
    if let (Some(world), Some(click)) = (&world, manifest.tasks.iter().position(|t| t.name == "click")) {
        let t = manifest.tasks.len();
        let scores: Vec<f32> = (0..split.test.len).map(|i| predictions.values[i * t + click]).collect();
        ndcg_model = evaluate::ndcg_vs_truth(world, &split.test, &scores, 10);
        let logged: Vec<f32> = split.test.position.iter().map(|&p| -(p as f32)).collect();
        ndcg_logged = evaluate::ndcg_vs_truth(world, &split.test, &logged, 10);
    }
    let training: Option<TrainReport> = read_json(&model_dir.join(TRAINING_FILE)).ok();
    let report_dir = model_dir.join("report");
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| PipelineError::File { path: report_dir.clone(), problem: e.to_string() })?;
    let outcome = EvalOutcome {
        model_version: manifest.model_version.clone(),
        test_rows: split.test.len,
        metrics,
        gates,
        bias_curves,
        ndcg_model,
        ndcg_logged,
        report: report_dir.join("report.md"),
        notes,
    };
    crate::report::write(&report_dir, &manifest, &outcome, training.as_ref())?;
    Ok(outcome)
}
