//! The `watchnext` command line.
//!
//! ```text
//! watchnext serve   [--role all|recommender|ranker|topic|cowatch|sequence|context|feedback]
//! watchnext demo    the main job on the embedded default (all-in-one)
//! watchnext world generate | import ... | export ...   data (see `data`)
//! watchnext train   the ranking model → <data>/models/<version>
//! watchnext train-sequence   the sequence generator's model → <data>/sequence/<version>
//! watchnext eval    [--model DIR] | generators   offline evaluation
//! watchnext loadtest [--addr URL --rate R --duration S]   open-loop load test of Recommend
//! watchnext health  [--addr URL]   health of every service of a running server
//! ```
//! Global flags (`--config`, `--listen`, ...) are the last configuration
//! layer, above the file and `WATCHNEXT__…` variables.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use watchnext_core::{Config, Role};

use crate::{app, health};

#[derive(Debug, Parser)]
#[command(name = "watchnext", version, about = "What to watch next: a multitask video recommendation pipeline")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Configuration flags shared by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (see deploy/watchnext.example.toml).
    #[arg(long, global = true, env = "WATCHNEXT_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address (server.listen); port 0 picks a free port.
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Prometheus listen address (server.metrics_listen); "" disables it.
    #[arg(long, global = true)]
    pub metrics_listen: Option<String>,
    /// Data folder (data.dir).
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
    /// text or json (log.format).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// tracing filter, e.g. info or debug (log.level).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every role in one process (default) or one role.
    Serve {
        /// The role to serve (server.role).
        #[arg(long)]
        role: Option<Role>,
    },
    /// Run the main job on the embedded default: fill an empty data folder
    /// with the synthetic world, train the sequence and ranking models,
    /// start the all-in-one server, show what it recommends, play the
    /// simulated users against it (an A/B test against the logging policy),
    /// retrain on what was served, hot-reload, play again, and report.
    Demo(DemoArgs),
    /// The synthetic world: generate a catalogue and logs with ground truth.
    World {
        #[command(subcommand)]
        command: crate::data::WorldCommand,
        #[command(flatten)]
        publish: crate::stream_sync::PublishArg,
    },
    /// Import real data (MovieLens, Open Bandit, your own CSV/JSONL) into the data folder.
    Import {
        #[command(subcommand)]
        command: crate::data::ImportCommand,
        #[command(flatten)]
        publish: crate::stream_sync::PublishArg,
    },
    /// Export the feedback log to Parquet: raw events, or joined training rows.
    Export {
        #[command(subcommand)]
        command: crate::data::ExportCommand,
        #[command(flatten)]
        source: crate::stream_sync::FromStreamArg,
    },
    /// Move events between the NATS stream (event_log.backend = "nats") and
    /// the data folder's log: `pull` before train/export/eval, `push` after
    /// import/world generate.
    #[command(subcommand)]
    Stream(crate::stream_sync::StreamCommand),
    /// Train the multi-task ranking model on the data folder's log and write
    /// a model directory (model.onnx + manifest).
    Train(crate::training::TrainArgs),
    /// Train the sequence generator's model (next-watch prediction over each
    /// user's watches) and write it where the sequence generator loads it.
    TrainSequence(crate::training::TrainSequenceArgs),
    /// Check a GPU node: run the ranking model on each execution provider
    /// (cpu, cuda, tensorrt) with the same rows, time them and compare the
    /// predictions with the CPU's; fails when a provider is missing or
    /// disagrees (scripts/gpu-check.sh).
    CheckProviders(crate::providers::CheckProvidersArgs),
    /// Offline evaluation: the newest model (default) or `--model DIR` on the
    /// data folder's test period, or `eval generators`.
    Eval(crate::data::EvalArgs),
    /// Open-loop load test of a running server's Recommend (fixed arrival
    /// rate, latency from the scheduled time, percentiles), with requests
    /// drawn from the data folder.
    Loadtest(crate::loadtest::LoadtestArgs),
    /// Ask a running server for the health of each of its services.
    Health {
        /// The server's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
}

/// `watchnext demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated requests per A/B phase.
    #[arg(long, default_value_t = 3_000)]
    pub requests: usize,
    /// Epochs of each ranking-model training run.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Keep serving after the report, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

impl GlobalArgs {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let flags = [
            ("server.listen", &self.listen),
            ("server.metrics_listen", &self.metrics_listen),
            ("data.dir", &self.data_dir),
            ("log.format", &self.log_format),
            ("log.level", &self.log_level),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                out.push((key, v.clone()));
            }
        }
        out
    }

    /// Loads the layered configuration with these flags on top.
    pub fn load(&self, extra: &[(&'static str, String)]) -> anyhow::Result<Config> {
        let mut overrides = self.overrides();
        overrides.extend(extra.iter().cloned());
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

/// On SIGHUP, reads the configuration again (file, environment, the same
/// flags) and applies its combiner weights without a restart. The handler is
/// registered before this returns: call it before announcing the server, or
/// a SIGHUP right after the announce line would take the default action and
/// end the process.
fn reload_on_sighup(
    global: GlobalArgs,
    extra: Vec<(&'static str, String)>,
    recommender: Option<std::sync::Arc<watchnext_recommender::Recommender>>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: combiner weights reload only through Admin.SetCombinerWeights");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // A role without a recommender has nothing SIGHUP reloads,
                // but the signal must not end it (its default action).
                let Some(recommender) = &recommender else {
                    tracing::info!("SIGHUP: this role has no combiner weights to reload");
                    continue;
                };
                match global.load(&extra).and_then(|c| app::reload_combiner(recommender, &c)) {
                    Ok(()) => {}
                    Err(err) => {
                        tracing::error!(%err, "SIGHUP: the configuration was not applied; the running weights stay")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (global, extra, recommender);
}

/// For the demo: trains the sequence generator's model when the data folder
/// has none yet.
fn ensure_sequence_model(config: &Config) -> anyhow::Result<()> {
    let root = watchnext_core::datadir::DataDir::new(&config.data.dir).sequence_models();
    if watchnext_sequence::model::newest_model_dir(&root).is_some() {
        return Ok(());
    }
    println!("no sequence model yet: training one on the log (watchnext train-sequence)");
    let args = crate::training::TrainSequenceArgs { out: None, version: None, epochs: None, seed: None, quiet: false };
    crate::training::train_sequence_command(config, args).map(|_| ())
}

/// For the demo: trains a ranking model when the data folder has none.
fn ensure_ranking_model(config: &Config, epochs: usize) -> anyhow::Result<()> {
    let models = watchnext_core::datadir::DataDir::new(&config.data.dir).models();
    if watchnext_ranker::newest_model_dir(&models).is_some() {
        return Ok(());
    }
    println!("no ranking model yet: training one on the log (watchnext train --epochs {epochs})");
    crate::training::train(config, crate::training::TrainArgs::for_demo("mmoe-demo-1", epochs))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("watchnext-rt")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { role } => {
                let extra: Vec<_> = role.map(|r| ("server.role", r.name().to_owned())).into_iter().collect();
                let config = cli.global.load(&extra)?;
                crate::telemetry::init_logging(&config.log);
                let running = app::start(config).await?;
                // Every handler before the announce line: a signal right
                // after it must find them (issue 14).
                let signals = app::ShutdownSignals::register();
                reload_on_sighup(cli.global, extra, running.recommender.clone());
                announce(&running);
                running.until_signal(signals).await
            }
            Command::Demo(args) => {
                let mut config = cli.global.load(&[("server.role", "all".to_owned())])?;
                crate::telemetry::init_logging(&config.log);
                if config.admin.token.is_empty() {
                    // The demo is for trying things: give it a working Admin
                    // with a one-off token rather than a disabled one.
                    config.admin.token = uuid::Uuid::new_v4().simple().to_string();
                    println!("Admin token for this run: {}", config.admin.token);
                }
                {
                    let config = config.clone();
                    let epochs = args.epochs;
                    tokio::task::block_in_place(|| {
                        crate::data::ensure_demo_world(&config)?;
                        ensure_sequence_model(&config)?;
                        ensure_ranking_model(&config, epochs)
                    })?;
                }
                let running = app::start(config.clone()).await?;
                announce(&running);
                let url = format!("http://{}", running.addr);
                crate::demo::show_candidates(&url, &config.data.dir).await?;
                crate::demo::closed_loop(&config, &url, args.requests, args.epochs).await?;
                let report = health::check(&url, &config.tls).await?;
                println!("{report}");
                if args.serve {
                    // Registered only now: until here Ctrl-C ends the demo at once.
                    let signals = app::ShutdownSignals::register();
                    println!("watchnext is serving on {} (Ctrl-C to stop).", running.addr);
                    println!("Try:  grpcurl -plaintext {} list", running.addr);
                    running.until_signal(signals).await
                } else {
                    println!("Done. `watchnext demo --serve` keeps the server up afterwards; `watchnext serve` serves this data folder.");
                    running.shutdown().await
                }
            }
            Command::World { command, publish } => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                publish.check(&config)?;
                tokio::task::block_in_place(|| crate::data::world(&config, command))?;
                publish.run(&config).await
            }
            Command::Import { command, publish } => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                publish.check(&config)?;
                tokio::task::block_in_place(|| crate::data::import(&config, command))?;
                publish.run(&config).await
            }
            Command::Export { command, source } => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                source.run(&config).await?;
                tokio::task::block_in_place(|| crate::data::export(&config, command))
            }
            Command::Stream(command) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                crate::stream_sync::command(&config, command).await
            }
            Command::Train(args) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                tokio::task::block_in_place(|| crate::training::train(&config, args))
            }
            Command::CheckProviders(args) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                tokio::task::block_in_place(|| crate::providers::command(&config, &args))
            }
            Command::TrainSequence(args) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                tokio::task::block_in_place(|| crate::training::train_sequence_command(&config, args)).map(|_| ())
            }
            Command::Loadtest(args) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                crate::loadtest::command(&config.data.dir, args).await
            }
            Command::Eval(crate::data::EvalArgs { command: Some(crate::data::EvalCommand::Pipeline(p)), .. }) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                crate::evaluation::pipeline(&config, p).await
            }
            Command::Eval(args) => {
                let config = cli.global.load(&[])?;
                crate::telemetry::init_logging(&config.log);
                tokio::task::block_in_place(|| match args.command {
                    Some(crate::data::EvalCommand::Generators { k, users }) => {
                        crate::data::eval(&config, crate::data::EvalCommand::Generators { k, users })
                    }
                    Some(crate::data::EvalCommand::Model(m)) => crate::training::eval_model(&config, m),
                    Some(crate::data::EvalCommand::Compare(c)) => crate::training::compare(&config, c),
                    Some(crate::data::EvalCommand::Pipeline(_)) => unreachable!("handled above"),
                    None => crate::training::eval_model(&config, args.model),
                })
            }
            Command::Health { addr } => {
                let config = cli.global.load(&[])?;
                let report = health::check(&addr, &config.tls).await?;
                println!("{report}");
                if report.process_serving { Ok(()) } else { anyhow::bail!("{addr} is not serving") }
            }
        }
    })
}

/// One machine-readable line on stdout with the bound addresses, so scripts
/// and tests that start the binary with port 0 can find it.
fn announce(running: &app::Running) {
    let metrics = running.metrics_addr.map(|a| a.to_string()).unwrap_or_default();
    println!("watchnext listening grpc={} metrics={metrics}", running.addr);
}
