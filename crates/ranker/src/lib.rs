//! The ranker of watchnext: scores every candidate of a request with the
//! trainer's multitask graph (`model.onnx` + `manifest.json`, the contract
//! of `watchnext_core::model`), run by ONNX Runtime.
//!
//! # A request
//! The per-request features are computed once (`RequestFeatures`, the
//! schema code the trainer uses too), then one dense row
//! (`[n, DENSE_LEN]`) and one sparse row (`[n, SPARSE_LEN]`) per candidate
//! are written into two flat buffers, and **all candidates go through the
//! graph in one run**. There is no position input: the trainer's shallow
//! position tower is not part of the serving graph. [`Ranker::rank`] is
//! synchronous and takes milliseconds: callers run it on a blocking thread
//! (the gRPC service and the recommender use `spawn_blocking`), never on
//! an async worker. A model holds a pool of `sessions` ONNX Runtime sessions
//! (each with `[onnx] intra_op_threads` threads, spinning as `[onnx]
//! spinning` says — off by default, since spinning threads steal CPU the
//! rest of the process needs), so that many requests score at once.
//!
//! # Models and hot reload
//! [`Ranker::load_dir`] reads the manifest, refuses a schema other than
//! the ranker's (both hashes named) or a graph whose inputs and outputs
//! are not the contract's, loads the sessions with the configured
//! execution provider (CPU fallback logged), **warms up** with a full batch
//! of `warmup_rows` candidates and checks every output's shape and
//! finiteness — all off the request path — and only then swaps it in
//! atomically. The model it replaces stays loaded for
//! [`Ranker::rollback`], and the `keep_versions` most recent models stay
//! addressable by version (experiment arms pin one). A model that fails
//! any check is rejected with the reason and the active one keeps serving.
//! [`Ranker::reload_newest`] is what the server's folder watcher calls:
//! the directories under `<data>/models` newer (by manifest creation time)
//! than any model loaded so far, newest first, skipping directories it
//! already rejected; a refused one does not hide an older valid one, and a
//! rollback is not undone by the next poll. A manifest dated more than
//! [`MAX_CLOCK_SKEW_MS`] in the future is refused (it would otherwise stay
//! "newest" and hide every model trained after it).
//! [`Ranker::load_newest`] (`Admin.ReloadModel` without a directory) does
//! the same without the "newer than loaded before" bound.
//!
//! # Gate metrics
//! MMoE graphs also output each task's gate weights per candidate. Every
//! run adds them to the active model's utilisation (mean weight of each
//! expert in each task's mixture since load, [`LoadedModel::gate_utilisation`])
//! and to the gauge `watchnext_ranker_gate_weight{task, expert}`, an
//! exponential moving average over recent requests, so a gate collapsing
//! onto one expert (polarisation) shows on a dashboard.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::{Deserialize, Serialize};
use watchnext_core::{
    catalog::Catalog,
    event::FeatureVector,
    features::{DENSE_INPUT, DENSE_LEN, FeatureSchema, RequestFeatures, RequestInput, SPARSE_INPUT, SPARSE_LEN},
    model::{GATES_OUTPUT, MODEL_FILE, ModelManifest, PREDICTIONS_OUTPUT},
    request::{Query, RankCandidate},
    stages,
};
use watchnext_onnx::{OnnxError, OnnxRuntime, SessionOptions, SessionPool};

/// Configuration of the ranker (`[ranker]`, beside `max_candidates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankerSettings {
    /// ONNX Runtime sessions per model: requests scored at the same time.
    pub sessions: usize,
    /// Candidates in the warm-up run of a model being loaded.
    pub warmup_rows: usize,
    /// Models kept loaded (the active one, the rollback target, versions
    /// pinned by experiment arms).
    pub keep_versions: usize,
}

impl Default for RankerSettings {
    fn default() -> Self {
        Self { sessions: 2, warmup_rows: 256, keep_versions: 4 }
    }
}

/// What can go wrong loading a model or ranking.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("ranker config: `{field}` {problem}")]
    Config { field: &'static str, problem: String },
    #[error("no ranking model is loaded: train one with `watchnext train` (it is picked up from <data>/models)")]
    NoModel,
    #[error("model version `{0}` is not loaded (loaded: {1})")]
    UnknownVersion(String, String),
    #[error("model {dir}: {reason}")]
    Model { dir: String, reason: String },
    #[error("there is no previous model to roll back to")]
    NoPrevious,
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the caller gave up before the change took effect; nothing changed")]
    Withdrawn,
}

/// A caller's wish that a model change happen, which it can withdraw (its
/// client went away or ran out of time). The change takes effect only if it
/// is still wanted at the moment of the swap, so a call answered as failed
/// never changes the active model afterwards.
#[derive(Debug, Clone, Default)]
pub struct Intent(Arc<std::sync::atomic::AtomicU8>);

const WANTED: u8 = 0;
const COMMITTED: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Intent {
    pub fn new() -> Self {
        Self::default()
    }

    /// Withdraws the wish; false when the change had already taken effect.
    pub fn withdraw(&self) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        self.0.compare_exchange(WANTED, WITHDRAWN, AcqRel, std::sync::atomic::Ordering::Acquire).is_ok()
            || self.0.load(std::sync::atomic::Ordering::Acquire) == WITHDRAWN
    }

    /// Claims the change for the swap; false when it was withdrawn.
    fn commit(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.0.compare_exchange(WANTED, COMMITTED, AcqRel, Acquire).is_ok()
    }
}

fn commit(intent: Option<&Intent>) -> Result<(), RankError> {
    if intent.is_none_or(Intent::commit) { Ok(()) } else { Err(RankError::Withdrawn) }
}

impl From<OnnxError> for RankError {
    fn from(e: OnnxError) -> Self {
        RankError::Run(e.to_string())
    }
}

/// How often the gate gauge is set at most.
const GATE_GAUGE_EVERY: Duration = Duration::from_secs(1);

/// Mean gate weight per task and expert.
#[derive(Debug, Default)]
struct GateStats {
    sums: Vec<f64>,
    rows: u64,
    /// Exponential moving average over requests, for the gauge.
    recent: Vec<f64>,
    /// When the gauge was last set (at most once a second: one gauge per
    /// task and expert, 40 for the default model, is a cost per request).
    published: Option<Instant>,
}

/// A model ready to serve.
#[derive(Debug)]
pub struct LoadedModel {
    pub version: String,
    pub dir: PathBuf,
    pub manifest: ModelManifest,
    /// Task names, in prediction order.
    pub tasks: Vec<String>,
    /// Experts per gate (0: no gates output).
    pub experts: usize,
    /// When it was loaded, Unix epoch milliseconds.
    pub loaded_at_ms: i64,
    pool: SessionPool,
    gates: Mutex<GateStats>,
}

/// Predictions for the candidates of one request.
#[derive(Debug, Clone)]
pub struct Scored {
    pub model_version: String,
    pub tasks: Vec<String>,
    /// `candidates × tasks`, row-major, in candidate order.
    pub predictions: Vec<f32>,
    /// The features the candidates were scored with: `candidates ×
    /// DENSE_LEN` and `candidates × SPARSE_LEN`, row-major.
    pub dense: Vec<f32>,
    pub sparse: Vec<i64>,
    /// The schema that laid them out.
    pub schema_hash: String,
}

impl Scored {
    /// The predictions of candidate `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let t = self.tasks.len();
        &self.predictions[i * t..(i + 1) * t]
    }

    /// The features candidate `i` was scored with.
    pub fn feature_vector(&self, i: usize) -> FeatureVector {
        FeatureVector {
            schema_hash: self.schema_hash.clone(),
            dense: self.dense[i * DENSE_LEN..(i + 1) * DENSE_LEN].to_vec(),
            sparse: self.sparse[i * SPARSE_LEN..(i + 1) * SPARSE_LEN].to_vec(),
        }
    }
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub version: String,
    pub previous: Option<String>,
    pub provider: String,
    pub seconds: f64,
}

impl LoadedModel {
    /// Runs the graph on `rows` candidates; returns predictions
    /// (`rows × tasks`) and, for gated models, gates (`rows × tasks × experts`).
    pub fn run(&self, dense: &[f32], sparse: &[i64], rows: usize) -> Result<(Vec<f32>, Vec<f32>), RankError> {
        let t = self.tasks.len();
        let e = self.experts;
        self.pool.run(|session| {
            let run = |e: ort::Error| RankError::Run(e.to_string());
            // Views of the caller's rows: no copy (the rows are logged after).
            let dense = ort::value::TensorRef::from_array_view(([rows, DENSE_LEN], dense)).map_err(run)?;
            let sparse = ort::value::TensorRef::from_array_view(([rows, SPARSE_LEN], sparse)).map_err(run)?;
            let outputs = session.run(ort::inputs![DENSE_INPUT => dense, SPARSE_INPUT => sparse]).map_err(run)?;
            let (shape, p) = outputs[PREDICTIONS_OUTPUT].try_extract_tensor::<f32>().map_err(run)?;
            if shape.len() != 2 || shape[0] as usize != rows || shape[1] as usize != t {
                return Err(RankError::Run(format!(
                    "`{PREDICTIONS_OUTPUT}` has shape {shape:?}, expected [{rows}, {t}]"
                )));
            }
            let predictions = p.to_vec();
            let gates = if e > 0 {
                let (shape, g) = outputs[GATES_OUTPUT].try_extract_tensor::<f32>().map_err(run)?;
                if shape.len() != 3 || shape[0] as usize != rows || shape[1] as usize != t || shape[2] as usize != e {
                    return Err(RankError::Run(format!(
                        "`{GATES_OUTPUT}` has shape {shape:?}, expected [{rows}, {t}, {e}]"
                    )));
                }
                g.to_vec()
            } else {
                Vec::new()
            };
            Ok((predictions, gates))
        })
    }

    /// Mean weight of each expert in each task's mixture since the model was
    /// loaded (`[task][expert]`), and the rows it covers.
    pub fn gate_utilisation(&self) -> (Vec<Vec<f64>>, u64) {
        let g = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        let n = g.rows.max(1) as f64;
        let e = self.experts.max(1);
        (g.sums.chunks(e).map(|row| row.iter().map(|s| s / n).collect()).collect(), g.rows)
    }

    fn record_gates(&self, gates: &[f32], rows: usize) {
        if self.experts == 0 || rows == 0 {
            return;
        }
        let te = self.tasks.len() * self.experts;
        let mut g = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        if g.sums.len() != te {
            g.sums = vec![0.0; te];
            g.recent = vec![0.0; te];
        }
        let mut batch = vec![0.0f64; te];
        for row in gates.chunks_exact(te) {
            for (b, &x) in batch.iter_mut().zip(row) {
                *b += f64::from(x);
            }
        }
        let first = g.rows == 0;
        g.rows += rows as u64;
        const ALPHA: f64 = 0.05;
        let GateStats { sums, recent, .. } = &mut *g;
        for (i, total) in batch.iter().enumerate() {
            sums[i] += total;
            let mean = total / rows as f64;
            recent[i] = if first { mean } else { (1.0 - ALPHA) * recent[i] + ALPHA * mean };
        }
        if g.published.is_some_and(|at| at.elapsed() < GATE_GAUGE_EVERY) {
            return;
        }
        g.published = Some(Instant::now());
        for (i, value) in g.recent.iter().enumerate() {
            let (task, expert) = (i / self.experts, i % self.experts);
            metrics::gauge!(
                "watchnext_ranker_gate_weight",
                "task" => self.tasks[task].clone(),
                "expert" => expert.to_string()
            )
            .set(*value);
        }
    }
}

/// The ranker: the loaded models and the catalogue features are built from.
#[derive(Debug)]
pub struct Ranker {
    settings: RankerSettings,
    schema: FeatureSchema,
    runtime: Arc<OnnxRuntime>,
    session: SessionOptions,
    active: ArcSwapOption<LoadedModel>,
    previous: Mutex<Option<Arc<LoadedModel>>>,
    /// Loaded models, most recently loaded last (at most `keep_versions`).
    loaded: Mutex<Vec<Arc<LoadedModel>>>,
    catalog: ArcSwap<Catalog>,
    /// Directories that failed to load (the folder watcher skips them).
    rejected: Mutex<HashSet<PathBuf>>,
    /// `(created_ms, version)` of the newest model ever loaded: the folder
    /// watcher only looks above it.
    high_water: Mutex<Option<(i64, String)>>,
    installing: Mutex<()>,
}

/// How far in the future a manifest's `created_ms` may be.
pub const MAX_CLOCK_SKEW_MS: i64 = 86_400_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ranker {
    /// A ranker with no model yet, building features with `schema`.
    pub fn new(
        settings: RankerSettings,
        schema: FeatureSchema,
        runtime: Arc<OnnxRuntime>,
        session: SessionOptions,
    ) -> Result<Self, RankError> {
        let bad = |field, problem: &str| Err(RankError::Config { field, problem: problem.to_owned() });
        if settings.sessions == 0 || settings.sessions > 256 {
            return bad("sessions", "must be between 1 and 256");
        }
        if settings.warmup_rows == 0 {
            return bad("warmup_rows", "must be at least 1");
        }
        if settings.keep_versions < 2 {
            return bad("keep_versions", "must be at least 2 (the active model and the rollback target)");
        }
        let empty = Catalog::new(Vec::new()).map_err(|e| RankError::Run(e.to_string()))?;
        Ok(Self {
            settings,
            schema,
            runtime,
            session,
            active: ArcSwapOption::empty(),
            previous: Mutex::new(None),
            loaded: Mutex::new(Vec::new()),
            catalog: ArcSwap::from_pointee(empty),
            rejected: Mutex::new(HashSet::new()),
            high_water: Mutex::new(None),
            installing: Mutex::new(()),
        })
    }

    /// The feature schema models must match.
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    /// A new catalogue for the features (video topics, durations, ages).
    pub fn update_catalog(&self, catalog: &Arc<Catalog>) {
        self.catalog.store(catalog.clone());
    }

    /// The model serving by default.
    pub fn active(&self) -> Option<Arc<LoadedModel>> {
        self.active.load_full()
    }

    /// The model for `version` (`None` or empty: the active one).
    pub fn model(&self, version: Option<&str>) -> Result<Arc<LoadedModel>, RankError> {
        let active = self.active().ok_or(RankError::NoModel)?;
        match version.filter(|v| !v.is_empty()) {
            None => Ok(active),
            Some(v) if v == active.version => Ok(active),
            Some(v) => {
                let loaded = lock(&self.loaded);
                loaded.iter().rev().find(|m| m.version == v).cloned().ok_or_else(|| {
                    let names: Vec<&str> = loaded.iter().map(|m| m.version.as_str()).collect();
                    RankError::UnknownVersion(v.to_owned(), names.join(", "))
                })
            }
        }
    }

    /// Versions loaded, most recent last.
    pub fn loaded_versions(&self) -> Vec<String> {
        lock(&self.loaded).iter().map(|m| m.version.clone()).collect()
    }

    /// Every loaded model (the active one, the rollback target and the
    /// others kept for pinned arms), most recently loaded last.
    pub fn loaded_models(&self) -> Vec<Arc<LoadedModel>> {
        lock(&self.loaded).clone()
    }

    /// The dense and sparse features of `candidates` for `query`.
    pub fn features(&self, query: &Query, candidates: &[RankCandidate]) -> (Vec<f32>, Vec<i64>) {
        let catalog = self.catalog.load();
        let input = RequestInput::of(query);
        let request = RequestFeatures::new(&self.schema, &catalog, &input);
        let n = candidates.len();
        let mut dense = vec![0.0f32; n * DENSE_LEN];
        let mut sparse = vec![0i64; n * SPARSE_LEN];
        for ((c, d), s) in
            candidates.iter().zip(dense.chunks_exact_mut(DENSE_LEN)).zip(sparse.chunks_exact_mut(SPARSE_LEN))
        {
            request.candidate(&catalog, c.video.as_str(), &c.sources, d, s);
        }
        (dense, sparse)
    }

    /// Scores `candidates` for `query` with the model `version` (`None`:
    /// the active one), all in one run.
    pub fn rank(
        &self,
        query: &Query,
        candidates: &[RankCandidate],
        version: Option<&str>,
    ) -> Result<Scored, RankError> {
        let model = self.model(version)?;
        let started = Instant::now();
        let (dense, sparse) = self.features(query, candidates);
        let n = candidates.len();
        metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::FEATURES).record(started.elapsed().as_secs_f64());
        let onnx = Instant::now();
        let (predictions, gates) = if n == 0 { (Vec::new(), Vec::new()) } else { model.run(&dense, &sparse, n)? };
        metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::ONNX).record(onnx.elapsed().as_secs_f64());
        model.record_gates(&gates, n);
        metrics::counter!("watchnext_ranker_candidates_total").increment(n as u64);
        metrics::histogram!("watchnext_ranker_rank_seconds").record(started.elapsed().as_secs_f64());
        Ok(Scored {
            model_version: model.version.clone(),
            tasks: model.tasks.clone(),
            predictions,
            dense,
            sparse,
            schema_hash: self.schema.hash().to_owned(),
        })
    }

    fn reject(&self, dir: &Path, reason: String) -> RankError {
        lock(&self.rejected).insert(dir.to_owned());
        tracing::error!(dir = %dir.display(), %reason, "model rejected; the active model keeps serving");
        RankError::Model { dir: dir.display().to_string(), reason }
    }

    /// Loads, checks and warms up the model in `dir`, then makes it the
    /// active one (the previous active model becomes the rollback target).
    pub fn load_dir(&self, dir: &Path) -> Result<LoadReport, RankError> {
        self.load_dir_for(dir, None)
    }

    /// [`Ranker::load_dir`] for a caller that may give up: nothing changes
    /// unless `intent` is still wanted when the model is ready to swap in.
    pub fn load_dir_for(&self, dir: &Path, intent: Option<&Intent>) -> Result<LoadReport, RankError> {
        let _one = lock(&self.installing);
        let started = Instant::now();
        let model = self.prepare(dir).map_err(|reason| self.reject(dir, reason))?;
        commit(intent)?;
        let model = Arc::new(model);
        let provider = model.pool.provider().name().to_owned();
        let old = self.active.swap(Some(model.clone()));
        // Reloading the active version replaces it but keeps the rollback target.
        let old = old.filter(|m| m.version != model.version);
        let previous = match old {
            Some(m) => {
                let version = m.version.clone();
                *lock(&self.previous) = Some(m);
                Some(version)
            }
            None => lock(&self.previous).as_ref().map(|m| m.version.clone()),
        };
        {
            let mut loaded = lock(&self.loaded);
            loaded.retain(|m| m.version != model.version);
            loaded.push(model.clone());
            let keep = self.settings.keep_versions;
            let previous = lock(&self.previous).as_ref().map(|m| m.version.clone());
            while loaded.len() > keep {
                // Evict the oldest that is neither active nor the rollback target.
                let Some(i) =
                    loaded.iter().position(|m| m.version != model.version && Some(&m.version) != previous.as_ref())
                else {
                    break;
                };
                loaded.remove(i);
            }
        }
        lock(&self.rejected).remove(dir);
        {
            let key = (model.manifest.created_ms, model.version.clone());
            let mut high = lock(&self.high_water);
            if high.as_ref().is_none_or(|h| key > *h) {
                *high = Some(key);
            }
        }
        let report =
            LoadReport { version: model.version.clone(), previous, provider, seconds: started.elapsed().as_secs_f64() };
        tracing::info!(
            version = %report.version,
            previous = report.previous.as_deref().unwrap_or(""),
            provider = %report.provider,
            precision = %model.manifest.precision,
            seconds = report.seconds,
            "ranking model swapped in"
        );
        Ok(report)
    }

    /// Reads and checks a model directory, loads its sessions and warms
    /// them up; `Err` is the reason it cannot serve.
    fn prepare(&self, dir: &Path) -> Result<LoadedModel, String> {
        let manifest = ModelManifest::read(dir).map_err(|e| e.to_string())?;
        manifest.check(&self.schema).map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if manifest.created_ms > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(format!(
                "the manifest's created_ms ({}) is more than a day ahead of this machine's clock ({now}); fix the \
                 clock of the machine that trained it, or the manifest",
                manifest.created_ms
            ));
        }
        let path = dir.join(MODEL_FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pool =
            SessionPool::new(&self.runtime, &manifest.model_version, &bytes, &self.session, self.settings.sessions)
                .map_err(|e| e.to_string())?;
        let mut inputs = pool.input_names().to_vec();
        inputs.sort();
        if inputs != [DENSE_INPUT, SPARSE_INPUT] {
            return Err(format!(
                "the graph's inputs are {inputs:?}; the contract is exactly `{DENSE_INPUT}` and `{SPARSE_INPUT}`"
            ));
        }
        let experts = manifest.experts as usize;
        for needed in [Some(PREDICTIONS_OUTPUT), (experts > 0).then_some(GATES_OUTPUT)].into_iter().flatten() {
            if !pool.output_names().iter().any(|o| o == needed) {
                return Err(format!("the graph has no `{needed}` output (it has {:?})", pool.output_names()));
            }
        }
        let model = LoadedModel {
            version: manifest.model_version.clone(),
            dir: dir.to_owned(),
            tasks: manifest.tasks.iter().map(|t| t.name.clone()).collect(),
            experts,
            loaded_at_ms: now,
            manifest,
            pool,
            gates: Mutex::new(GateStats::default()),
        };
        // Warm-up: a full batch of plausible rows (every sparse bucket in
        // range), timed, with every output checked.
        let rows = self.settings.warmup_rows;
        let buckets = self.schema.sparse_buckets();
        let dense: Vec<f32> = (0..rows * DENSE_LEN).map(|i| ((i % 7) as f32) * 0.25).collect();
        let sparse: Vec<i64> =
            (0..rows * SPARSE_LEN).map(|i| (i as i64 * 7919) % i64::from(buckets[i % SPARSE_LEN].max(1))).collect();
        let warm = Instant::now();
        let (p, g) = model.run(&dense, &sparse, rows).map_err(|e| format!("warm-up run: {e}"))?;
        if let Some(i) = p.iter().chain(&g).position(|x| !x.is_finite()) {
            return Err(format!("warm-up run: output value {i} is not finite"));
        }
        tracing::debug!(version = %model.version, rows, ms = warm.elapsed().as_secs_f64() * 1e3, "ranking model warmed up");
        Ok(model)
    }

    /// What the folder watcher calls: loads the newest valid model under
    /// `root` among those newer than any loaded before (see the module
    /// documentation). `Ok(None)` when there is nothing new to load; `Err`
    /// (the newest refusal) when every new directory was refused.
    pub fn reload_newest(&self, root: &Path) -> Result<Option<LoadReport>, RankError> {
        let above = lock(&self.high_water).clone();
        self.newest_valid(root, above, None)
    }

    /// Loads the newest valid model under `root` unless it is the active
    /// one (an operator's reload: also after a rollback). Directories
    /// refused before are skipped.
    pub fn load_newest(&self, root: &Path, intent: Option<&Intent>) -> Result<Option<LoadReport>, RankError> {
        self.newest_valid(root, None, intent)
    }

    fn newest_valid(
        &self,
        root: &Path,
        above: Option<(i64, String)>,
        intent: Option<&Intent>,
    ) -> Result<Option<LoadReport>, RankError> {
        let mut refused = None;
        for (dir, manifest) in model_dirs(root) {
            if above.as_ref().is_some_and(|a| (manifest.created_ms, &manifest.model_version) <= (a.0, &a.1)) {
                break;
            }
            if self.active().is_some_and(|m| m.dir == dir || m.version == manifest.model_version) {
                break;
            }
            if lock(&self.rejected).contains(&dir) {
                continue;
            }
            match self.load_dir_for(&dir, intent) {
                Ok(report) => return Ok(Some(report)),
                Err(RankError::Withdrawn) => return Err(RankError::Withdrawn),
                Err(err) => {
                    refused.get_or_insert(err);
                }
            }
        }
        refused.map_or(Ok(None), Err)
    }

    /// Makes the previous model active again (and the active one the
    /// rollback target); returns `(active, previous)` versions.
    pub fn rollback(&self) -> Result<(String, String), RankError> {
        self.rollback_for(None)
    }

    /// [`Ranker::rollback`] for a caller that may give up (see [`Intent`]).
    pub fn rollback_for(&self, intent: Option<&Intent>) -> Result<(String, String), RankError> {
        let _one = lock(&self.installing);
        let mut previous = lock(&self.previous);
        if previous.is_none() {
            return Err(RankError::NoPrevious);
        }
        commit(intent)?;
        let back = previous.take().ok_or(RankError::NoPrevious)?;
        let current = self.active.swap(Some(back.clone()));
        *previous = current;
        let now = (back.version.clone(), previous.as_ref().map(|m| m.version.clone()).unwrap_or_default());
        tracing::warn!(active = %now.0, previous = %now.1, "ranking model rolled back");
        Ok(now)
    }
}

/// The model directories under `root`, newest first by manifest creation
/// time (directories without a readable manifest are skipped).
pub fn model_dirs(root: &Path) -> Vec<(PathBuf, ModelManifest)> {
    watchnext_core::fsutil::dirs_newest_first(root, |dir| {
        ModelManifest::read(dir).ok().map(|m| (m.created_ms, m.model_version.clone(), m))
    })
}

/// The newest model directory under `root` (see [`model_dirs`]).
pub fn newest_model_dir(root: &Path) -> Option<(PathBuf, ModelManifest)> {
    model_dirs(root).into_iter().next()
}
