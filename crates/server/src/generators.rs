//! The generators a process hosts, built from config and the data folder.
//!
//! At start-up each hosted generator is constructed from its section of
//! `[generators.*]` (validated by its own crate, errors naming the key), the
//! co-watch tables are loaded from their snapshot when there is one, and the
//! catalogue (`catalog.jsonl`) is handed to every generator. Online updates
//! then come from the feedback log through the [`crate::tailer`]: from the
//! snapshot's sequence number for co-watch, from the start for the others
//! (their state is cheap to rebuild).
//!
//! The sequence generator loads the newest model under `<data>/sequence`
//! (written by `watchnext train-sequence`) and, every
//! `generators.sequence.model_poll_seconds`, looks for a newer one, which
//! it loads and indexes off the request path and swaps in. Until it has a
//! model its Generate calls get FAILED_PRECONDITION saying how to train one.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use watchnext_core::{Config, Role, catalog::Catalog, datadir::DataDir, generator::Generator};
use watchnext_cowatch::{CowatchConfig, CowatchGenerator};
use watchnext_sequence::{SequenceConfig, SequenceGenerator};

/// The generators of one process.
#[derive(Debug, Default)]
pub struct Hosted {
    /// `(role, generator, first log sequence number it still needs)`.
    pub generators: Vec<(Role, Arc<dyn Generator>, u64)>,
    /// The co-watch generator again, typed, for snapshots.
    pub cowatch: Option<Arc<CowatchGenerator>>,
    /// Where co-watch snapshots go.
    pub cowatch_snapshot: PathBuf,
    /// The sequence generator again, typed, for model reloads.
    pub sequence: Option<Arc<SequenceGenerator>>,
    /// Where sequence models are looked for.
    pub sequence_models: PathBuf,
    /// How often to look for a newer sequence model (0 = never).
    pub sequence_poll_seconds: u64,
}

impl Hosted {
    /// The generator serving `role`, if built.
    pub fn get(&self, role: Role) -> Option<&Arc<dyn Generator>> {
        self.generators.iter().find(|(r, _, _)| *r == role).map(|(_, g, _)| g)
    }
}

fn section<T: DeserializeOwned>(key: &str, value: &serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(value.clone()).with_context(|| format!("configuration key `generators.{key}`"))
}

/// The path of the co-watch snapshot inside a data folder.
pub fn cowatch_snapshot_path(data: &DataDir) -> PathBuf {
    data.root().join("snapshots").join("cowatch.snap")
}

/// A sequence generator from `generators.sequence` and `[onnx]`, with no model yet.
pub fn sequence_generator(config: &Config) -> anyhow::Result<SequenceGenerator> {
    let c: SequenceConfig = section("sequence", &config.generators.sequence)?;
    let runtime =
        watchnext_onnx::OnnxRuntime::init(&config.onnx).context("loading ONNX Runtime for the sequence encoder")?;
    let session = watchnext_onnx::SessionOptions::from(&config.onnx);
    SequenceGenerator::new(c, runtime, session).context("configuration key `generators.sequence`")
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

/// Builds the generators `role` hosts, with their persisted state, and
/// gives them `catalog`.
pub fn build(config: &Config, catalog: Option<&Arc<Catalog>>) -> anyhow::Result<Hosted> {
    build_with(config, true, catalog)
}

/// Builds the generators `role` hosts: with their persisted state when
/// `load_snapshot` (the co-watch snapshot, the newest sequence model), and
/// gives them `catalog`. Offline evaluation passes `false` and no
/// catalogue: it trains on its own split and hands the catalogue over itself.
pub fn build_with(config: &Config, load_snapshot: bool, catalog: Option<&Arc<Catalog>>) -> anyhow::Result<Hosted> {
    let role = config.server.role;
    let data = DataDir::new(&config.data.dir);
    let mut hosted = Hosted {
        cowatch_snapshot: cowatch_snapshot_path(&data),
        sequence_models: data.sequence_models(),
        ..Hosted::default()
    };
    if role.includes(Role::Topic) {
        let c: watchnext_topic::TopicConfig = section("topic", &config.generators.topic)?;
        let g = watchnext_topic::TopicGenerator::new(c).context("configuration key `generators.topic`")?;
        hosted.generators.push((Role::Topic, Arc::new(g), 1));
    }
    if role.includes(Role::Cowatch) {
        let c: CowatchConfig = section("cowatch", &config.generators.cowatch)?;
        let (g, from) = if load_snapshot && hosted.cowatch_snapshot.is_file() {
            let (g, info) = CowatchGenerator::load(&hosted.cowatch_snapshot, c)
                .with_context(|| format!("loading {}", hosted.cowatch_snapshot.display()))?;
            tracing::info!(covered_seq = info.covered_seq, videos = info.videos, "co-watch snapshot loaded");
            (g, info.covered_seq + 1)
        } else {
            (CowatchGenerator::new(c).context("configuration key `generators.cowatch`")?, 1)
        };
        let g = Arc::new(g);
        hosted.cowatch = Some(g.clone());
        hosted.generators.push((Role::Cowatch, g, from));
    }
    if role.includes(Role::Sequence) {
        let g = Arc::new(sequence_generator(config)?);
        hosted.sequence_poll_seconds =
            section::<SequenceConfig>("sequence", &config.generators.sequence)?.model_poll_seconds;
        if load_snapshot {
            load_newest_sequence_model(&g, &hosted.sequence_models);
        }
        hosted.sequence = Some(g.clone());
        hosted.generators.push((Role::Sequence, g, 1));
    }
    if role.includes(Role::Context) {
        let c: watchnext_context::ContextConfig = section("context", &config.generators.context)?;
        let g = watchnext_context::ContextGenerator::new(c).context("configuration key `generators.context`")?;
        hosted.generators.push((Role::Context, Arc::new(g), 1));
    }
    if hosted.generators.is_empty() {
        return Ok(hosted);
    }
    match catalog {
        Some(catalog) => {
            for (_, g, _) in &hosted.generators {
                g.update_catalog(catalog);
            }
            tracing::info!(videos = catalog.len(), "catalogue loaded into the generators");
        }
        None if load_snapshot => {
            tracing::warn!(path = %data.catalog().display(), "no catalogue yet: generators answer with empty lists");
        }
        None => {}
    }
    Ok(hosted)
}
