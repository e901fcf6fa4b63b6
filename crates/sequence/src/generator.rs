//! The sequence generator: history → user vector (the trained encoder, run
//! by ONNX Runtime) → the nearest video embeddings (an [`AnnIndex`]).
//!
//! # Serving
//! One [`Loaded`] model (its session pool, its index, its vocabulary) sits
//! behind an `ArcSwap`. A request loads the current one once and uses it to
//! the end, so a swap never mixes two models in one answer, and a request
//! never waits for a load: [`SequenceGenerator::install`] reads the files,
//! loads the encoder, runs it once on a sample history (a model whose
//! output does not match its manifest is refused here, and the old model
//! keeps serving), builds the index, and only then swaps.
//!
//! # History
//! The request's `recent_history` when it has one; otherwise the user's
//! recent watches learnt from the feedback stream ([`RecentWatches`]). The
//! query video is the most recent watch. Videos the model has never seen
//! are skipped (it cannot place them); if none is left the answer is empty
//! with a note — a cold user is the context generator's job. The query
//! video and the history are never proposed, nor videos missing from the
//! current catalogue (when one is loaded).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use watchnext_core::{
    catalog::Catalog,
    event::{Event, Source},
    generator::{Candidate, Generated, Generator},
    history::RecentWatches,
    ids::VideoId,
    request::Query,
};
use watchnext_onnx::{OnnxError, OnnxRuntime, SessionOptions, SessionPool};

use crate::{
    ann::{AnnError, AnnIndex, AnnKind, AnnParams, Embeddings, build_index},
    model::{HISTORY_INPUT, ModelError, SequenceModel, USER_OUTPUT, model_dirs},
};

/// Configuration of [`SequenceGenerator`] (`[generators.sequence]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceConfig {
    /// Nearest-neighbour index: `hnsw_rs` (default), `flat_hnsw` (our own
    /// HNSW, several times faster, see BENCHMARKS.md) or `exact`.
    pub index: String,
    /// HNSW links per node (`M`).
    pub m: usize,
    /// HNSW candidate width while building.
    pub ef_construction: usize,
    /// HNSW candidate width while searching (raised to the number asked for).
    pub ef_search: usize,
    /// Threads building the index (0 = all cores).
    pub build_threads: usize,
    /// Encoder sessions, i.e. requests encoded at the same time.
    pub sessions: usize,
    /// Recent watches remembered per user from the feedback stream.
    pub recent_per_user: usize,
    /// How often the server looks for a newer model directory (0 = only at
    /// start-up).
    pub model_poll_seconds: u64,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self {
            index: AnnKind::default().as_str().to_owned(),
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            build_threads: 0,
            sessions: 2,
            recent_per_user: 50,
            model_poll_seconds: 30,
        }
    }
}

/// What can go wrong configuring the generator or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("sequence generator config: `{field}` {problem}")]
    Config { field: &'static str, problem: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("sequence model {dir}: {reason}")]
    Encoder { dir: String, reason: String },
    #[error("sequence model {dir}: index: {source}")]
    Index { dir: String, source: AnnError },
}

impl SequenceConfig {
    /// The index kind and parameters, checked.
    pub fn validate(&self) -> Result<(AnnKind, AnnParams), SequenceError> {
        let config = |field, problem: String| SequenceError::Config { field, problem };
        let kind: AnnKind = self.index.parse().map_err(|e: AnnError| config("index", e.to_string()))?;
        let params = AnnParams {
            m: self.m,
            ef_construction: self.ef_construction,
            threads: self.build_threads,
            ..AnnParams::default()
        };
        params.validate().map_err(|e| config("m", e.to_string()))?;
        if self.ef_search == 0 {
            return Err(config("ef_search", "is 0; it must be at least 1".into()));
        }
        if self.sessions == 0 || self.sessions > 256 {
            return Err(config("sessions", format!("is {}; it must be between 1 and 256", self.sessions)));
        }
        if self.recent_per_user == 0 {
            return Err(config("recent_per_user", "is 0; it must be at least 1".into()));
        }
        Ok((kind, params))
    }
}

/// A model ready to serve.
#[derive(Debug)]
pub struct Loaded {
    pub version: String,
    pub dir: PathBuf,
    pub dim: usize,
    pub history_len: usize,
    pool: SessionPool,
    index: Box<dyn AnnIndex>,
    videos: Vec<VideoId>,
    rows: HashMap<VideoId, u32>,
}

impl Loaded {
    /// Encodes `history` (rows of `history_len` vocabulary rows + 1,
    /// left-padded with 0) into unit user vectors.
    pub fn encode(&self, history: Vec<i64>) -> Result<Vec<f32>, OnnxError> {
        encode(&self.pool, self.history_len, self.dim, history)
    }

    /// The index in use.
    pub fn index(&self) -> &dyn AnnIndex {
        self.index.as_ref()
    }

    /// Vocabulary size.
    pub fn videos(&self) -> usize {
        self.videos.len()
    }
}

fn encode(pool: &SessionPool, history_len: usize, dim: usize, history: Vec<i64>) -> Result<Vec<f32>, OnnxError> {
    let rows = history.len() / history_len;
    pool.run(|session| {
        let input = ort::value::Tensor::from_array(([rows, history_len], history))?;
        let outputs = session.run(ort::inputs![HISTORY_INPUT => input])?;
        let (shape, values) = outputs[USER_OUTPUT].try_extract_tensor::<f32>()?;
        if shape.len() != 2 || shape[1] as usize != dim {
            return Err(OnnxError::Run(format!(
                "output `{USER_OUTPUT}` has shape {shape:?}, expected [{rows}, {dim}]"
            )));
        }
        Ok(values.to_vec())
    })
}

/// What [`SequenceGenerator::install`] did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub version: String,
    pub videos: usize,
    pub index: &'static str,
    pub index_bytes: usize,
    pub load_seconds: f64,
    pub index_seconds: f64,
}

/// The sequence-model candidate generator.
#[derive(Debug)]
pub struct SequenceGenerator {
    config: SequenceConfig,
    kind: AnnKind,
    params: AnnParams,
    runtime: Arc<OnnxRuntime>,
    session: SessionOptions,
    state: ArcSwapOption<Loaded>,
    catalog: ArcSwapOption<Catalog>,
    recent: RecentWatches,
    /// Serialises installs (two reloads racing would build twice).
    installing: std::sync::Mutex<()>,
    /// Directories that failed to load (the folder watcher skips them).
    rejected: std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>,
}

impl SequenceGenerator {
    /// A generator with no model yet.
    pub fn new(
        config: SequenceConfig,
        runtime: Arc<OnnxRuntime>,
        session: SessionOptions,
    ) -> Result<Self, SequenceError> {
        let (kind, params) = config.validate()?;
        let recent = RecentWatches::new(config.recent_per_user);
        Ok(Self {
            config,
            kind,
            params,
            runtime,
            session,
            state: ArcSwapOption::empty(),
            catalog: ArcSwapOption::empty(),
            recent,
            installing: std::sync::Mutex::new(()),
            rejected: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The model serving now.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.state.load_full()
    }

    /// The recent-watch store.
    pub fn recent(&self) -> &RecentWatches {
        &self.recent
    }

    /// Reads, checks, warms up and indexes the model in `dir`, then swaps
    /// it in. On error the previous model keeps serving.
    pub fn load_dir(&self, dir: &Path) -> Result<InstallReport, SequenceError> {
        self.install(SequenceModel::read(dir)?)
    }

    /// Loads the newest valid model under `root` if it is not the one
    /// serving: directories are tried newest first (by manifest time) down
    /// to the serving version, so a broken newest one does not hide a valid
    /// one; a directory that failed once is not tried again. `Ok(None)` when
    /// there is nothing newer; `Err` (the newest failure) when every newer
    /// directory failed.
    pub fn reload_newest(&self, root: &Path) -> Result<Option<InstallReport>, SequenceError> {
        let mut failed = None;
        for (dir, manifest) in model_dirs(root) {
            if self.current().is_some_and(|c| c.version == manifest.version) {
                break;
            }
            let rejected = || self.rejected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if rejected().contains(&dir) {
                continue;
            }
            match self.load_dir(&dir) {
                Ok(report) => return Ok(Some(report)),
                Err(err) => {
                    tracing::error!(dir = %dir.display(), %err, "sequence model refused; trying an older one");
                    rejected().insert(dir);
                    failed.get_or_insert(err);
                }
            }
        }
        failed.map_or(Ok(None), Err)
    }

    /// See [`SequenceGenerator::load_dir`].
    pub fn install(&self, model: SequenceModel) -> Result<InstallReport, SequenceError> {
        let _one_at_a_time = self.installing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let dir = model.dir.display().to_string();
        let m = &model.manifest;
        let encoder_err = |reason: String| SequenceError::Encoder { dir: dir.clone(), reason };
        let pool = SessionPool::new(&self.runtime, &dir, &model.encoder, &self.session, self.config.sessions)?;
        if pool.input_names() != [HISTORY_INPUT] || !pool.output_names().iter().any(|o| o == USER_OUTPUT) {
            return Err(encoder_err(format!(
                "encoder has inputs {:?} and outputs {:?}; expected input `{HISTORY_INPUT}` and output `{USER_OUTPUT}`",
                pool.input_names(),
                pool.output_names()
            )));
        }
        // Warm-up and check: a sample history must give a unit vector of `dim`.
        let mut sample = vec![0i64; m.history_len];
        sample[m.history_len - 1] = 1;
        let user = encode(&pool, m.history_len, m.dim, sample).map_err(|e| encoder_err(e.to_string()))?;
        let norm = user.iter().map(|x| x * x).sum::<f32>().sqrt();
        if user.len() != m.dim || !(0.99..=1.01).contains(&norm) {
            return Err(encoder_err(format!(
                "the encoder gave a vector of {} values with norm {norm}; the manifest promises {} values of norm 1",
                user.len(),
                m.dim
            )));
        }
        let load_seconds = started.elapsed().as_secs_f64();
        let index_started = Instant::now();
        let ids: Vec<u32> = (0..model.videos.len() as u32).collect();
        let index_err = |source| SequenceError::Index { dir: dir.clone(), source };
        let embeddings = Embeddings::from_flat(m.dim, ids, model.embeddings).map_err(index_err)?;
        let index = build_index(self.kind, &embeddings, &self.params).map_err(index_err)?;
        let rows = model.videos.iter().enumerate().map(|(i, v)| (v.clone(), i as u32)).collect();
        let loaded = Loaded {
            version: m.version.clone(),
            dir: model.dir.clone(),
            dim: m.dim,
            history_len: m.history_len,
            pool,
            index,
            videos: model.videos,
            rows,
        };
        let report = InstallReport {
            version: loaded.version.clone(),
            videos: loaded.videos.len(),
            index: loaded.index.name(),
            index_bytes: loaded.index.memory_bytes(),
            load_seconds,
            index_seconds: index_started.elapsed().as_secs_f64(),
        };
        self.state.store(Some(Arc::new(loaded)));
        tracing::info!(
            version = %report.version,
            videos = report.videos,
            index = report.index,
            index_mib = report.index_bytes / (1 << 20),
            index_seconds = report.index_seconds,
            "sequence model swapped in"
        );
        Ok(report)
    }

    /// The history rows (vocabulary row + 1) of `query`, oldest first, the
    /// query video last, at most `len`; and the rows to exclude.
    fn history_rows(&self, model: &Loaded, query: &Query) -> (Vec<i64>, HashSet<u32>, bool) {
        let from_stream;
        let request: Vec<&VideoId> = if query.history.0.is_empty() {
            from_stream = self.recent.recent(&query.user);
            from_stream.iter().collect()
        } else {
            query.history.0.iter().map(|h| &h.video).collect()
        };
        let mut rows: Vec<i64> = Vec::with_capacity(request.len() + 1);
        let mut excluded = HashSet::with_capacity(request.len() + 1);
        for v in request.into_iter().chain([&query.query_video]) {
            if let Some(&r) = model.rows.get(v) {
                excluded.insert(r);
                if rows.last() != Some(&(i64::from(r) + 1)) {
                    rows.push(i64::from(r) + 1);
                }
            }
        }
        let query_known = model.rows.contains_key(&query.query_video);
        let keep = rows.len().saturating_sub(model.history_len);
        (rows.split_off(keep), excluded, query_known)
    }
}

fn empty(note: impl Into<String>, version: &str) -> Generated {
    Generated { candidates: Vec::new(), note: note.into(), version: version.to_owned() }
}

impl Generator for SequenceGenerator {
    fn source(&self) -> Source {
        Source::Sequence
    }

    fn generate(&self, query: &Query, max: usize) -> Generated {
        let Some(model) = self.state.load_full() else {
            return empty("no sequence model loaded yet: train one with `watchnext train-sequence`", "");
        };
        let (rows, excluded, query_known) = self.history_rows(&model, query);
        if rows.is_empty() {
            return empty(
                format!("none of the user's recent videos is known to sequence model {} (cold user)", model.version),
                &model.version,
            );
        }
        let mut input = vec![0i64; model.history_len - rows.len()];
        input.extend_from_slice(&rows);
        let user = match model.encode(input) {
            Ok(u) => u,
            Err(err) => {
                tracing::warn!(%err, version = %model.version, "sequence encoder failed");
                return empty(format!("the sequence encoder failed: {err}"), &model.version);
            }
        };
        let k = max + excluded.len();
        let mut found = Vec::with_capacity(k);
        if let Err(err) = model.index.search_into(&user, k, self.config.ef_search.max(k), &mut found) {
            tracing::warn!(%err, version = %model.version, "sequence index search failed");
            return empty(format!("the sequence index search failed: {err}"), &model.version);
        }
        let catalog = self.catalog.load();
        let candidates = found
            .into_iter()
            .filter(|(row, _)| !excluded.contains(row))
            .map(|(row, score)| (&model.videos[row as usize], score))
            .filter(|(v, _)| catalog.as_ref().is_none_or(|c| c.index_of(v.as_str()).is_some()))
            .take(max)
            .map(|(v, score)| Candidate { video: v.clone(), score })
            .collect();
        let note = if query_known {
            String::new()
        } else {
            format!("the query video is unknown to sequence model {}: from the history alone", model.version)
        };
        Generated { candidates, note, version: model.version.clone() }
    }

    fn ready(&self) -> Result<(), String> {
        match self.state.load().as_ref() {
            Some(_) => Ok(()),
            None => Err("no sequence model loaded yet: train one with `watchnext train-sequence`".into()),
        }
    }

    fn precondition(&self) -> Result<(), String> {
        self.ready()
    }

    fn update_catalog(&self, catalog: &Arc<Catalog>) {
        self.catalog.store(Some(catalog.clone()));
    }

    fn observe(&self, events: &[Event]) {
        self.recent.observe(events);
    }
}
