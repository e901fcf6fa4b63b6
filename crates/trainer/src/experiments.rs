//! Side-by-side comparisons on the same data (`watchnext eval compare`):
//! every variant is trained on the same time split, exported, and scored by
//! running its exported graph on the same test period.
//!
//! - **Baselines** ([`baselines`]): MMoE with the shallow tower and gate
//!   dropout (the paper's model), shared-bottom at the same cost, one
//!   single-task model per task, MMoE without the tower (position absent),
//!   MMoE with position as a plain input, MMoE without gate dropout.
//! - **Gate dropout and polarisation** ([`polarisation`]): several seeds
//!   with and without gate dropout; how many gates polarise.
//! - **Task conflict** ([`conflict_sweep`]): synthetic worlds that differ only
//!   in the conflict κ between engagement and satisfaction, MMoE vs
//!   shared-bottom vs single-task on each.

use std::{fmt::Write as _, path::Path, time::Instant};

use serde::Serialize;
use watchnext_core::{datadir::DataDir, model::TaskKind};
use watchnext_feedback::{FeedbackLog, LogOptions};
use watchnext_world::{LoggingPolicy, World, WorldConfig};

use crate::{
    config::{Architecture, PositionMode, TrainerConfig},
    evaluate::{self, TaskMetric},
    model::Model,
    pipeline::{self, PipelineError, Split},
    train::TrainOptions,
};

/// One trained and scored variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub name: String,
    /// Per task, from the exported graph on the test period.
    pub metrics: Vec<TaskMetric>,
    pub polarised_gates: usize,
    pub gates: usize,
    /// NDCG@10 of the click prediction against true relevance (world data).
    pub ndcg_at_10: Option<f64>,
    /// Mean |learned − true| examination ratio over devices (tower variants).
    pub bias_error: Option<f64>,
    pub best_epoch: usize,
    pub seconds: f64,
}

/// A named configuration to compare.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub config: TrainerConfig,
    /// Train one model per task and report each task from its own model.
    pub single_task: bool,
}

/// The baseline set of the issue, derived from `base`.
pub fn baselines(base: &TrainerConfig) -> Vec<Variant> {
    let v = |name: &str, f: &dyn Fn(&mut TrainerConfig), single_task: bool| {
        let mut config = base.clone();
        f(&mut config);
        Variant { name: name.into(), config, single_task }
    };
    vec![
        v("MMoE + shallow tower + gate dropout", &|_| {}, false),
        v("shared-bottom (same cost)", &|c| c.architecture = Architecture::SharedBottom, false),
        v("single-task models", &|c| c.architecture = Architecture::SharedBottom, true),
        v("MMoE, no tower (position absent)", &|c| c.position_mode = PositionMode::Absent, false),
        v("MMoE, position as plain input", &|c| c.position_mode = PositionMode::PlainInput, false),
        v("MMoE, no gate dropout", &|c| c.gate_dropout = 0.0, false),
    ]
}

/// What one trained model scored.
struct Scored {
    metrics: Vec<TaskMetric>,
    polarised: usize,
    gates: usize,
    ndcg: Option<f64>,
    bias: Option<f64>,
    best_epoch: usize,
}

fn score_one(
    config: &TrainerConfig,
    split: &Split,
    world: Option<&World>,
    dir: &Path,
) -> Result<Scored, PipelineError> {
    let (model, report) = pipeline::fit(config, split, &TrainOptions::default())?;
    let (manifest, metrics, gates, predictions) =
        pipeline::export_and_score(&model, dir, "compare", Default::default(), &split.train, &split.test)?;
    let polarised = gates.iter().filter(|g| g.polarised).count();
    let mut ndcg = None;
    let mut bias = None;
    if let Some(world) = world {
        if let Some(click) = manifest.tasks.iter().position(|t| t.name == "click") {
            let t = manifest.tasks.len();
            let scores: Vec<f32> = (0..split.test.len).map(|i| predictions.values[i * t + click]).collect();
            ndcg = evaluate::ndcg_vs_truth(world, &split.test, &scores, 10);
        }
        bias = bias_error(&model, &split.test, world);
    }
    Ok(Scored { metrics, polarised, gates: gates.len(), ndcg, bias, best_epoch: report.best_epoch })
}

fn bias_error(model: &Model, rows: &crate::dataset::Examples, world: &World) -> Option<f64> {
    let tower = model.bias_tower()?;
    let top = model.config.max_position.min(world.config().list_size);
    let errors: Vec<f64> =
        evaluate::bias_curves(&tower, rows, Some(world), top).iter().filter_map(|c| c.mean_abs_error).collect();
    (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
}

/// Trains and scores every variant on `split`; models go under `work_dir`.
pub fn compare(
    split: &Split,
    world: Option<&World>,
    variants: &[Variant],
    work_dir: &Path,
    progress: bool,
) -> Result<Vec<VariantResult>, PipelineError> {
    let mut out = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let started = Instant::now();
        if progress {
            eprintln!("[{}/{}] training {}", i + 1, variants.len(), variant.name);
        }
        let dir = work_dir.join(format!("variant-{i}"));
        let result = if variant.single_task {
            let mut metrics = Vec::new();
            let mut ndcg = None;
            let mut best = 0;
            for (k, task) in variant.config.tasks.iter().enumerate() {
                let mut config = variant.config.clone();
                config.tasks = vec![task.clone()];
                if config.position_mode == PositionMode::ShallowTower && !task.debias {
                    config.position_mode = PositionMode::Absent;
                }
                let sub = task_split(split, k);
                let scored = score_one(&config, &sub, world, &dir.join(&task.name))?;
                metrics.extend(scored.metrics);
                if task.name == "click" {
                    ndcg = scored.ndcg;
                }
                best = best.max(scored.best_epoch);
            }
            VariantResult {
                name: variant.name.clone(),
                metrics,
                polarised_gates: 0,
                gates: 0,
                ndcg_at_10: ndcg,
                bias_error: None,
                best_epoch: best,
                seconds: 0.0,
            }
        } else {
            let s = score_one(&variant.config, split, world, &dir)?;
            VariantResult {
                name: variant.name.clone(),
                metrics: s.metrics,
                polarised_gates: s.polarised,
                gates: s.gates,
                ndcg_at_10: s.ndcg,
                bias_error: s.bias,
                best_epoch: s.best_epoch,
                seconds: 0.0,
            }
        };
        out.push(VariantResult { seconds: started.elapsed().as_secs_f64(), ..result });
    }
    Ok(out)
}

/// The split with only task `k`'s label and mask columns.
fn task_split(split: &Split, k: usize) -> Split {
    let one = |ex: &crate::dataset::Examples| {
        let t = ex.tasks.len();
        let mut e = ex.clone();
        e.tasks = vec![ex.tasks[k].clone()];
        e.labels = (0..ex.len).map(|i| ex.labels[i * t + k]).collect();
        e.mask = (0..ex.len).map(|i| ex.mask[i * t + k]).collect();
        e
    };
    Split { train: one(&split.train), validation: one(&split.validation), test: one(&split.test) }
}

/// Polarised gates per seed with and without gate dropout.
#[derive(Debug, Clone, Serialize)]
pub struct PolarisationResult {
    pub seeds: Vec<u64>,
    pub with_dropout: Vec<usize>,
    pub without_dropout: Vec<usize>,
    pub gates_per_model: usize,
}

pub fn polarisation(
    split: &Split,
    base: &TrainerConfig,
    seeds: &[u64],
    work_dir: &Path,
    progress: bool,
) -> Result<PolarisationResult, PipelineError> {
    let mut with_dropout = Vec::new();
    let mut without_dropout = Vec::new();
    for &seed in seeds {
        for (dropout, out) in [(base.gate_dropout.max(0.1), &mut with_dropout), (0.0, &mut without_dropout)] {
            if progress {
                eprintln!("polarisation: seed {seed}, gate dropout {dropout}");
            }
            let config = TrainerConfig { seed, gate_dropout: dropout, ..base.clone() };
            let scored = score_one(&config, split, None, &work_dir.join(format!("seed-{seed}")))?;
            out.push(scored.polarised);
        }
    }
    Ok(PolarisationResult { seeds: seeds.to_vec(), with_dropout, without_dropout, gates_per_model: base.tasks.len() })
}

/// One world of the conflict sweep.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictResult {
    pub conflict: f64,
    pub results: Vec<VariantResult>,
}

/// Builds a synthetic world with conflict κ, logs `events` events of its
/// default policy into `dir` (a fresh data folder), and returns it.
pub fn world_data(dir: &Path, config: &WorldConfig, events: u64) -> Result<World, PipelineError> {
    let bad = |e: String| PipelineError::File { path: dir.to_owned(), problem: e };
    let world = World::build(config).map_err(|e| bad(e.to_string()))?;
    let data = DataDir::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
    config.write(&data.world_config()).map_err(|e| bad(e.to_string()))?;
    world.catalog().write(&data.catalog()).map_err(|e| bad(e.to_string()))?;
    let (log, _) = FeedbackLog::open(data.feedback_log(), LogOptions::default()).map_err(|e| bad(e.to_string()))?;
    let mut sink = log.bulk_writer();
    watchnext_world::generate_logs(&world, LoggingPolicy::default(), events, &mut sink, false)
        .map_err(|e| bad(e.to_string()))?;
    sink.finish().map_err(|e| bad(e.to_string()))?;
    Ok(world)
}

/// MMoE vs shared-bottom vs single-task on worlds differing only in κ.
pub fn conflict_sweep(
    world: &WorldConfig,
    conflicts: &[f64],
    events: u64,
    base: &TrainerConfig,
    work_dir: &Path,
    loader: &dyn pipeline::ExampleLoader,
    progress: bool,
) -> Result<Vec<ConflictResult>, PipelineError> {
    let variants: Vec<Variant> = baselines(base).into_iter().take(3).collect();
    let mut out = Vec::new();
    for &kappa in conflicts {
        let mut config = world.clone();
        config.response.conflict = kappa;
        let dir = work_dir.join(format!("conflict-{kappa}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| PipelineError::File { path: dir.clone(), problem: e.to_string() })?;
        }
        if progress {
            eprintln!("conflict κ = {kappa}: generating {events} events");
        }
        let w = world_data(&dir.join("data"), &config, events)?;
        let (split, _) = pipeline::load_split(&dir.join("data"), base, loader, false)?;
        let results = compare(&split, Some(&w), &variants, &dir.join("models"), progress)?;
        out.push(ConflictResult { conflict: kappa, results });
    }
    Ok(out)
}

fn metric_cell(m: Option<&TaskMetric>) -> String {
    match m {
        Some(m) if m.kind == TaskKind::Binary => m.auc.map_or("–".into(), |a| format!("{a:.4}")),
        Some(m) => m.mse.map_or("–".into(), |e| format!("{e:.4}")),
        None => "–".into(),
    }
}

/// A Markdown table of variant results (AUC for binary tasks, MSE for regression).
pub fn table(results: &[VariantResult], tasks: &[(String, TaskKind)]) -> String {
    let mut md = String::new();
    let heads: Vec<String> =
        tasks.iter().map(|(n, k)| format!("{n} {}", if *k == TaskKind::Binary { "AUC" } else { "MSE" })).collect();
    let _ = writeln!(md, "| variant | {} | NDCG@10 vs truth | bias error | polarised gates | s |", heads.join(" | "));
    let _ = writeln!(md, "|---|{}---:|---:|---:|---:|", "---:|".repeat(tasks.len()));
    for r in results {
        let cells: Vec<String> =
            tasks.iter().map(|(n, _)| metric_cell(r.metrics.iter().find(|m| &m.task == n))).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} |",
            r.name,
            cells.join(" | "),
            r.ndcg_at_10.map_or("–".into(), |v| format!("{v:.4}")),
            r.bias_error.map_or("–".into(), |v| format!("{v:.3}")),
            if r.gates > 0 { format!("{}/{}", r.polarised_gates, r.gates) } else { "–".into() },
            r.seconds
        );
    }
    md
}
