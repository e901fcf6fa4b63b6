//! `watchnext train`, `watchnext train-sequence` and `watchnext eval
//! [model]`: the trainer's pipelines on the configured data folder, with the
//! `[trainer]` / `[sequence_trainer]` configuration sections and a few flags
//! on top.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use watchnext_core::{Config, datadir::DataDir};
use watchnext_trainer::{
    config::{Architecture, PositionMode, TrainerConfig},
    pipeline::{self, TrainRun},
    sequence::{SequenceTrainerConfig, Sequences, train_sequence, write_sequence_model},
};

/// `watchnext train` flags (each overrides the `[trainer]` section).
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model directory to write (default: <data>/models/<version>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model version (default: <architecture>-<UTC time>).
    #[arg(long)]
    pub version: Option<String>,
    /// trainer.architecture
    #[arg(long, value_enum)]
    pub architecture: Option<ArchitectureArg>,
    /// trainer.position_mode
    #[arg(long, value_enum)]
    pub position: Option<PositionArg>,
    /// trainer.max_epochs
    #[arg(long)]
    pub epochs: Option<usize>,
    /// trainer.seed
    #[arg(long)]
    pub seed: Option<u64>,
    /// trainer.gate_dropout
    #[arg(long)]
    pub gate_dropout: Option<f32>,
    /// trainer.precision: `int8` writes the serving graph's big matrix
    /// products in 8-bit integers, calibrated on training rows (about twice
    /// as fast; the fp32 graph's test figures are printed beside it).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Continue from the model directory's checkpoint (same config and data).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The demo's runs: a given version and epochs, everything else from config.
    pub fn for_demo(version: &str, epochs: usize) -> Self {
        Self {
            out: None,
            version: Some(version.to_owned()),
            architecture: None,
            position: None,
            epochs: Some(epochs),
            seed: None,
            gate_dropout: None,
            precision: None,
            resume: false,
            quiet: false,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArchitectureArg {
    Mmoe,
    SharedBottom,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    Int8,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PositionArg {
    ShallowTower,
    PlainInput,
    Absent,
}

/// `watchnext train-sequence` flags (each overrides `[sequence_trainer]`).
#[derive(Debug, Args)]
pub struct TrainSequenceArgs {
    /// Model directory to write (default: <data>/sequence/<version>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model version (default: seq-<UTC time>).
    #[arg(long)]
    pub version: Option<String>,
    /// sequence_trainer.max_epochs
    #[arg(long)]
    pub epochs: Option<usize>,
    /// sequence_trainer.seed
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The `[sequence_trainer]` section.
pub fn sequence_trainer_config(config: &Config) -> anyhow::Result<SequenceTrainerConfig> {
    let c: SequenceTrainerConfig = match &config.sequence_trainer {
        serde_json::Value::Null => SequenceTrainerConfig::default(),
        v => serde_json::from_value(v.clone())
            .map_err(|e| anyhow::anyhow!("configuration key `sequence_trainer`: {e}"))?,
    };
    c.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    Ok(c)
}

/// `watchnext train-sequence`: the sequence model on every watch in the
/// data folder's log, written where the sequence generator looks.
pub fn train_sequence_command(config: &Config, args: TrainSequenceArgs) -> anyhow::Result<PathBuf> {
    let mut c = sequence_trainer_config(config)?;
    if let Some(e) = args.epochs {
        c.max_epochs = e;
    }
    if let Some(s) = args.seed {
        c.seed = s;
    }
    c.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let data = DataDir::new(&config.data.dir);
    let version = args.version.unwrap_or_else(|| format!("seq-{}", utc_stamp()));
    let out = args.out.unwrap_or_else(|| data.sequence_models().join(&version));
    if out.exists() {
        anyhow::bail!("{} already exists; choose another --version or --out", out.display());
    }
    let started = std::time::Instant::now();
    let mut failed = None;
    let events = crate::data::reader(&data)?.map_while(|r| match r {
        Ok((_, e)) => Some(e),
        Err(err) => {
            failed = Some(err);
            None
        }
    });
    let sequences = Sequences::from_events(events, &c);
    if let Some(err) = failed {
        return Err(anyhow::Error::new(err).context(format!("reading the feedback log in {}", data.root().display())));
    }
    if !args.quiet {
        println!(
            "sequence data: {} watches, {} users, {} videos, {} training examples, {} validation users",
            sequences.watches,
            sequences.users.len(),
            sequences.videos.len(),
            sequences.examples.len(),
            sequences.validation.len()
        );
    }
    let (net, report) = train_sequence(&sequences, &c, !args.quiet)?;
    write_sequence_model(&out, &net, &sequences, &version, &report)?;
    let best = report.epochs.get(report.best_epoch.saturating_sub(1));
    let hits: Vec<String> = best
        .map(|e| report.ks.iter().zip(&e.validation_hit).map(|(k, h)| format!("HR@{k} {h:.4}")).collect())
        .unwrap_or_default();
    println!(
        "trained sequence model {version} in {:.0}s: best epoch {} of {}, validation {}",
        started.elapsed().as_secs_f64(),
        report.best_epoch,
        report.epochs.len(),
        hits.join(", ")
    );
    println!(
        "model directory: {} (a running server loads it within generators.sequence.model_poll_seconds)",
        out.display()
    );
    Ok(out)
}

/// `watchnext eval model` flags.
#[derive(Debug, Args, Default)]
pub struct ModelEvalArgs {
    /// Model directory (default: the newest under <data>/models).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The `[trainer]` section as a [`TrainerConfig`].
pub fn trainer_config(config: &Config) -> anyhow::Result<TrainerConfig> {
    let c: TrainerConfig = match &config.trainer {
        serde_json::Value::Null => TrainerConfig::default(),
        v => serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("configuration key `trainer`: {e}"))?,
    };
    Ok(c)
}

fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3_600, secs % 3_600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z")
}

/// Loads ONNX Runtime as the `[onnx]` section says (library path…) before
/// the pipeline scores exported graphs with it (the first load wins).
fn init_onnx(config: &Config) -> anyhow::Result<()> {
    watchnext_onnx::OnnxRuntime::init(&config.onnx).context("loading ONNX Runtime (run scripts/setup.sh)")?;
    Ok(())
}

/// `watchnext train`.
pub fn train(config: &Config, args: TrainArgs) -> anyhow::Result<()> {
    init_onnx(config)?;
    let mut trainer = trainer_config(config)?;
    if let Some(a) = args.architecture {
        trainer.architecture = match a {
            ArchitectureArg::Mmoe => Architecture::Mmoe,
            ArchitectureArg::SharedBottom => Architecture::SharedBottom,
        };
    }
    if let Some(p) = args.position {
        trainer.position_mode = match p {
            PositionArg::ShallowTower => PositionMode::ShallowTower,
            PositionArg::PlainInput => PositionMode::PlainInput,
            PositionArg::Absent => PositionMode::Absent,
        };
    }
    if let Some(e) = args.epochs {
        trainer.max_epochs = e;
    }
    if let Some(s) = args.seed {
        trainer.seed = s;
    }
    if let Some(g) = args.gate_dropout {
        trainer.gate_dropout = g;
    }
    if let Some(p) = args.precision {
        trainer.precision = match p {
            PrecisionArg::Fp32 => watchnext_trainer::config::Precision::Fp32,
            PrecisionArg::Int8 => watchnext_trainer::config::Precision::Int8,
        };
    }
    trainer.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let data = DataDir::new(&config.data.dir);
    let kind = match trainer.architecture {
        Architecture::Mmoe => "mmoe",
        Architecture::SharedBottom => "shared-bottom",
    };
    let version = args.version.unwrap_or_else(|| format!("{kind}-{}", utc_stamp()));
    let out = args.out.unwrap_or_else(|| data.models().join(&version));
    let run = TrainRun {
        config: trainer,
        data_dir: data.root().to_owned(),
        out_dir: out.clone(),
        model_version: version,
        progress: !args.quiet,
        checkpoint_dir: None,
        resume: args.resume,
    };
    let loader = crate::examples::ServingExamples { config };
    let outcome =
        pipeline::run_training(&run, &loader).with_context(|| format!("training on {}", data.root().display()))?;
    println!(
        "trained {} on {} rows ({} validation, {} test) in {:.0}s; best epoch {} of {}",
        outcome.model_version,
        outcome.train_rows,
        outcome.validation_rows,
        outcome.test_rows,
        outcome.seconds,
        outcome.report.best_epoch,
        outcome.report.epochs.len()
    );
    if let Some(r) = &outcome.dataset.replay {
        println!(
            "  examples: a replay of the pipeline over {} moments ({} candidates each; the video watched next was \
             among them in {:.1}% of the moments with one), {} candidate rows, {} served rows ({} re-checked, {} \
             differ), {} logged rows",
            r.replayed_moments,
            r.mean_candidates.round(),
            100.0 * r.first_positive_in_candidates as f64 / r.with_positive.max(1) as f64,
            r.candidate_positives + r.candidate_negatives,
            r.served_rows,
            r.served_verified,
            r.served_mismatches,
            r.logged_rows
        );
    }
    let manifest = watchnext_core::model::ModelManifest::read(&out)?;
    if manifest.precision != "fp32" {
        println!(
            "  serving graph: {} (calibrated on {} training rows); the fp32 graph's figures in brackets",
            manifest.precision,
            manifest.metrics.get("calibration.rows").copied().unwrap_or(0.0)
        );
    }
    let fp32 = |name: &str| {
        manifest.metrics.get(&format!("fp32.{name}")).map_or_else(String::new, |v| format!(" [fp32 {v:.4}]"))
    };
    for m in &outcome.test_metrics {
        match (m.auc, m.mse) {
            (Some(auc), _) => {
                println!("  {:<8} test AUC {auc:.4}{}  ({} rows)", m.task, fp32(&format!("{}.auc", m.task)), m.rows);
            }
            (None, Some(mse)) => {
                println!("  {:<8} test MSE {mse:.4}{}  ({} rows)", m.task, fp32(&format!("{}.mse", m.task)), m.rows);
            }
            _ => println!("  {:<8} no test labels", m.task),
        }
    }
    let polarised = outcome.gates.iter().filter(|g| g.polarised).count();
    if !outcome.gates.is_empty() {
        println!("  gates: {polarised} of {} polarised", outcome.gates.len());
    }
    println!("model directory: {}", out.display());
    println!("next: watchnext eval --model {}", out.display());
    Ok(())
}

/// The newest model directory (by manifest creation time) under `models`.
fn newest_model(models: &Path) -> anyhow::Result<PathBuf> {
    watchnext_ranker::newest_model_dir(models)
        .map(|(dir, _)| dir)
        .ok_or_else(|| anyhow::anyhow!("{}: no model directory found; run `watchnext train` first", models.display()))
}

/// `watchnext eval [model]`.
pub fn eval_model(config: &Config, args: ModelEvalArgs) -> anyhow::Result<()> {
    init_onnx(config)?;
    let data = DataDir::new(&config.data.dir);
    let dir = match args.model {
        Some(dir) => dir,
        None => newest_model(&data.models())?,
    };
    let loader = crate::examples::ServingExamples { config };
    let outcome = pipeline::run_eval(&dir, data.root(), &loader, !args.quiet)
        .with_context(|| format!("evaluating {} on {}", dir.display(), data.root().display()))?;
    println!("{} on {} test rows:", outcome.model_version, outcome.test_rows);
    for m in &outcome.metrics {
        match (m.auc, m.mse) {
            (Some(auc), _) => println!("  {:<8} AUC {auc:.4}", m.task),
            (None, Some(mse)) => println!("  {:<8} MSE {mse:.4}", m.task),
            _ => println!("  {:<8} no labels", m.task),
        }
    }
    for g in &outcome.gates {
        println!(
            "  gate {:<8} entropy {:.3}, {} experts < 1%{}",
            g.task,
            g.entropy,
            g.below_one_percent,
            if g.polarised { " (polarised)" } else { "" }
        );
    }
    for c in &outcome.bias_curves {
        let learned = |p: usize| c.learned.get(p - 1).map_or_else(|| "–".to_owned(), |x| format!("{x:.3}"));
        match c.mean_abs_error {
            Some(e) => println!(
                "  bias {:<8} learned p2 {} p5 {}, mean |learned − true| {e:.4}",
                c.device,
                learned(2),
                learned(5)
            ),
            None => println!(
                "  bias {:<8} learned p2 {} p5 {} ({} test rows with a position)",
                c.device,
                learned(2),
                learned(5),
                c.rows
            ),
        }
    }
    if let (Some(m), Some(l)) = (outcome.ndcg_model, outcome.ndcg_logged) {
        println!("  NDCG@10 vs true relevance: model {m:.4}, logged order {l:.4}");
    }
    println!("report: {}", outcome.report.display());
    Ok(())
}

/// `watchnext eval compare` flags.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// trainer.max_epochs for every variant.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seeds of the gate-dropout polarisation runs (with and without dropout
    /// each); `--seeds` alone skips them.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Conflict levels κ of the synthetic-world sweep; `--conflicts` alone skips it.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "0,0.5,1")]
    pub conflicts: Vec<f64>,
    /// World preset of the sweep's worlds.
    #[arg(long, default_value = "toy")]
    pub conflict_preset: String,
    /// Events logged in each of the sweep's worlds.
    #[arg(long, default_value_t = 300_000)]
    pub conflict_events: u64,
    /// Working and report folder (default: <data>/reports/compare).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

/// `watchnext eval compare`: baselines, gate-dropout polarisation and the
/// task-conflict sweep, side by side; writes `compare.md` (+ JSON).
pub fn compare(config: &Config, args: CompareArgs) -> anyhow::Result<()> {
    init_onnx(config)?;
    use watchnext_trainer::experiments;
    let mut base = trainer_config(config)?;
    if let Some(e) = args.epochs {
        base.max_epochs = e;
    }
    base.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let data = DataDir::new(&config.data.dir);
    let out = args.out.unwrap_or_else(|| data.root().join("reports").join("compare"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let progress = !args.quiet;
    let started = std::time::Instant::now();
    let loader = crate::examples::ServingExamples { config };
    let (split, summary) = pipeline::load_split(data.root(), &base, &loader, progress)?;
    let world = if data.world_config().is_file() {
        Some(watchnext_world::World::build(&watchnext_world::WorldConfig::read(&data.world_config())?)?)
    } else {
        None
    };
    let tasks: Vec<(String, watchnext_core::model::TaskKind)> =
        base.tasks.iter().map(|t| (t.name.clone(), t.kind)).collect();
    let mut md = format!(
        "# Side-by-side comparison on {}\n\n{} rows ({} train, {} validation, {} test, time ordered); every variant \
         trained on the same split and scored by running its exported ONNX graph on the test period. Up to {} epochs \
         each with early stopping.\n\n## Baselines\n\n",
        data.root().display(),
        summary.rows,
        split.train.len,
        split.validation.len,
        split.test.len,
        base.max_epochs
    );
    let baselines =
        experiments::compare(&split, world.as_ref(), &experiments::baselines(&base), &out.join("baselines"), progress)?;
    md.push_str(&experiments::table(&baselines, &tasks));
    println!("{}", experiments::table(&baselines, &tasks));

    let mut polar = None;
    if !args.seeds.is_empty() {
        let p = experiments::polarisation(&split, &base, &args.seeds, &out.join("seeds"), progress)?;
        md.push_str(&format!(
            "\n## Gate dropout and polarisation\n\nPolarised gates (at most one expert ≥ 1%) of {} per model, by \
             seed.\n\n| seed | with gate dropout | without |\n|---:|---:|---:|\n",
            p.gates_per_model
        ));
        for (i, seed) in p.seeds.iter().enumerate() {
            md.push_str(&format!("| {seed} | {} | {} |\n", p.with_dropout[i], p.without_dropout[i]));
        }
        println!("polarised gates with dropout {:?}, without {:?}", p.with_dropout, p.without_dropout);
        polar = Some(p);
    }
    let mut sweep = Vec::new();
    if !args.conflicts.is_empty() {
        let world_config = watchnext_world::WorldConfig::preset(&args.conflict_preset)
            .ok_or_else(|| anyhow::anyhow!("unknown world preset `{}`", args.conflict_preset))?;
        sweep = experiments::conflict_sweep(
            &world_config,
            &args.conflicts,
            args.conflict_events,
            &base,
            &out.join("conflict"),
            &loader,
            progress,
        )?;
        md.push_str(&format!(
            "\n## Task conflict\n\nWorlds of preset `{}` ({} events each) that differ only in the conflict κ between \
             engagement and satisfaction (κ = 0: clickbait does not exist; κ = 1: it buys clicks at the cost of \
             satisfaction).\n",
            args.conflict_preset, args.conflict_events
        ));
        for c in &sweep {
            md.push_str(&format!("\n### κ = {}\n\n{}", c.conflict, experiments::table(&c.results, &tasks)));
        }
    }
    md.push_str(&format!("\n(total {:.0} s)\n", started.elapsed().as_secs_f64()));
    let report = out.join("compare.md");
    watchnext_core::fsutil::write_atomic(&report, md.as_bytes())
        .with_context(|| format!("writing {}", report.display()))?;
    let json = serde_json::json!({ "baselines": baselines, "polarisation": polar, "conflict": sweep });
    let json_path = out.join("compare.json");
    watchnext_core::fsutil::write_atomic(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("report: {}", report.display());
    Ok(())
}
