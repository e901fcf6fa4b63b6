//! The ranking model's training examples, as `watchnext train`, `eval`,
//! `eval compare` and `eval pipeline` build them: a point-in-time replay of
//! this process's serving pipeline over the data folder's log
//! (`watchnext_trainer::replay`, `trainer.examples = "replay"`, the default)
//! or the logged impressions alone (`"logged"`).
//!
//! For the replay the generators are built fresh from the configuration
//! (every generator of the all-in-one process), given the catalogue and fed
//! the log in time order by the replay itself. The sequence generator gets
//! a model trained here on the warm-up part of the log only (the events
//! before the first example), so it never scores what it was trained on;
//! without enough warm-up data it stays without a model and is skipped, as
//! Recommend skips a generator that is not ready.

use std::{path::Path, sync::Arc};

use anyhow::Context as _;
use watchnext_core::{Config, Role, catalog::Catalog, datadir::DataDir, event::Event};
use watchnext_recommender::config::Settings;
use watchnext_trainer::{
    config::{ExampleSource, TrainerConfig},
    dataset::{self, DatasetSummary, Examples},
    pipeline::{ExampleLoader, PipelineError},
    replay::{self, Serving},
    sequence::{Sequences, train_sequence, write_sequence_model},
};

/// Examples by this configuration's serving pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ServingExamples<'c> {
    pub config: &'c Config,
}

impl ExampleLoader for ServingExamples<'_> {
    fn load(
        &self,
        data_dir: &Path,
        trainer: &TrainerConfig,
        progress: bool,
    ) -> Result<(Examples, DatasetSummary), PipelineError> {
        let wrap = |e: anyhow::Error| PipelineError::Examples(format!("{e:#}"));
        let history_len = settings(self.config).map_err(wrap)?.fanout.history_len;
        if trainer.examples == ExampleSource::Logged {
            return Ok(dataset::from_data_dir(data_dir, trainer, history_len, progress)?);
        }
        let data = DataDir::new(data_dir);
        if !data_dir.is_dir() {
            return Err(dataset::DatasetError::NoDataDir { path: data_dir.to_owned() }.into());
        }
        let catalog = Arc::new(Catalog::read(&data.catalog()).map_err(dataset::DatasetError::from)?);
        let events = read_events(&data).map_err(wrap)?;
        replay_examples(self.config, &catalog, &events, trainer, data_dir.display().to_string(), progress).map_err(wrap)
    }
}

/// Every event of the data folder's log, in log (time) order.
pub fn read_events(data: &DataDir) -> anyhow::Result<Vec<Event>> {
    let events: Vec<Event> = crate::data::reader(data)?
        .map(|r| r.map(|(_, e)| e))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the feedback log of {}", data.root().display()))?;
    Ok(events)
}

/// The recommender's settings of `config`.
pub fn settings(config: &Config) -> anyhow::Result<Settings> {
    let r = &config.recommender;
    Ok(Settings::from_values(&r.fanout, &r.combiner, &r.arms)?)
}

/// Fresh generators of every role, with the catalogue, as the all-in-one
/// server has them before it reads the log; the sequence generator without
/// a model. For a replay, generators that refresh on a wall-clock cadence or
/// on a background thread do so only in `Generator::sync` (which the replay
/// calls on event time), so that a replay gives the same candidates on
/// every run.
pub fn fresh_generators(config: &Config, catalog: &Arc<Catalog>) -> anyhow::Result<crate::generators::Hosted> {
    let mut all = config.clone();
    all.server.role = Role::All;
    crate::generators::build_with(&all, false, true, Some(catalog))
}

/// Trains a sequence model on `events` (a prefix of the log) and installs
/// it in `sequence`; returns false (with a message) when there is too
/// little to learn from. The sequence generator's offline fit
/// ([`crate::generators::Fit`]).
pub fn install_sequence_model(
    config: &Config,
    sequence: &watchnext_sequence::SequenceGenerator,
    events: &[Event],
    what: &str,
    progress: bool,
) -> anyhow::Result<bool> {
    let c = crate::training::sequence_trainer_config(config)?;
    let sequences = Sequences::from_events(events, &c);
    if sequences.examples.is_empty() || sequences.validation.is_empty() {
        println!("{what}: too few watches to train a sequence model; the sequence generator is left out");
        return Ok(false);
    }
    println!(
        "{what}: training a sequence model on {} users, {} videos, {} examples",
        sequences.users.len(),
        sequences.videos.len(),
        sequences.examples.len()
    );
    let (net, report) = train_sequence(&sequences, &c, progress)?;
    let scratch = tempfile::tempdir().context("a scratch folder for a sequence model")?;
    let dir = scratch.path().join("model");
    write_sequence_model(&dir, &net, &sequences, "replay", &report)?;
    let installed = sequence.load_dir(&dir)?;
    println!(
        "{what}: sequence model best epoch {} of {}, {} index over {} videos",
        report.best_epoch,
        report.epochs.len(),
        installed.index,
        installed.videos
    );
    Ok(true)
}

/// The replay's examples of `events` (see the module documentation).
pub fn replay_examples(
    config: &Config,
    catalog: &Arc<Catalog>,
    events: &[Event],
    trainer: &TrainerConfig,
    source: String,
    progress: bool,
) -> anyhow::Result<(Examples, DatasetSummary)> {
    let s = settings(config)?;
    let hosted = fresh_generators(config, catalog)?;
    let from_ms = replay::warmup_end_ms(events, trainer.replay.warmup_fraction);
    let warmup = events.partition_point(|e| e.timestamp_ms < from_ms);
    hosted.fit(&events[..warmup], "replay warm-up", progress)?;
    let serving = Serving {
        generators: hosted.all(),
        per_generator: s.fanout.per_generator,
        max_candidates: config.recommender.max_candidates as usize,
        history_len: s.fanout.history_len,
    };
    let (ex, summary) = replay::examples(events, catalog, &serving, trainer, from_ms, source, progress)?;
    Ok((ex, summary))
}
