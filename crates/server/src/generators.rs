//! The generators a process hosts, built from config and the data folder.
//!
//! [`REGISTRY`] holds one entry per generator of the core registry
//! (`watchnext_core::registry`, which names them): how it is built from its
//! `[generators.<name>]` section (the config type is its constructor's
//! argument, validated by its own crate, errors naming the key), and what
//! else it needs from a process, as a [`HostedGenerator`]:
//!
//! - the stream sequence it resumes from (co-watch: after its snapshot,
//!   loaded at start-up when there is one; the others from the start,
//!   their state is cheap to rebuild);
//! - a hook after each delivered chunk (co-watch writes its snapshot every
//!   `generators.snapshot_interval_seconds`, covering exactly the prefix
//!   delivered);
//! - a periodic reload (the sequence generator loads the newest model under
//!   `<data>/sequence`, written by `watchnext train-sequence`, every
//!   `generators.sequence.model_poll_seconds`, indexes it off the request
//!   path and swaps it in; until it has one its Generate calls get
//!   FAILED_PRECONDITION saying how to train one);
//! - an offline fit (the replay and the evaluations train the sequence
//!   model on the log prefix they may see).
//!
//! Everything else in the server (the gRPC service, health, endpoints, the
//! recommender's fan-out, the tailers, replay and evaluation) works on the
//! list and never names a generator: adding one is a line in the core
//! registry, a `CandidateSource` value and an entry here.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use watchnext_core::{
    Config, Role,
    catalog::Catalog,
    datadir::DataDir,
    event::{Event, Source, source_name},
    generator::Generator,
};
use watchnext_cowatch::{CowatchConfig, CowatchGenerator};
use watchnext_sequence::{SequenceConfig, SequenceGenerator};

/// How a process builds one generator.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Which generator (its name, role, endpoint key and features come
    /// from the core registry).
    pub source: Source,
    /// Whether it runs a model in ONNX Runtime (a process hosting it loads
    /// the library at start-up, so that a missing one stops it with
    /// instructions).
    pub uses_onnx: bool,
    /// Builds it from its settings section.
    pub build: fn(&BuildContext<'_>) -> anyhow::Result<HostedGenerator>,
}

/// Every generator's entry, in registry order.
pub const REGISTRY: &[Entry] = &[
    Entry {
        source: Source::Topic,
        uses_onnx: false,
        build: |cx| {
            let mut c: watchnext_topic::TopicConfig = cx.settings()?;
            // A replay asks on event time: no refresh on the wall clock.
            c.background_refresh &= !cx.replay;
            cx.hosted(watchnext_topic::TopicGenerator::new(c))
        },
    },
    Entry { source: Source::Cowatch, uses_onnx: false, build: cowatch },
    Entry { source: Source::Sequence, uses_onnx: true, build: sequence },
    Entry {
        source: Source::Context,
        uses_onnx: false,
        build: |cx| {
            let mut c: watchnext_context::ContextConfig = cx.settings()?;
            if cx.replay {
                // Published only when the replay syncs, on event time.
                c.publish_interval_ms = u64::MAX;
            }
            cx.hosted(watchnext_context::ContextGenerator::new(c))
        },
    },
];

/// The entry of `source`'s generator.
pub fn entry(source: Source) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.source == source)
}

/// What an entry's `build` gets.
#[derive(Debug)]
pub struct BuildContext<'a> {
    pub config: &'a Config,
    pub source: Source,
    pub data: DataDir,
    /// Serving: load persisted state (a snapshot, the newest model).
    /// Offline (replay, evaluation): start empty.
    pub load_state: bool,
    /// Replaying a log on event time: nothing may depend on the wall clock.
    pub replay: bool,
}

impl BuildContext<'_> {
    /// The configuration key of this generator's section.
    pub fn key(&self) -> String {
        format!("generators.{}", source_name(self.source))
    }

    /// This generator's settings, parsed into its crate's config type.
    pub fn settings<C: DeserializeOwned>(&self) -> anyhow::Result<C> {
        serde_json::from_value(self.config.generators.section(self.source))
            .with_context(|| format!("configuration key `{}`", self.key()))
    }

    /// A generator that needs nothing beyond `observe` and `update_catalog`.
    pub fn hosted<G: Generator + 'static, E: std::error::Error + Send + Sync + 'static>(
        &self,
        built: Result<G, E>,
    ) -> anyhow::Result<HostedGenerator> {
        let generator = built.with_context(|| format!("configuration key `{}`", self.key()))?;
        Ok(HostedGenerator::new(self.source, Arc::new(generator)))
    }
}

/// Called after each delivered chunk with the last stream sequence it covers.
pub type AfterDelivery = crate::tailer::AfterDelivery;

/// Loads what is newest (a model); returns whether the generator can answer.
pub type ReloadJob = Arc<dyn Fn() -> bool + Send + Sync>;

/// Fits what a generator needs on a log prefix, offline (`what` labels its
/// messages, `progress` prints epochs); false, with a message, when there
/// is too little to learn from (the generator then stays unready and is
/// skipped, as Recommend skips a generator that is not ready).
pub type Fit = Arc<dyn Fn(&[Event], &str, bool) -> anyhow::Result<bool> + Send + Sync>;

/// One generator as a process hosts it.
#[derive(Clone)]
pub struct HostedGenerator {
    pub source: Source,
    pub generator: Arc<dyn Generator>,
    /// The first stream sequence it still needs.
    pub from_seq: u64,
    /// Run after each delivered chunk (co-watch's snapshots).
    pub after_delivery: Option<AfterDelivery>,
    /// Run every `.0` (sequence models).
    pub reload: Option<(Duration, ReloadJob)>,
    /// Offline fitting (the sequence model of a replay or evaluation).
    pub fit: Option<Fit>,
}

impl std::fmt::Debug for HostedGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedGenerator")
            .field("source", &self.source)
            .field("from_seq", &self.from_seq)
            .field("after_delivery", &self.after_delivery.is_some())
            .field("reload", &self.reload.as_ref().map(|r| r.0))
            .field("fit", &self.fit.is_some())
            .finish()
    }
}

impl HostedGenerator {
    /// `generator`, fed from the start of the stream, with no hooks.
    pub fn new(source: Source, generator: Arc<dyn Generator>) -> Self {
        Self { source, generator, from_seq: 1, after_delivery: None, reload: None, fit: None }
    }

    /// Its role.
    pub fn role(&self) -> Role {
        Role::Generator(self.source)
    }
}

/// The generators of one process.
#[derive(Debug, Default)]
pub struct Hosted {
    pub generators: Vec<HostedGenerator>,
}

impl Hosted {
    /// The generator serving `source`, if built.
    pub fn get(&self, source: Source) -> Option<&Arc<dyn Generator>> {
        self.generators.iter().find(|h| h.source == source).map(|h| &h.generator)
    }

    /// The generators, without their hooks.
    pub fn all(&self) -> Vec<Arc<dyn Generator>> {
        self.generators.iter().map(|h| h.generator.clone()).collect()
    }

    /// Fits every generator that needs it on `events` (offline, see
    /// [`Fit`]).
    pub fn fit(&self, events: &[Event], what: &str, progress: bool) -> anyhow::Result<()> {
        for fit in self.generators.iter().filter_map(|h| h.fit.as_ref()) {
            fit(events, what, progress)?;
        }
        Ok(())
    }
}

/// The path of the co-watch snapshot inside a data folder.
pub fn cowatch_snapshot_path(data: &DataDir) -> PathBuf {
    data.root().join("snapshots").join("cowatch.snap")
}

/// Co-watch: from its snapshot when serving and there is one; snapshots
/// after deliveries every `generators.snapshot_interval_seconds`.
fn cowatch(cx: &BuildContext<'_>) -> anyhow::Result<HostedGenerator> {
    let c: CowatchConfig = cx.settings()?;
    let path = cowatch_snapshot_path(&cx.data);
    let (g, from) = if cx.load_state && path.is_file() {
        let (g, info) = CowatchGenerator::load(&path, c).with_context(|| format!("loading {}", path.display()))?;
        tracing::info!(covered_seq = info.covered_seq, videos = info.videos, "co-watch snapshot loaded");
        (g, info.covered_seq + 1)
    } else {
        (CowatchGenerator::new(c).with_context(|| format!("configuration key `{}`", cx.key()))?, 1)
    };
    let g = Arc::new(g);
    let mut hosted = HostedGenerator::new(cx.source, g.clone());
    hosted.from_seq = from;
    let interval_s = cx.config.generators.snapshot_interval_seconds;
    if cx.load_state && interval_s > 0 {
        hosted.after_delivery = Some(snapshot_hook(g, path, interval_s));
    }
    Ok(hosted)
}

/// Snapshots the co-watch tables after a delivery when `interval_s` has
/// passed since the last snapshot; the snapshot then covers exactly the log
/// prefix delivered.
fn snapshot_hook(cowatch: Arc<CowatchGenerator>, path: PathBuf, interval_s: u64) -> AfterDelivery {
    let last = std::sync::Mutex::new(std::time::Instant::now());
    Arc::new(move |covered| {
        let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() < Duration::from_secs(interval_s) {
            return;
        }
        *last = std::time::Instant::now();
        match cowatch.snapshot(&path, covered) {
            Ok(info) => tracing::info!(covered, bytes = info.bytes, "co-watch snapshot written"),
            Err(err) => tracing::warn!(%err, "co-watch snapshot failed; the log still holds everything"),
        }
    })
}

/// A sequence generator from `generators.sequence` and `[onnx]`, with no model yet.
pub fn sequence_generator(config: &Config) -> anyhow::Result<SequenceGenerator> {
    let c: SequenceConfig = serde_json::from_value(config.generators.section(Source::Sequence))
        .context("configuration key `generators.sequence`")?;
    let runtime =
        watchnext_onnx::OnnxRuntime::init(&config.onnx).context("loading ONNX Runtime for the sequence encoder")?;
    let session = watchnext_onnx::SessionOptions::from(&config.onnx);
    SequenceGenerator::new(c, runtime, session).context("configuration key `generators.sequence`")
}

/// The sequence generator: the newest model under `<data>/sequence` when
/// serving, looked for again every `model_poll_seconds`; offline, a model
/// trained on the prefix the replay or evaluation may see.
fn sequence(cx: &BuildContext<'_>) -> anyhow::Result<HostedGenerator> {
    let poll_seconds = cx.settings::<SequenceConfig>()?.model_poll_seconds;
    let g = Arc::new(sequence_generator(cx.config)?);
    let root = cx.data.sequence_models();
    if cx.load_state {
        load_newest_sequence_model(&g, &root);
    }
    let mut hosted = HostedGenerator::new(cx.source, g.clone());
    if poll_seconds > 0 {
        let (g, root) = (g.clone(), root.clone());
        let job: ReloadJob = Arc::new(move || {
            load_newest_sequence_model(&g, &root);
            g.current().is_some()
        });
        hosted.reload = Some((Duration::from_secs(poll_seconds), job));
    }
    let config = cx.config.clone();
    hosted.fit = Some(Arc::new(move |events, what, progress| {
        crate::examples::install_sequence_model(&config, &g, events, what, progress)
    }));
    Ok(hosted)
}

/// Loads the newest sequence model under `root` into `g` if it is newer
/// than the one serving; a broken model is logged and skipped.
pub fn load_newest_sequence_model(g: &SequenceGenerator, root: &std::path::Path) {
    match g.reload_newest(root) {
        Ok(Some(r)) => tracing::info!(
            version = %r.version,
            videos = r.videos,
            index = r.index,
            index_seconds = format!("{:.2}", r.index_seconds),
            "sequence model loaded"
        ),
        Ok(None) if g.current().is_none() => {
            tracing::warn!(dir = %root.display(), "no sequence model yet: run `watchnext train-sequence`");
        }
        Ok(None) => {}
        Err(err) => {
            tracing::error!(%err, "a sequence model could not be loaded; the previous one (if any) keeps serving")
        }
    }
}

/// Reads the data folder's catalogue, if there is one yet.
pub fn read_catalog(config: &Config) -> anyhow::Result<Option<Arc<Catalog>>> {
    let path = DataDir::new(&config.data.dir).catalog();
    if !path.is_file() {
        return Ok(None);
    }
    let catalog = Catalog::read(&path).with_context(|| format!("loading the catalogue {}", path.display()))?;
    Ok(Some(Arc::new(catalog)))
}

/// Builds the generators `config.server.role` hosts, with their persisted
/// state, and gives them `catalog`.
pub fn build(config: &Config, catalog: Option<&Arc<Catalog>>) -> anyhow::Result<Hosted> {
    build_with(config, true, false, catalog)
}

/// Builds the generators `config.server.role` hosts: with their persisted
/// state when `load_state` (the co-watch snapshot, the newest sequence
/// model), deterministic on event time when `replay`, and gives them
/// `catalog`. Offline evaluation passes `false` and no catalogue: it
/// trains on its own split and hands the catalogue over itself.
pub fn build_with(
    config: &Config,
    load_state: bool,
    replay: bool,
    catalog: Option<&Arc<Catalog>>,
) -> anyhow::Result<Hosted> {
    let role = config.server.role;
    let data = DataDir::new(&config.data.dir);
    let mut hosted = Hosted::default();
    for entry in REGISTRY {
        if !role.includes(Role::Generator(entry.source)) {
            continue;
        }
        let cx = BuildContext { config, source: entry.source, data: data.clone(), load_state, replay };
        hosted.generators.push((entry.build)(&cx)?);
    }
    if hosted.generators.is_empty() {
        return Ok(hosted);
    }
    match catalog {
        Some(catalog) => {
            for h in &hosted.generators {
                h.generator.update_catalog(catalog);
            }
            tracing::info!(videos = catalog.len(), "catalogue loaded into the generators");
        }
        None if load_state => {
            tracing::warn!(path = %data.catalog().display(), "no catalogue yet: generators answer with empty lists");
        }
        None => {}
    }
    Ok(hosted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_generator_has_exactly_one_entry_in_registry_order() {
        let sources: Vec<Source> = REGISTRY.iter().map(|e| e.source).collect();
        assert_eq!(sources, watchnext_core::registry::GENERATORS, "REGISTRY must follow the core registry");
    }

    #[test]
    fn a_bad_section_names_its_key() {
        let mut config = Config::default();
        config.server.role = Role::Generator(Source::Cowatch);
        *config.generators.section_mut(Source::Cowatch) = serde_json::json!({ "no_such_setting": 1 });
        let err = format!("{:#}", build_with(&config, false, false, None).unwrap_err());
        assert!(err.contains("generators.cowatch"), "{err}");
    }
}
