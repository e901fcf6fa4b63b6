//! The data commands: fill a data folder from the synthetic world or from
//! real data, and export it for analysis and training.
//!
//! ```text
//! watchnext world generate [--preset default] [--seed N] [--events N] [--policy popularity|random]
//! watchnext import movielens DIR | obd DIR | events FILE [--catalog FILE]
//! watchnext export events | training-rows [--out FILE]
//! ```
//! Every command works on `--data-dir` (layout in `watchnext_core::datadir`).
//! A generated or imported data set goes into an empty folder: mixing two
//! worlds, or a world and real data, in one log would make both useless.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use watchnext_core::{Config, catalog::Catalog, datadir::DataDir};
use watchnext_feedback::{FeedbackLog, JoinOptions, LogReader};
use watchnext_import::{EventsFormat, GenericOptions, MovieLensOptions, ObdOptions, OnError};
use watchnext_world::{LoggingPolicy, World, WorldConfig};

#[derive(Debug, Subcommand)]
pub enum WorldCommand {
    /// Build a synthetic world and write its catalogue, its config (the key
    /// to its ground truth) and logs of a logging policy into the data folder.
    Generate {
        /// toy (1k videos), default (20k videos, 5k users) or large (1M videos, 100k users).
        #[arg(long, default_value = "default")]
        preset: String,
        /// Random seed; the same seed gives byte-identical output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// The logging policy that ordered the lists users saw.
        #[arg(long, value_enum, default_value_t = PolicyArg::Popularity)]
        policy: PolicyArg,
        /// Noise of the popularity policy (Gumbel scale on log-popularity).
        #[arg(long, default_value_t = 1.0)]
        noise: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Noisy popularity order (a typical, biased production heuristic).
    Popularity,
    /// Uniformly random order (unbiased; known propensities).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    /// Stop at the first malformed line.
    Fail,
    /// Skip malformed lines, count them and report the first few.
    Skip,
}

impl From<OnErrorArg> for OnError {
    fn from(value: OnErrorArg) -> Self {
        match value {
            OnErrorArg::Fail => OnError::Fail,
            OnErrorArg::Skip => OnError::Skip,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// MovieLens in any GroupLens layout (ml-100k, ml-1m/10m .dat, ml-latest*/20m/25m .csv).
    Movielens {
        /// The folder holding the data set's files.
        dir: PathBuf,
        /// Sampled non-rated movies shown with each rated one (the click task's negatives).
        #[arg(long, default_value_t = 4)]
        negatives: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = OnErrorArg::Fail)]
        on_error: OnErrorArg,
    },
    /// An Open Bandit Dataset folder (<policy>/<campaign>/ with <campaign>.csv and item_context.csv).
    Obd {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = OnErrorArg::Fail)]
        on_error: OnErrorArg,
    },
    /// Your own events, CSV with a header or JSON Lines (format in the import crate's docs).
    Events {
        file: PathBuf,
        /// The catalogue: catalog.jsonl or CSV (video_id,title,topics,duration_seconds,upload_ms).
        #[arg(long)]
        catalog: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OnErrorArg::Fail)]
        on_error: OnErrorArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every event of the feedback log, one Parquet row per event.
    Events {
        /// Output file; default <data.dir>/exports/events.parquet.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Impressions joined with their later outcomes: labelled training rows.
    TrainingRows {
        /// Output file; default <data.dir>/exports/training_rows.parquet.
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long after an impression its outcomes still count.
        #[arg(long, default_value_t = 360)]
        window_minutes: u64,
    },
}

/// `watchnext eval`: a model (default) or the generators.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub model: crate::training::ModelEvalArgs,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Leave-last-out evaluation of every candidate generator, their union
    /// and a popularity baseline on the data folder's log (and, for a
    /// synthetic world, against its ground truth).
    Generators {
        /// Cut-offs K for HR@K and NDCG@K.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        k: Vec<usize>,
        /// At most this many held-out users.
        #[arg(long, default_value_t = 2_000)]
        users: usize,
    },
    /// The whole Recommend path replayed in-process on held-out data
    /// (leave-last-out and a time split): each generator alone, the merged
    /// candidates, the final list, baselines; HR/NDCG/MRR with intervals.
    Pipeline(crate::evaluation::PipelineArgs),
    /// A model directory on the data folder's test period (the default).
    Model(crate::training::ModelEvalArgs),
    /// Train the baselines, the gate-dropout seeds and the task-conflict
    /// sweep side by side and write a comparison report.
    Compare(crate::training::CompareArgs),
}

/// `watchnext eval ...`
pub fn eval(config: &Config, command: EvalCommand) -> anyhow::Result<()> {
    let EvalCommand::Generators { k, users } = command else {
        anyhow::bail!("`eval model` is handled by the training commands");
    };
    let data = DataDir::new(&config.data.dir);
    let catalog = std::sync::Arc::new(
        Catalog::read(&data.catalog()).with_context(|| format!("reading {}", data.catalog().display()))?,
    );
    let events: Vec<_> = reader(&data)?.map(|r| r.map(|(_, e)| e)).collect::<Result<_, _>>()?;
    let world = if data.world_config().is_file() {
        Some(World::build(&WorldConfig::read(&data.world_config())?)?)
    } else {
        None
    };
    let mut all = config.clone();
    all.server.role = watchnext_core::Role::All;
    let hosted = crate::generators::build_with(&all, false, false, None)?;
    let generators = hosted.all();
    let options = watchnext_eval::generators::EvalOptions { ks: k, max_cases: users, ..Default::default() };
    // Models (the sequence generator's) learn from the same training split
    // the other generators observe (nothing after each case's query watch).
    let (training, _) = watchnext_eval::generators::leave_last_out(&events, options.history_len);
    let training: Vec<watchnext_core::event::Event> = training.into_iter().cloned().collect();
    hosted.fit(&training, "evaluation's training split", true)?;
    let started = std::time::Instant::now();
    let report = watchnext_eval::generators::evaluate(&generators, &catalog, &events, world.as_ref(), &options);
    println!("{report}");
    println!("({} events, evaluated in {:.1}s)", events.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// For the demo: fills an empty data folder with the default synthetic
/// world (1M events of its popularity logging policy), as `world generate`
/// would; a folder that already has a catalogue is left as it is.
pub fn ensure_demo_world(config: &Config) -> anyhow::Result<()> {
    let data = DataDir::new(&config.data.dir);
    if data.catalog().is_file() {
        println!("data folder {}: using the catalogue and log already there", data.root().display());
        return Ok(());
    }
    println!("data folder {} is empty: generating the default synthetic world", data.root().display());
    world(
        config,
        WorldCommand::Generate {
            preset: "default".into(),
            seed: 1,
            events: 1_000_000,
            policy: PolicyArg::Popularity,
            noise: 1.0,
        },
    )
}

/// Opens the data folder's log and refuses one that already holds events.
fn empty_log(config: &Config) -> anyhow::Result<FeedbackLog> {
    let log = crate::app::open_feedback_log(config)?;
    if log.last_seq() > 0 {
        bail!(
            "{} already holds {} events; generate or import into an empty --data-dir",
            config.data.dir.display(),
            log.last_seq()
        );
    }
    Ok(log)
}

fn write_catalog(data: &DataDir, catalog: &Catalog) -> anyhow::Result<()> {
    catalog.write(&data.catalog()).with_context(|| format!("writing {}", data.catalog().display()))?;
    println!("catalogue: {} videos -> {}", catalog.len(), data.catalog().display());
    Ok(())
}

/// `watchnext world ...`
pub fn world(config: &Config, command: WorldCommand) -> anyhow::Result<()> {
    match command {
        WorldCommand::Generate { preset, seed, events, policy, noise } => {
            let world_config = WorldConfig::preset(&preset)
                .ok_or_else(|| anyhow::anyhow!("unknown preset `{preset}`; expected toy, default or large"))?
                .with_seed(seed);
            let policy = match policy {
                PolicyArg::Popularity => LoggingPolicy::PopularityNoise { noise },
                PolicyArg::Random => LoggingPolicy::RandomOrder,
            };
            let data = DataDir::new(&config.data.dir);
            let log = empty_log(config)?;
            let started = std::time::Instant::now();
            let world = World::build(&world_config)?;
            println!(
                "world: {} videos, {} users, seed {seed} (built in {:.1}s)",
                world.num_videos(),
                world.num_users(),
                started.elapsed().as_secs_f64()
            );
            world_config.write(&data.world_config())?;
            write_catalog(&data, world.catalog())?;
            let mut sink = log.bulk_writer();
            let summary = watchnext_world::generate_logs(&world, policy, events, &mut sink, true)?;
            let written = sink.finish()?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "logs: {} events ({} impressions, {} requests) under {} -> {} in {secs:.1}s ({:.0} events/s)",
                written.events,
                summary.impressions,
                summary.requests,
                summary.policy,
                data.feedback_log().display(),
                written.events as f64 / secs.max(1e-9)
            );
            Ok(())
        }
    }
}

/// `watchnext import ...`
pub fn import(config: &Config, command: ImportCommand) -> anyhow::Result<()> {
    let data = DataDir::new(&config.data.dir);
    let log = empty_log(config)?;
    let mut sink = log.bulk_writer();
    let started = std::time::Instant::now();
    let imported = match command {
        ImportCommand::Movielens { dir, negatives, seed, on_error } => {
            let options = MovieLensOptions { negatives, seed, on_error: on_error.into() };
            watchnext_import::import_movielens(&dir, &options, &mut sink)
        }
        ImportCommand::Obd { dir, on_error } => {
            watchnext_import::import_obd(&dir, &ObdOptions { on_error: on_error.into() }, &mut sink)
        }
        ImportCommand::Events { file, catalog, on_error } => {
            let options = GenericOptions { on_error: on_error.into(), format: EventsFormat::from_path(&file), catalog };
            watchnext_import::import_generic(&file, &options, &mut sink)
        }
    }?;
    let written = sink.finish()?;
    write_catalog(&data, &imported.catalog)?;
    println!("{}", imported.report);
    println!(
        "log: {} events -> {} in {:.1}s",
        written.events,
        data.feedback_log().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn output(data: &DataDir, out: Option<PathBuf>, name: &str) -> PathBuf {
    out.unwrap_or_else(|| data.exports().join(name))
}

pub(crate) fn reader(data: &DataDir) -> anyhow::Result<LogReader> {
    let dir = data.feedback_log();
    if !dir.is_dir() {
        bail!("{} has no feedback log; generate or import data first", data.root().display());
    }
    Ok(LogReader::open(&dir, 1)?)
}

/// `watchnext export ...`
pub fn export(config: &Config, command: ExportCommand) -> anyhow::Result<()> {
    let data = DataDir::new(&config.data.dir);
    let started = std::time::Instant::now();
    match command {
        ExportCommand::Events { out } => {
            let path = output(&data, out, "events.parquet");
            ensure_parent(&path)?;
            let mut log = reader(&data)?;
            let rows = watchnext_feedback::parquet::export_events(log.by_ref(), &path)?;
            println!("exported {rows} events -> {} in {:.1}s", path.display(), started.elapsed().as_secs_f64());
            damage_is_an_error(&log)?;
        }
        ExportCommand::TrainingRows { out, window_minutes } => {
            let path = output(&data, out, "training_rows.parquet");
            ensure_parent(&path)?;
            let window_ms = i64::try_from(window_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
            let options = JoinOptions { attribution_window_ms: window_ms, ..JoinOptions::default() };
            let mut log = reader(&data)?;
            let summary = watchnext_feedback::parquet::write_training_set(log.by_ref(), &path, options)?;
            println!(
                "joined {} events: {} training rows from {} impressions; {} outcomes matched, {} unmatched (no \
                 impression within the window), {} organic events, {} rows emitted early (pending cap)",
                summary.events,
                summary.rows,
                summary.impressions,
                summary.matched_outcomes,
                summary.unmatched_outcomes,
                summary.organic_events,
                summary.evicted
            );
            println!("-> {} in {:.1}s", path.display(), started.elapsed().as_secs_f64());
            damage_is_an_error(&log)?;
        }
    }
    Ok(())
}

/// After an export: damage the reader skipped is listed and makes the
/// command fail, so a script never takes a short export for a whole one.
fn damage_is_an_error(log: &LogReader) -> anyhow::Result<()> {
    if log.problems().is_empty() {
        return Ok(());
    }
    for p in log.problems() {
        eprintln!("damaged log: {} at byte {}: {}", p.segment.display(), p.offset, p.problem);
    }
    bail!(
        "the feedback log is damaged: {} acknowledged record(s) could not be read (listed above); the export holds \
         everything else. Keep the `.damaged-*` copies and the segments named above for inspection",
        log.lost_records()
    )
}

fn ensure_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}
