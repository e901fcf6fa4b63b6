//! The sequence model behind the sequence candidate generator: a user's
//! recent watches → a user vector; the next watch is the video whose
//! embedding is nearest it.
//!
//! # Network
//! ```text
//! history (last L watches, left-padded) ──▶ input embeddings + position embeddings = h₁…h_L
//!   attention pooling:  a_i = softmax_i(q · tanh(W h_i + b)), padding masked out
//!   z = MLP([Σ a_i h_i ; h_L])          (pooled history and the most recent watch)
//!   user = z / ‖z‖
//! score(user, v) = user · o_v / τ,  o_v = output embedding of v, unit length
//! ```
//! The input and output embeddings are separate tables (a video as context
//! differs from a video as a target), both on the host with lazy sparse
//! Adam updates as in the ranking trainer ([`crate::optim`]).
//!
//! # Training
//! Next-watch prediction over every user's watch sequence (each watch after
//! the first is a target, its predecessors the history), in shuffled
//! mini-batches, with a **sampled softmax**: the candidates of a batch are
//! its own targets (in-batch negatives) plus `sampled_negatives` videos
//! drawn uniformly from the vocabulary, de-duplicated. In-batch negatives
//! are drawn in proportion to popularity, which would teach the model to
//! push popular videos down; the **logQ correction** subtracts from each
//! candidate's logit the log of its probability of being in the candidate
//! set, `ln min(1, B·p_v + S/V)` (Yi et al., RecSys 2019).
//!
//! Early stopping watches HR@K of the held-out last watch of
//! `validation_users` users, scored exactly against the whole vocabulary
//! (their last watch is not trained on).
//!
//! # Export
//! The encoder (history → unit user vector) as ONNX, the vocabulary and the
//! unit output embeddings, in the directory format of
//! `watchnext_sequence::model`.

use std::{
    collections::HashMap,
    path::Path,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use candle_core::{D, DType, Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{RngExt, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use watchnext_core::{
    event::{Event, EventKind},
    features::{FNV_OFFSET, stable_hash},
    ids::{UserId, VideoId},
};
use watchnext_onnx::graph::{Attr, Dim, ElemType, GraphBuilder};
use watchnext_sequence::model::{FORMAT, HISTORY_INPUT, SequenceManifest, USER_OUTPUT, write_model_dir};

use crate::{
    model::Table,
    optim::{AdamStep, accumulate_rows, dense_step, rows_step},
};

/// Added to the attention logit of a padding slot.
const MASKED: f32 = -1e9;

/// How the sequence model is shaped and trained (`[sequence_trainer]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceTrainerConfig {
    /// Most recent watches the encoder reads (L).
    pub history_len: usize,
    /// Length of the user vector and of every embedding.
    pub dim: usize,
    /// Width of the attention scorer.
    pub attention_dim: usize,
    /// Hidden width of the MLP after pooling.
    pub hidden: usize,
    /// Softmax temperature τ on cosine scores.
    pub temperature: f32,
    /// Uniformly drawn negatives per batch, on top of the in-batch ones.
    pub sampled_negatives: usize,
    /// Subtract ln P(candidate in the sampled set) from each logit.
    pub logq_correction: bool,
    /// Watches shorter than this share of the video are skipped (0 = every watch).
    pub min_watch_fraction: f32,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// AdamW decay of the weight matrices (not embeddings).
    pub weight_decay: f64,
    pub max_epochs: usize,
    /// Epochs without a better validation HR@K before stopping.
    pub patience: usize,
    /// Users whose last watch is held out for validation.
    pub validation_users: usize,
    /// K of the validation HR@K that early stopping watches.
    pub validation_k: usize,
    pub seed: u64,
    /// Threads of the training kernels (0 = all cores).
    pub threads: usize,
}

impl Default for SequenceTrainerConfig {
    fn default() -> Self {
        Self {
            history_len: 32,
            dim: 64,
            attention_dim: 64,
            hidden: 128,
            temperature: 0.05,
            sampled_negatives: 1_024,
            logq_correction: true,
            min_watch_fraction: 0.0,
            batch_size: 256,
            learning_rate: 2e-3,
            weight_decay: 1e-5,
            max_epochs: 6,
            patience: 1,
            validation_users: 1_000,
            validation_k: 50,
            seed: 7,
            threads: 1,
        }
    }
}

/// A bad configuration or unusable data, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum SequenceTrainError {
    #[error("sequence_trainer.{field}: {problem}")]
    Config { field: &'static str, problem: String },
    #[error("{0}")]
    Data(String),
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Write(#[from] watchnext_sequence::model::ModelError),
}

impl SequenceTrainerConfig {
    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<(), SequenceTrainError> {
        let bad = |field, problem: &str| Err(SequenceTrainError::Config { field, problem: problem.to_owned() });
        let positive = [
            ("history_len", self.history_len),
            ("dim", self.dim),
            ("attention_dim", self.attention_dim),
            ("hidden", self.hidden),
            ("batch_size", self.batch_size),
            ("max_epochs", self.max_epochs),
            ("validation_k", self.validation_k),
        ];
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if self.history_len > 512 {
            return bad("history_len", "must be at most 512");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.min_watch_fraction) {
            return bad("min_watch_fraction", "must be within [0, 1]");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be a finite number >= 0");
        }
        Ok(())
    }
}

/// Watch sequences as vocabulary rows, with the validation hold-out.
#[derive(Debug, Clone, Default)]
pub struct Sequences {
    /// Row `i` of the embeddings is `videos[i]` (sorted by id).
    pub videos: Vec<VideoId>,
    /// Each user's watches, oldest first (the validation target removed).
    pub users: Vec<Vec<u32>>,
    /// `(user, target index)`: every watch after a user's first.
    pub examples: Vec<(u32, u32)>,
    /// Held out: `(user, target row)`, the user's last watch.
    pub validation: Vec<(u32, u32)>,
    /// Training targets per video (the sampling distribution of in-batch negatives).
    pub frequency: Vec<u32>,
    /// Watch events read.
    pub watches: usize,
}

impl Sequences {
    /// Builds sequences from watch events in log (time) order. A watch of
    /// the video just watched is not repeated; watches under
    /// `min_watch_fraction` of a known duration are skipped.
    pub fn from_events<E: std::borrow::Borrow<Event>>(
        events: impl IntoIterator<Item = E>,
        config: &SequenceTrainerConfig,
    ) -> Self {
        let mut by_user: HashMap<UserId, Vec<VideoId>> = HashMap::new();
        let mut watches = 0;
        for e in events {
            let e = e.borrow();
            let EventKind::Watch { seconds_watched, video_duration_seconds } = e.kind else { continue };
            if video_duration_seconds > 0.0 && seconds_watched < config.min_watch_fraction * video_duration_seconds {
                continue;
            }
            watches += 1;
            let seq = by_user.entry(e.user.clone()).or_default();
            if seq.last() != Some(&e.video) {
                seq.push(e.video.clone());
            }
        }
        let mut videos: Vec<VideoId> = by_user.values().flatten().cloned().collect();
        videos.sort_unstable();
        videos.dedup();
        let row: HashMap<&VideoId, u32> = videos.iter().enumerate().map(|(i, v)| (v, i as u32)).collect();
        // Users in id order, so that a run is reproducible.
        let mut users: Vec<(UserId, Vec<VideoId>)> = by_user.into_iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Validation users: a seeded hash order over users with ≥ 3 watches.
        let mut eligible: Vec<(u64, usize)> = users
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| s.len() >= 3)
            .map(|(i, (u, _))| (stable_hash(FNV_OFFSET ^ config.seed, u.as_str().as_bytes()), i))
            .collect();
        eligible.sort_unstable();
        let held: std::collections::HashSet<usize> =
            eligible.iter().take(config.validation_users).map(|&(_, i)| i).collect();
        let mut out = Self { frequency: vec![0; videos.len()], watches, ..Self::default() };
        for (i, (_, seq)) in users.iter().enumerate() {
            let mut rows: Vec<u32> = seq.iter().map(|v| row[v]).collect();
            if held.contains(&i) {
                let target = rows.pop().unwrap_or_default();
                out.validation.push((i as u32, target));
            }
            for (t, &target) in rows.iter().enumerate().skip(1) {
                out.examples.push((i as u32, t as u32));
                out.frequency[target as usize] += 1;
            }
            out.users.push(rows);
        }
        out.videos = videos;
        out
    }

    /// The history before `users[user][t]` (up to `len` rows, oldest first).
    fn history(&self, user: u32, t: usize, len: usize) -> &[u32] {
        let seq = &self.users[user as usize];
        &seq[t.saturating_sub(len)..t]
    }
}

/// A named dense parameter.
#[derive(Debug)]
struct Param {
    name: &'static str,
    var: Var,
}

/// The network: dense parameters (position embeddings, attention, MLP) as
/// candle variables, the two embedding tables on the host.
#[derive(Debug)]
pub struct SequenceNet {
    pub config: SequenceTrainerConfig,
    /// Vocabulary size V (the input table has V + 1 rows; row 0 is padding).
    pub videos: usize,
    params: Vec<Param>,
    input: Table,
    output: Table,
}

const POSITION: usize = 0;
const ATTN_W: usize = 1;
const ATTN_B: usize = 2;
const ATTN_Q: usize = 3;
const MLP1_W: usize = 4;
const MLP1_B: usize = 5;
const MLP2_W: usize = 6;
const MLP2_B: usize = 7;

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

/// Unit rows of a `[n, d]` tensor.
fn unit_rows(z: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (z.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    z.broadcast_div(&norm)
}

impl SequenceNet {
    /// A freshly initialised network over `videos` videos.
    pub fn new(config: &SequenceTrainerConfig, videos: usize) -> candle_core::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0073_6571);
        let (l, d, a, h) = (config.history_len, config.dim, config.attention_dim, config.hidden);
        let glorot = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f32).sqrt();
        let shapes: [(&'static str, Vec<usize>, f32); 8] = [
            ("position", vec![l, d], 0.05),
            ("attention.weight", vec![d, a], glorot(d, a)),
            ("attention.bias", vec![a], 0.0),
            ("attention.query", vec![a, 1], glorot(a, 1)),
            ("mlp.0.weight", vec![2 * d, h], glorot(2 * d, h)),
            ("mlp.0.bias", vec![h], 0.0),
            ("mlp.1.weight", vec![h, d], glorot(h, d)),
            ("mlp.1.bias", vec![d], 0.0),
        ];
        let mut params = Vec::with_capacity(shapes.len());
        for (name, shape, bound) in shapes {
            let n = shape.iter().product();
            let values = if bound > 0.0 { uniform(&mut rng, n, bound) } else { vec![0.0; n] };
            params.push(Param { name, var: Var::from_vec(values, shape, &Device::Cpu)? });
        }
        let mut input_values = uniform(&mut rng, (videos + 1) * d, 0.05);
        input_values[..d].fill(0.0);
        let input = Table::new("sequence.input".into(), videos + 1, d, input_values);
        let output = Table::new("sequence.output".into(), videos, d, uniform(&mut rng, videos * d, 0.05));
        Ok(Self { config: config.clone(), videos, params, input, output })
    }

    fn p(&self, i: usize) -> &Tensor {
        self.params[i].var.as_tensor()
    }

    /// Left-padded input rows (vocabulary row + 1, 0 = padding) of histories.
    fn input_ids(&self, histories: &[&[u32]]) -> Vec<u32> {
        let l = self.config.history_len;
        let mut ids = Vec::with_capacity(histories.len() * l);
        for h in histories {
            let h = &h[h.len().saturating_sub(l)..];
            ids.extend(std::iter::repeat_n(0, l - h.len()));
            ids.extend(h.iter().map(|r| r + 1));
        }
        ids
    }

    /// Unit user vectors `[B, d]` from gathered input rows `x` (`[B·L, d]`)
    /// and the input ids (for the padding mask).
    fn encode(&self, x: &Tensor, ids: &[u32]) -> candle_core::Result<Tensor> {
        let (l, d) = (self.config.history_len, self.config.dim);
        let b = ids.len() / l;
        let h = x.reshape((b, l, d))?.broadcast_add(self.p(POSITION))?;
        let flat = h.reshape((b * l, d))?;
        let scores = flat
            .matmul(self.p(ATTN_W))?
            .broadcast_add(self.p(ATTN_B))?
            .tanh()?
            .matmul(self.p(ATTN_Q))?
            .reshape((b, l))?;
        let mask: Vec<f32> = ids.iter().map(|&i| if i == 0 { MASKED } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (b, l), &Device::Cpu)?;
        let alpha = candle_nn::ops::softmax(&(scores + mask)?, D::Minus1)?;
        let pooled = alpha.unsqueeze(1)?.matmul(&h)?.squeeze(1)?;
        let last = h.narrow(1, l - 1, 1)?.squeeze(1)?;
        let z = Tensor::cat(&[&pooled, &last], 1)?;
        let z = z.matmul(self.p(MLP1_W))?.broadcast_add(self.p(MLP1_B))?.relu()?;
        let z = z.matmul(self.p(MLP2_W))?.broadcast_add(self.p(MLP2_B))?;
        unit_rows(&z)
    }

    /// User vectors for `histories` (no gradients), `[n, d]` row-major.
    pub fn user_vectors(&self, histories: &[&[u32]]) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(histories.len() * self.config.dim);
        for chunk in histories.chunks(1_024) {
            let ids = self.input_ids(chunk);
            let x = Tensor::from_vec(self.input.gather(&ids), (ids.len(), self.config.dim), &Device::Cpu)?;
            out.extend(self.encode(&x, &ids)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The unit output embeddings, `[V, d]` row-major.
    pub fn video_embeddings(&self) -> Vec<f32> {
        let d = self.config.dim;
        let mut out = self.output.values.clone();
        for row in out.chunks_exact_mut(d) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        out
    }
}

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    /// HR@K of the held-out last watches, per K in [`SequenceReport::ks`].
    pub validation_hit: Vec<f64>,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceReport {
    pub videos: usize,
    pub users: usize,
    pub watches: usize,
    pub examples: usize,
    pub validation_cases: usize,
    pub ks: Vec<usize>,
    pub epochs: Vec<SequenceEpoch>,
    /// 1-based epoch whose parameters were kept.
    pub best_epoch: usize,
    pub stopped_early: bool,
}

/// HR@K (per K in `ks`) of `cases` (`(user, target)`, history = the user's
/// whole training sequence), scored exactly over the vocabulary with the
/// user's history excluded.
pub fn hit_rates(
    net: &SequenceNet,
    data: &Sequences,
    cases: &[(u32, u32)],
    ks: &[usize],
) -> candle_core::Result<Vec<f64>> {
    if cases.is_empty() {
        return Ok(vec![0.0; ks.len()]);
    }
    let d = net.config.dim;
    let v = net.videos;
    let emb = Tensor::from_vec(net.video_embeddings(), (v, d), &Device::Cpu)?.t()?.contiguous()?;
    let mut hits = vec![0usize; ks.len()];
    let chunk = (8_000_000 / v.max(1)).clamp(1, 512);
    for part in cases.chunks(chunk) {
        let histories: Vec<&[u32]> = part.iter().map(|&(u, _)| data.users[u as usize].as_slice()).collect();
        let users = Tensor::from_vec(net.user_vectors(&histories)?, (part.len(), d), &Device::Cpu)?;
        let scores = users.matmul(&emb)?.to_vec2::<f32>()?;
        for ((&(_, target), row), history) in part.iter().zip(&scores).zip(&histories) {
            let seen: std::collections::HashSet<u32> = history.iter().copied().collect();
            let s = row[target as usize];
            let rank = row.iter().enumerate().filter(|&(i, &x)| x > s && !seen.contains(&(i as u32))).count();
            for (h, &k) in hits.iter_mut().zip(ks) {
                *h += usize::from(rank < k);
            }
        }
    }
    Ok(hits.iter().map(|&h| h as f64 / cases.len() as f64).collect())
}

/// Snapshot of the trainable values (for keeping the best epoch).
struct Snapshot {
    params: Vec<Tensor>,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl SequenceNet {
    fn snapshot(&self) -> candle_core::Result<Snapshot> {
        Ok(Snapshot {
            params: self.params.iter().map(|p| p.var.as_tensor().copy()).collect::<Result<_, _>>()?,
            input: self.input.values.clone(),
            output: self.output.values.clone(),
        })
    }

    fn restore(&mut self, s: Snapshot) -> candle_core::Result<()> {
        for (p, t) in self.params.iter().zip(&s.params) {
            p.var.set(t)?;
        }
        self.input.values = s.input;
        self.output.values = s.output;
        Ok(())
    }
}

/// Trains a sequence model on `data`; returns it at its best validation
/// epoch. `progress` draws a bar per epoch on stderr.
pub fn train_sequence(
    data: &Sequences,
    config: &SequenceTrainerConfig,
    progress: bool,
) -> Result<(SequenceNet, SequenceReport), SequenceTrainError> {
    config.validate()?;
    if data.examples.is_empty() {
        return Err(SequenceTrainError::Data(
            "no watch sequences to learn from: every user has fewer than two watches".into(),
        ));
    }
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("watchnext-seq-{i}"))
        .build()
        .map_err(|e| SequenceTrainError::Data(format!("starting {threads} training threads: {e}")))?;
    pool.install(|| train_on_pool(data, config, progress))
}

/// Dense-parameter moments.
struct Moments {
    m: Vec<Var>,
    v: Vec<Var>,
}

fn train_on_pool(
    data: &Sequences,
    c: &SequenceTrainerConfig,
    progress: bool,
) -> Result<(SequenceNet, SequenceReport), SequenceTrainError> {
    let mut net = SequenceNet::new(c, data.videos.len())?;
    let zeros = |p: &Param| Var::zeros(p.var.dims(), DType::F32, &Device::Cpu);
    let moments = Moments {
        m: net.params.iter().map(zeros).collect::<Result<_, _>>()?,
        v: net.params.iter().map(zeros).collect::<Result<_, _>>()?,
    };
    let total: f64 = data.frequency.iter().map(|&f| f64::from(f)).sum::<f64>().max(1.0);
    let v = data.videos.len();
    let ks: Vec<usize> = {
        let mut ks = vec![10, c.validation_k];
        ks.sort_unstable();
        ks.dedup();
        ks
    };
    let watched = ks.iter().position(|&k| k == c.validation_k).unwrap_or(0);
    let mut report = SequenceReport {
        videos: v,
        users: data.users.len(),
        watches: data.watches,
        examples: data.examples.len(),
        validation_cases: data.validation.len(),
        ks: ks.clone(),
        epochs: Vec::new(),
        best_epoch: 0,
        stopped_early: false,
    };
    let mut order: Vec<usize> = (0..data.examples.len()).collect();
    let mut best: Option<(f64, Snapshot)> = None;
    let mut since_best = 0;
    let mut step = 0u64;
    let batches = data.examples.len().div_ceil(c.batch_size);
    for epoch in 1..=c.max_epochs {
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed.wrapping_mul(0x51_7cc1).wrapping_add(epoch as u64));
        order.shuffle(&mut rng);
        let bar = if progress {
            ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "sequence epoch {epoch}/{} [{{wide_bar}}] {{pos}}/{{len}} batches ({{per_sec}}, eta {{eta}}) {{msg}}",
            c.max_epochs
        )) {
            bar.set_style(style);
        }
        let started = Instant::now();
        let (mut loss_sum, mut rows) = (0.0f64, 0usize);
        for batch in order.chunks(c.batch_size) {
            step += 1;
            let loss = train_step(&mut net, &moments, data, batch, &mut rng, total, v, step)?;
            if !loss.is_finite() {
                return Err(SequenceTrainError::Data(format!(
                    "the loss diverged (non-finite) at epoch {epoch}; lower sequence_trainer.learning_rate"
                )));
            }
            loss_sum += loss * batch.len() as f64;
            rows += batch.len();
            bar.inc(1);
            if bar.position() % 50 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / rows as f64));
            }
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let validation_hit = hit_rates(&net, data, &data.validation, &ks)?;
        let metrics = SequenceEpoch {
            epoch,
            train_loss: loss_sum / rows.max(1) as f64,
            validation_hit: validation_hit.clone(),
            seconds,
            examples_per_second: rows as f64 / seconds.max(1e-9),
        };
        let hits: Vec<String> = ks.iter().zip(&validation_hit).map(|(k, h)| format!("HR@{k} {h:.4}")).collect();
        tracing::info!(epoch, train_loss = metrics.train_loss, validation = %hits.join(", "), "sequence epoch done");
        if progress {
            eprintln!(
                "sequence epoch {epoch}: train loss {:.4}, validation {}, {:.0} examples/s",
                metrics.train_loss,
                hits.join(", "),
                metrics.examples_per_second
            );
        }
        report.epochs.push(metrics);
        let score = validation_hit[watched];
        // Without validation cases every epoch counts as the best so far.
        if best.as_ref().is_none_or(|(b, _)| score > *b + 1e-9 || data.validation.is_empty()) {
            best = Some((score, net.snapshot()?));
            report.best_epoch = epoch;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= c.patience.max(1) && epoch < c.max_epochs {
                report.stopped_early = true;
                break;
            }
        }
    }
    if let Some((_, snapshot)) = best {
        net.restore(snapshot)?;
    }
    Ok((net, report))
}

/// One optimiser step on the examples `batch` (indices into `data.examples`);
/// returns the batch's mean loss.
#[allow(clippy::too_many_arguments)]
fn train_step(
    net: &mut SequenceNet,
    moments: &Moments,
    data: &Sequences,
    batch: &[usize],
    rng: &mut ChaCha8Rng,
    total: f64,
    videos: usize,
    step: u64,
) -> Result<f64, SequenceTrainError> {
    let c = &net.config;
    let (d, b) = (c.dim, batch.len());
    let histories: Vec<&[u32]> = batch
        .iter()
        .map(|&i| {
            let (u, t) = data.examples[i];
            data.history(u, t as usize, c.history_len)
        })
        .collect();
    let targets: Vec<u32> = batch
        .iter()
        .map(|&i| {
            let (u, t) = data.examples[i];
            data.users[u as usize][t as usize]
        })
        .collect();
    // Candidates: the batch's targets, then uniform negatives; de-duplicated.
    let mut column: HashMap<u32, u32> = HashMap::with_capacity(b + c.sampled_negatives);
    let mut candidates: Vec<u32> = Vec::with_capacity(b + c.sampled_negatives);
    let mut col_of = |row: u32, candidates: &mut Vec<u32>| {
        *column.entry(row).or_insert_with(|| {
            candidates.push(row);
            (candidates.len() - 1) as u32
        })
    };
    let labels: Vec<u32> = targets.iter().map(|&t| col_of(t, &mut candidates)).collect();
    for _ in 0..c.sampled_negatives {
        let row = rng.random_range(0..videos as u32);
        col_of(row, &mut candidates);
    }
    let ids = net.input_ids(&histories);
    let x = Var::from_vec(net.input.gather(&ids), (ids.len(), d), &Device::Cpu)?;
    let o = Var::from_vec(net.output.gather(&candidates), (candidates.len(), d), &Device::Cpu)?;
    let user = net.encode(x.as_tensor(), &ids)?;
    let items = unit_rows(o.as_tensor())?;
    let mut logits = user.matmul(&items.t()?)?.affine(1.0 / f64::from(c.temperature), 0.0)?;
    if c.logq_correction {
        let uniform = c.sampled_negatives as f64 / videos as f64;
        let logq: Vec<f32> = candidates
            .iter()
            .map(|&r| (b as f64 * f64::from(data.frequency[r as usize]) / total + uniform).min(1.0).ln() as f32)
            .collect();
        let logq = Tensor::from_vec(logq, (1, candidates.len()), &Device::Cpu)?;
        logits = logits.broadcast_sub(&logq)?;
    }
    let labels = Tensor::from_vec(labels, b, &Device::Cpu)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
    let grads = loss.backward()?;
    let s = AdamStep::at(step);
    for (i, p) in net.params.iter().enumerate() {
        let Some(g) = grads.get(p.var.as_tensor()) else { continue };
        let decay = if p.name.ends_with(".weight") { c.learning_rate * c.weight_decay } else { 0.0 };
        dense_step(&p.var, &moments.m[i], &moments.v[i], g, &s, c.learning_rate, decay)?;
    }
    if let Some(g) = grads.get(x.as_tensor()) {
        let mut sums = HashMap::new();
        accumulate_rows(&mut sums, &ids, &g.flatten_all()?.to_vec1::<f32>()?, d);
        sums.remove(&0); // padding stays zero
        rows_step(&mut net.input, &sums, &s, c.learning_rate);
    }
    if let Some(g) = grads.get(o.as_tensor()) {
        let mut sums = HashMap::new();
        accumulate_rows(&mut sums, &candidates, &g.flatten_all()?.to_vec1::<f32>()?, d);
        rows_step(&mut net.output, &sums, &s, c.learning_rate);
    }
    Ok(f64::from(loss.to_scalar::<f32>()?))
}

/// The encoder as an ONNX graph: `history` int64 `[batch, L]` →
/// `user` float `[batch, d]`, computing exactly [`SequenceNet`]'s encoder.
pub fn encoder_graph(net: &SequenceNet, version: &str) -> candle_core::Result<Vec<u8>> {
    let c = &net.config;
    let (l, d) = (c.history_len as i64, c.dim as i64);
    let values = |i: usize| -> candle_core::Result<(Vec<f32>, Vec<i64>)> {
        let t = net.p(i);
        Ok((t.flatten_all()?.to_vec1::<f32>()?, t.dims().iter().map(|&x| x as i64).collect()))
    };
    let mut g = GraphBuilder::new("watchnext_sequence_encoder");
    g.input(HISTORY_INPUT, ElemType::I64, &[Dim::Dynamic("batch"), Dim::Fixed(l)]);
    let table = g.init_f32("input_embeddings", &[net.input.rows as i64, d], &net.input.values);
    let x = g.op("Gather", &[&table, HISTORY_INPUT], &[("axis", Attr::Int(0))], "gathered");
    let init = |g: &mut GraphBuilder, i: usize, name: &str| -> candle_core::Result<String> {
        let (v, shape) = values(i)?;
        Ok(g.init_f32(name, &shape, &v))
    };
    let pos = init(&mut g, POSITION, "position")?;
    let h = g.op("Add", &[&x, &pos], &[], "h");
    let flat_shape = g.init_i64("flat_shape", &[2], &[-1, d]);
    let flat = g.op("Reshape", &[&h, &flat_shape], &[], "h_flat");
    let aw = init(&mut g, ATTN_W, "attention_weight")?;
    let ab = init(&mut g, ATTN_B, "attention_bias")?;
    let aq = init(&mut g, ATTN_Q, "attention_query")?;
    let s = g.op("MatMul", &[&flat, &aw], &[], "attention_mm");
    let s = g.op("Add", &[&s, &ab], &[], "attention_add");
    let s = g.op("Tanh", &[&s], &[], "attention_tanh");
    let s = g.op("MatMul", &[&s, &aq], &[], "attention_scores");
    let score_shape = g.init_i64("score_shape", &[2], &[-1, l]);
    let s = g.op("Reshape", &[&s, &score_shape], &[], "scores");
    let zero_id = g.init_i64("padding_id", &[], &[0]);
    let is_pad = g.op("Equal", &[HISTORY_INPUT, &zero_id], &[], "is_padding");
    let masked = g.init_f32("masked", &[], &[MASKED]);
    let open = g.init_f32("open", &[], &[0.0]);
    let mask = g.op("Where", &[&is_pad, &masked, &open], &[], "mask");
    let s = g.op("Add", &[&s, &mask], &[], "masked_scores");
    let alpha = g.op("Softmax", &[&s], &[("axis", Attr::Int(-1))], "alpha");
    let axis1 = g.init_i64("axis_1", &[1], &[1]);
    let alpha = g.op("Unsqueeze", &[&alpha, &axis1], &[], "alpha_row");
    let pooled = g.op("MatMul", &[&alpha, &h], &[], "pooled_row");
    let pooled = g.op("Reshape", &[&pooled, &flat_shape], &[], "pooled");
    let last_index = g.init_i64("last_index", &[], &[l - 1]);
    let last = g.op("Gather", &[&h, &last_index], &[("axis", Attr::Int(1))], "last");
    let z = g.op("Concat", &[&pooled, &last], &[("axis", Attr::Int(1))], "pooled_and_last");
    let w1 = init(&mut g, MLP1_W, "mlp0_weight")?;
    let b1 = init(&mut g, MLP1_B, "mlp0_bias")?;
    let w2 = init(&mut g, MLP2_W, "mlp1_weight")?;
    let b2 = init(&mut g, MLP2_B, "mlp1_bias")?;
    let z = g.op("MatMul", &[&z, &w1], &[], "mlp0_mm");
    let z = g.op("Add", &[&z, &b1], &[], "mlp0_add");
    let z = g.op("Relu", &[&z], &[], "mlp0");
    let z = g.op("MatMul", &[&z, &w2], &[], "mlp1_mm");
    let z = g.op("Add", &[&z, &b2], &[], "mlp1");
    let sq = g.op("Mul", &[&z, &z], &[], "squares");
    let ss = g.op("ReduceSum", &[&sq, &axis1], &[("keepdims", Attr::Int(1))], "sum_squares");
    let eps = g.init_f32("norm_eps", &[], &[1e-12]);
    let ss = g.op("Add", &[&ss, &eps], &[], "sum_squares_eps");
    let norm = g.op("Sqrt", &[&ss], &[], "norm");
    g.op_named("Div", &[&z, &norm], &[], &[USER_OUTPUT]);
    g.output(USER_OUTPUT, ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(d)]);
    g.metadata("model_version", version);
    Ok(g.to_bytes())
}

/// Writes `net` as a sequence-model directory (see
/// `watchnext_sequence::model`), with `report` in the manifest.
pub fn write_sequence_model(
    dir: &Path,
    net: &SequenceNet,
    data: &Sequences,
    version: &str,
    report: &SequenceReport,
) -> Result<SequenceManifest, SequenceTrainError> {
    let encoder = encoder_graph(net, version)?;
    let created_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let training = serde_json::json!({ "config": net.config, "report": report });
    let manifest = SequenceManifest {
        format: FORMAT,
        version: version.to_owned(),
        created_ms,
        dim: net.config.dim,
        history_len: net.config.history_len,
        videos: data.videos.len(),
        training,
    };
    write_model_dir(dir, &manifest, &encoder, &data.videos, &net.video_embeddings())?;
    Ok(manifest)
}
