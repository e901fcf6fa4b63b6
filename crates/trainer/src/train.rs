//! The training loop: mini-batches in time order, AdamW, per-epoch
//! validation on a later time period, early stopping, checkpoints, resume.
//!
//! - **Order** (`trainer.order`): every epoch walks the training rows in
//!   impression-time order (as the paper trains, sequentially over logs),
//!   or its requests in a new seeded order (`shuffled`: one permuted copy of
//!   the rows per epoch, a request's rows kept together); either way batches
//!   are contiguous row ranges, copied into tensors without gathering.
//! - **AdamW** is ours (a few tensor ops per parameter) rather than
//!   `candle-nn`'s, so that its moments can be checkpointed and a resumed
//!   run continues exactly. Weight decay applies to weight matrices only,
//!   not to embeddings, biases or the shallow tower.
//! - **Reproducible**: parameters are initialised from the seed, and the
//!   dropout draws of epoch k come from a ChaCha8 stream keyed by
//!   `(seed, k)`, so a run resumed at an epoch boundary equals an
//!   uninterrupted one.
//! - **Weight averaging** (`trainer.weight_average`, the decay): the model
//!   validated and kept is an exponential moving average of the parameters
//!   over the steps, not the last step's parameters (see [`Average`]).
//! - **Checkpoints** (`dir/checkpoint.safetensors` + `dir/state.json`, each
//!   written to a temporary file and renamed) hold the parameters, the
//!   optimiser moments, the best parameters so far, the weight average and
//!   the per-epoch history.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use candle_core::{Tensor, Var};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use watchnext_core::{features::DENSE_LEN, model::TaskKind};

use crate::{
    config::{BatchOrder, TrainerConfig},
    dataset::Examples,
    model::{BatchRng, Model},
    optim::AdamStep,
};

/// A training failure, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: PathBuf, problem: String },
    #[error("{0}")]
    Data(String),
}

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_task_loss: Vec<f64>,
    pub validation_loss: f64,
    pub validation_task_loss: Vec<f64>,
    /// Validation AUC per binary task (`None` for regression tasks or one-class data).
    pub validation_auc: Vec<Option<f64>>,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochMetrics>,
    /// 1-based epoch whose parameters were kept (lowest validation loss).
    pub best_epoch: usize,
    pub stopped_early: bool,
    /// Epochs restored from a checkpoint rather than run now.
    pub resumed_epochs: usize,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub progress: bool,
    /// Where checkpoints go; `None` keeps nothing on disk.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir`, if there is one.
    pub resume: bool,
}

/// Mean and 1/std of each dense feature over `ex` (std 0 → 1).
pub fn dense_standardisation(ex: &Examples) -> (Vec<f32>, Vec<f32>) {
    let n = ex.len.max(1) as f64;
    let mut sum = [0.0f64; DENSE_LEN];
    let mut sq = [0.0f64; DENSE_LEN];
    for row in ex.dense.chunks_exact(DENSE_LEN) {
        for (j, &v) in row.iter().enumerate() {
            sum[j] += f64::from(v);
            sq[j] += f64::from(v) * f64::from(v);
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let inv_std = sum
        .iter()
        .zip(&sq)
        .map(|(s, q)| {
            let var = (q / n - (s / n) * (s / n)).max(0.0);
            if var > 1e-12 { (1.0 / var.sqrt()) as f32 } else { 1.0 }
        })
        .collect();
    (mean, inv_std)
}

/// Masked mean label per task.
pub fn label_means(ex: &Examples) -> Vec<f32> {
    let t = ex.tasks.len();
    let mut sum = vec![0.0f64; t];
    let mut count = vec![0.0f64; t];
    for (labels, mask) in ex.labels.chunks_exact(t.max(1)).zip(ex.mask.chunks_exact(t.max(1))) {
        for k in 0..t {
            sum[k] += f64::from(labels[k] * mask[k]);
            count[k] += f64::from(mask[k]);
        }
    }
    sum.iter().zip(&count).map(|(s, c)| if *c > 0.0 { (s / c) as f32 } else { 0.0 }).collect()
}

/// AdamW with bias correction; moments live beside the parameters (the
/// arithmetic is [`crate::optim`]'s).
#[derive(Debug)]
struct AdamW {
    lr: f64,
    /// Learning-rate multiple of the shallow tower's weights.
    bias_scale: f64,
    weight_decay: f64,
    step: u64,
    m: Vec<Var>,
    v: Vec<Var>,
}

impl AdamW {
    fn new(model: &Model, lr: f64, bias_scale: f64, weight_decay: f64) -> candle_core::Result<Self> {
        let zeros = |p: &crate::model::Param| Var::zeros(p.var.dims(), candle_core::DType::F32, model.device());
        Ok(Self {
            lr,
            bias_scale,
            weight_decay,
            step: 0,
            m: model.params().iter().map(zeros).collect::<Result<_, _>>()?,
            v: model.params().iter().map(zeros).collect::<Result<_, _>>()?,
        })
    }

    fn update(
        &mut self,
        model: &Model,
        grads: &candle_core::backprop::GradStore,
        batch: &crate::model::Batch,
    ) -> candle_core::Result<()> {
        self.step += 1;
        let s = AdamStep::at(self.step);
        for (i, p) in model.params().iter().enumerate() {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            let decay =
                if self.weight_decay > 0.0 && p.name.ends_with(".weight") { self.lr * self.weight_decay } else { 0.0 };
            let lr = if p.name.starts_with("bias.") { self.lr * self.bias_scale } else { self.lr };
            crate::optim::dense_step(&p.var, &self.m[i], &self.v[i], g, &s, lr, decay)?;
        }
        self.update_tables(model, grads, batch, &s)
    }

    /// Lazy Adam on the embedding rows the batch used: a row's gradients
    /// from every field that reads its table are summed first, then only
    /// those rows' moments and values move (no weight decay on embeddings).
    fn update_tables(
        &self,
        model: &Model,
        grads: &candle_core::backprop::GradStore,
        batch: &crate::model::Batch,
        s: &AdamStep,
    ) -> candle_core::Result<()> {
        let mut tables = model.tables();
        let mut sums: Vec<HashMap<u32, Vec<f32>>> = vec![HashMap::new(); tables.len()];
        for (f, (leaf, rows)) in batch.embedded.iter().zip(&batch.field_rows).enumerate() {
            let Some(g) = grads.get(leaf.as_tensor()) else { continue };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let table = crate::model::FIELD_TABLE[f];
            crate::optim::accumulate_rows(&mut sums[table], rows, &g, tables[table].dim);
        }
        for (t, rows) in tables.iter_mut().zip(&sums) {
            crate::optim::rows_step(t, rows, s, self.lr);
        }
        Ok(())
    }
}

/// Named parameter values.
type Values = Vec<(String, Tensor)>;

/// An exponential moving average of every parameter over training steps
/// (Polyak averaging, `trainer.weight_average`). The parameters after the
/// last step of an epoch carry that step's noise — with a constant learning
/// rate, the last few hundred batches decide much of where they land; their
/// average over the last ~1 / (1 − decay) steps does not.
struct Average {
    /// Dense parameters, in `Model::params` order.
    params: Vec<Tensor>,
    /// Embedding tables, in `Model::tables` order.
    tables: Vec<Vec<f32>>,
}

impl Average {
    fn new(model: &Model) -> candle_core::Result<Self> {
        let params = model.params().iter().map(|p| p.var.as_tensor().copy()).collect::<Result<_, _>>()?;
        let tables = model.tables().iter().map(|t| t.values.clone()).collect();
        Ok(Self { params, tables })
    }

    /// Moves the average towards the parameters after step `step` (1-based).
    /// Early steps use a smaller decay, `(1 + t) / (10 + t)`, so the starting
    /// point is forgotten quickly.
    fn update(&mut self, model: &Model, decay: f64, step: u64) -> candle_core::Result<()> {
        let t = step as f64;
        let d = decay.min((1.0 + t) / (10.0 + t));
        for (avg, p) in self.params.iter_mut().zip(model.params()) {
            *avg = (avg.affine(d, 0.0)? + p.var.as_tensor().affine(1.0 - d, 0.0)?)?;
        }
        let (d, e) = (d as f32, (1.0 - d) as f32);
        for (avg, table) in self.tables.iter_mut().zip(model.tables().iter()) {
            for (a, v) in avg.iter_mut().zip(&table.values) {
                *a = *a * d + *v * e;
            }
        }
        Ok(())
    }

    /// The average in the form of `Model::values`.
    fn values(&self, model: &Model) -> candle_core::Result<Values> {
        let mut out = Vec::new();
        for (avg, t) in self.tables.iter().zip(model.tables().iter()) {
            out.push((t.name.clone(), Tensor::from_slice(avg, (t.rows, t.dim), model.device())?));
        }
        for (avg, p) in self.params.iter().zip(model.params()) {
            out.push((p.name.clone(), avg.clone()));
        }
        Ok(out)
    }

    /// Replaces the average with checkpointed `values` (names as `values`).
    fn restore(&mut self, model: &Model, values: &Values) -> Result<(), String> {
        let find = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        for (avg, t) in self.tables.iter_mut().zip(model.tables().iter()) {
            let v = find(&t.name).ok_or_else(|| format!("missing tensor `average/{}`", t.name))?;
            let v: Vec<f32> = v.flatten_all().and_then(|v| v.to_vec1()).map_err(|e| e.to_string())?;
            if v.len() != avg.len() {
                return Err(format!("`average/{}` does not fit the model", t.name));
            }
            *avg = v;
        }
        for (avg, p) in self.params.iter_mut().zip(model.params()) {
            let v = find(&p.name).ok_or_else(|| format!("missing tensor `average/{}`", p.name))?;
            if v.dims() != p.var.dims() {
                return Err(format!("`average/{}` does not fit the model", p.name));
            }
            *avg = v.clone();
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// Digest of the config the checkpoint belongs to.
    config: String,
    step: u64,
    epochs: Vec<EpochMetrics>,
    best_epoch: usize,
    best_loss: f64,
    since_best: usize,
}

/// Identifies what a checkpoint can continue: everything but the schedule's
/// length (a run may be resumed with more epochs or more patience).
fn config_digest(config: &TrainerConfig, rows: usize) -> String {
    let comparable = TrainerConfig { max_epochs: 0, patience: 0, ..config.clone() };
    let text = serde_json::to_string(&comparable).unwrap_or_default();
    format!(
        "{:016x}-{rows}",
        watchnext_core::features::stable_hash(watchnext_core::features::FNV_OFFSET, text.as_bytes())
    )
}

/// Loss and per-task losses of `model` over `ex` (no dropout), plus AUCs.
/// Total loss, per-task losses and per-task AUCs (binary tasks).
pub type LossReport = (f64, Vec<f64>, Vec<Option<f64>>);

/// The end of the batch starting at row `start`: `size` rows on, moved
/// forward to the end of the group (request) it cuts when a list-wise loss
/// needs whole groups.
pub fn batch_end(model: &Model, ex: &Examples, start: usize, size: usize) -> usize {
    let mut end = (start + size.max(1)).min(ex.len);
    if model.config.click_loss == crate::config::ClickLoss::Softmax {
        while end < ex.len && end > start && ex.request[end] == ex.request[end - 1] {
            end += 1;
        }
    }
    end
}

/// Every row of `ex` once, its requests (runs of rows sharing one) in an
/// order drawn from `(seed, epoch)`, each request's rows together and in
/// their own order.
pub fn shuffled_rows(ex: &Examples, seed: u64, epoch: usize) -> Vec<usize> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for i in 1..=ex.len {
        if i == ex.len || ex.request[i] != ex.request[start] {
            groups.push(start..i);
            start = i;
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(epoch as u64));
    groups.shuffle(&mut rng);
    groups.into_iter().flatten().collect()
}

pub fn evaluate_loss(model: &Model, ex: &Examples) -> Result<LossReport, TrainError> {
    let t = model.config.tasks.len();
    let bs = 4_096;
    let mut sums = vec![0.0f64; t];
    let mut counts = vec![0.0f64; t];
    let mut scores: Vec<Vec<f32>> = vec![Vec::new(); t];
    let mut truth: Vec<Vec<bool>> = vec![Vec::new(); t];
    let mut start = 0;
    while start < ex.len {
        let end = batch_end(model, ex, start, bs);
        let batch = model.batch(ex, start, end, None)?;
        let fwd = model.forward(&batch, true)?;
        let Some((_, mask)) = &batch.labels else { break };
        let (_, per_task) = model.loss(&fwd, &batch)?;
        let m = mask.sum(0)?.to_vec1::<f32>()?;
        let logits = fwd.logits.to_vec2::<f32>()?;
        for k in 0..t {
            sums[k] += f64::from(per_task[k]) * f64::from(m[k]);
            counts[k] += f64::from(m[k]);
            if model.config.tasks[k].kind == TaskKind::Binary {
                for (r, row) in logits.iter().enumerate() {
                    let i = start + r;
                    if ex.mask[i * t + k] > 0.0 {
                        scores[k].push(row[k]);
                        truth[k].push(ex.labels[i * t + k] > 0.5);
                    }
                }
            }
        }
        start = end;
    }
    let per: Vec<f64> = sums.iter().zip(&counts).map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 }).collect();
    let total = per.iter().zip(&model.config.tasks).map(|(l, task)| l * f64::from(task.loss_weight)).sum();
    let aucs = (0..t).map(|k| watchnext_eval::metrics::auc(&scores[k], &truth[k])).collect();
    Ok((total, per, aucs))
}

fn save_checkpoint(
    dir: &Path,
    model: &Model,
    opt: &AdamW,
    best: &[(String, Tensor)],
    average: Option<&Average>,
    state: &State,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_owned(), source })?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, p) in model.params().iter().enumerate() {
        tensors.insert(format!("param/{}", p.name), p.var.as_tensor().clone());
        tensors.insert(format!("adam_m/{}", p.name), opt.m[i].as_tensor().clone());
        tensors.insert(format!("adam_v/{}", p.name), opt.v[i].as_tensor().clone());
    }
    for t in model.tables().iter() {
        let shape = (t.rows, t.dim);
        tensors.insert(format!("param/{}", t.name), Tensor::from_slice(&t.values, shape, model.device())?);
        tensors.insert(format!("adam_m/{}", t.name), Tensor::from_slice(&t.m, shape, model.device())?);
        tensors.insert(format!("adam_v/{}", t.name), Tensor::from_slice(&t.v, shape, model.device())?);
    }
    for (name, t) in best {
        tensors.insert(format!("best/{name}"), t.clone());
    }
    if let Some(average) = average {
        for (name, t) in average.values(model)? {
            tensors.insert(format!("average/{name}"), t);
        }
    }
    let path = dir.join("checkpoint.safetensors");
    let tmp = dir.join(".checkpoint.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Data(e.to_string()))?;
    let state_path = dir.join("state.json");
    watchnext_core::fsutil::write_atomic(&state_path, &json)
        .map_err(|source| TrainError::Io { path: state_path, source })
}

/// Restores a checkpoint; `None` when there is none.
fn load_checkpoint(
    dir: &Path,
    model: &Model,
    opt: &mut AdamW,
    digest: &str,
) -> Result<Option<(State, Values, Option<Values>)>, TrainError> {
    let state_path = dir.join("state.json");
    let Ok(bytes) = std::fs::read(&state_path) else { return Ok(None) };
    let bad = |problem: String| TrainError::Checkpoint { path: state_path.clone(), problem };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if state.config != digest {
        return Err(bad(format!(
            "belongs to another configuration or data set ({} here, {digest} now); remove the folder or train \
             without --resume",
            state.config
        )));
    }
    let path = dir.join("checkpoint.safetensors");
    let tensors = candle_core::safetensors::load(&path, model.device())
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), problem: e.to_string() })?;
    let get = |key: String| {
        tensors
            .get(&key)
            .cloned()
            .ok_or_else(|| TrainError::Checkpoint { path: path.clone(), problem: format!("missing tensor `{key}`") })
    };
    let mut params = Vec::new();
    let mut best = Vec::new();
    let names: Vec<String> = model.tables().iter().map(|t| t.name.clone()).collect();
    for name in names {
        params.push((name.clone(), get(format!("param/{name}"))?));
        best.push((name.clone(), get(format!("best/{name}"))?));
        let m = get(format!("adam_m/{name}"))?.flatten_all()?.to_vec1::<f32>()?;
        let v = get(format!("adam_v/{name}"))?.flatten_all()?.to_vec1::<f32>()?;
        let mut tables = model.tables();
        if let Some(t) = tables.iter_mut().find(|t| t.name == name)
            && m.len() == t.values.len()
            && v.len() == t.values.len()
        {
            (t.m, t.v) = (m, v);
        } else {
            return Err(TrainError::Checkpoint {
                path: path.clone(),
                problem: format!("moments of `{name}` do not fit"),
            });
        }
    }
    for (i, p) in model.params().iter().enumerate() {
        params.push((p.name.clone(), get(format!("param/{}", p.name))?));
        best.push((p.name.clone(), get(format!("best/{}", p.name))?));
        opt.m[i].set(&get(format!("adam_m/{}", p.name))?)?;
        opt.v[i].set(&get(format!("adam_v/{}", p.name))?)?;
    }
    model.load_values(&params)?;
    opt.step = state.step;
    let prefix = "average/";
    let average: Values =
        tensors.iter().filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_owned(), t.clone()))).collect();
    Ok(Some((state, best, (!average.is_empty()).then_some(average))))
}

/// Trains `model` on `train`, early-stopping on `validation`; leaves the
/// best epoch's parameters in the model.
pub fn train(
    model: &Model,
    train: &Examples,
    validation: &Examples,
    options: &TrainOptions,
) -> Result<TrainReport, TrainError> {
    // The kernels run on a pool of `threads` threads of our own, whatever
    // the process's global pool is.
    let threads = match model.config.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("watchnext-train-{i}"))
        .build()
        .map_err(|e| TrainError::Data(format!("starting {threads} training threads: {e}")))?;
    pool.install(|| train_on_pool(model, train, validation, options))
}

fn train_on_pool(
    model: &Model,
    train: &Examples,
    validation: &Examples,
    options: &TrainOptions,
) -> Result<TrainReport, TrainError> {
    let c = model.config.clone();
    if train.len == 0 {
        return Err(TrainError::Data("no training rows: generate or import data first".into()));
    }
    if validation.len == 0 {
        return Err(TrainError::Data("no validation rows: the data covers too short a time span".into()));
    }
    let mut opt = AdamW::new(model, c.learning_rate, c.bias_learning_rate_scale, c.weight_decay)?;
    let digest = config_digest(&c, train.len);
    let mut state = State {
        config: digest.clone(),
        step: 0,
        epochs: Vec::new(),
        best_epoch: 0,
        best_loss: f64::INFINITY,
        since_best: 0,
    };
    let mut best = model.values()?;
    let mut average = if c.weight_average > 0.0 { Some(Average::new(model)?) } else { None };
    let mut resumed = 0;
    if let (Some(dir), true) = (&options.checkpoint_dir, options.resume)
        && let Some((s, b, a)) = load_checkpoint(dir, model, &mut opt, &digest)?
    {
        resumed = s.epochs.len();
        tracing::info!(epochs = resumed, "resumed from checkpoint {}", dir.display());
        state = s;
        best = b;
        if let Some(avg) = &mut average {
            let values = a.ok_or_else(|| TrainError::Checkpoint {
                path: dir.join("checkpoint.safetensors"),
                problem: "holds no weight average; remove the folder or train without --resume".into(),
            })?;
            avg.restore(model, &values)
                .map_err(|problem| TrainError::Checkpoint { path: dir.join("checkpoint.safetensors"), problem })?;
        }
    }
    let batches = train.len.div_ceil(c.batch_size);
    let mut stopped_early = false;
    for epoch in state.epochs.len() + 1..=c.max_epochs {
        if state.since_best >= c.patience && state.best_epoch > 0 {
            stopped_early = true;
            break;
        }
        let bar = if options.progress {
            ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "epoch {epoch}/{} [{{wide_bar}}] {{pos}}/{{len}} batches ({{per_sec}}, eta {{eta}}) {{msg}}",
            c.max_epochs
        )) {
            bar.set_style(style);
        }
        let mut rng = BatchRng(ChaCha8Rng::seed_from_u64(c.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64)));
        let shuffled;
        let train = match c.order {
            BatchOrder::Time => train,
            BatchOrder::Shuffled => {
                shuffled = train.select(&shuffled_rows(train, c.seed, epoch));
                &shuffled
            }
        };
        let started = Instant::now();
        let t = c.tasks.len();
        let (mut loss_sum, mut task_sum, mut rows) = (0.0f64, vec![0.0f64; t], 0usize);
        let mut start = 0;
        while start < train.len {
            let end = batch_end(model, train, start, c.batch_size);
            let batch = model.batch(train, start, end, Some(&mut rng))?;
            let fwd = model.forward(&batch, true)?;
            let (loss, per_task) = model.loss(&fwd, &batch)?;
            let grads = loss.backward()?;
            opt.update(model, &grads, &batch)?;
            if let Some(avg) = &mut average {
                avg.update(model, c.weight_average, opt.step)?;
            }
            let n = end - start;
            let l = f64::from(loss.to_scalar::<f32>()?);
            if !l.is_finite() {
                return Err(TrainError::Data(format!(
                    "the loss diverged (non-finite) at epoch {epoch}, rows {start}..{end}; lower the learning rate"
                )));
            }
            loss_sum += l * n as f64;
            for (s, p) in task_sum.iter_mut().zip(&per_task) {
                *s += f64::from(*p) * n as f64;
            }
            rows += n;
            bar.inc(1);
            if bar.position() % 20 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / rows as f64));
            }
            start = end;
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        // Validated (and kept) is the averaged model when there is one; the
        // training walk then goes on from its own parameters.
        let walked = match &average {
            Some(avg) => {
                let walked = model.values()?;
                model.load_values(&avg.values(model)?)?;
                Some(walked)
            }
            None => None,
        };
        let (validation_loss, validation_task_loss, validation_auc) = evaluate_loss(model, validation)?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / rows.max(1) as f64,
            train_task_loss: task_sum.iter().map(|s| s / rows.max(1) as f64).collect(),
            validation_loss,
            validation_task_loss,
            validation_auc,
            seconds,
            examples_per_second: rows as f64 / seconds.max(1e-9),
        };
        tracing::info!(
            epoch,
            train_loss = format!("{:.5}", metrics.train_loss),
            validation_loss = format!("{:.5}", metrics.validation_loss),
            examples_per_second = format!("{:.0}", metrics.examples_per_second),
            "epoch done"
        );
        if options.progress {
            let aucs: Vec<String> = c
                .tasks
                .iter()
                .zip(&metrics.validation_auc)
                .filter_map(|(task, a)| a.map(|a| format!("{} {a:.4}", task.name)))
                .collect();
            eprintln!(
                "epoch {epoch}: train loss {:.4}, validation loss {:.4}, AUC [{}], {:.0} examples/s",
                metrics.train_loss,
                metrics.validation_loss,
                aucs.join(", "),
                metrics.examples_per_second
            );
        }
        if metrics.validation_loss < state.best_loss - 1e-6 {
            state.best_loss = metrics.validation_loss;
            state.best_epoch = epoch;
            state.since_best = 0;
            best = model.values()?;
        } else {
            state.since_best += 1;
        }
        if let Some(walked) = walked {
            model.load_values(&walked)?;
        }
        state.epochs.push(metrics);
        state.step = opt.step;
        if let Some(dir) = &options.checkpoint_dir {
            save_checkpoint(dir, model, &opt, &best, average.as_ref(), &state)?;
        }
    }
    if state.since_best >= c.patience && state.epochs.len() < c.max_epochs {
        stopped_early = true;
    }
    model.load_values(&best)?;
    Ok(TrainReport { epochs: state.epochs, best_epoch: state.best_epoch, stopped_early, resumed_epochs: resumed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(requests: &[u32]) -> Examples {
        Examples {
            len: requests.len(),
            request: requests.to_vec(),
            requests: (0..=requests.iter().copied().max().unwrap_or(0)).map(|r| format!("r{r}")).collect(),
            ..Examples::default()
        }
    }

    #[test]
    fn shuffled_rows_keep_each_request_together_and_change_every_epoch() {
        // 40 requests of 1..=4 rows each.
        let requests: Vec<u32> = (0..40u32).flat_map(|r| std::iter::repeat_n(r, 1 + r as usize % 4)).collect();
        let ex = rows_of(&requests);
        let first = shuffled_rows(&ex, 7, 1);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..ex.len).collect::<Vec<_>>(), "every row exactly once");
        // A request's rows are adjacent and in their own order.
        for pair in first.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if requests[a] == requests[b] {
                assert_eq!(b, a + 1);
            }
        }
        let runs = first.windows(2).filter(|p| requests[p[0]] != requests[p[1]]).count() + 1;
        assert_eq!(runs, 40, "each request is one run");
        assert_ne!(first, (0..ex.len).collect::<Vec<_>>(), "not the time order");
        assert_ne!(first, shuffled_rows(&ex, 7, 2), "a new order every epoch");
        assert_eq!(first, shuffled_rows(&ex, 7, 1), "the same order for the same seed and epoch");
    }
}
