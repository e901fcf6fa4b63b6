//! The ranking network, in candle.
//!
//! ```text
//!  dense ─(x−μ)/σ─┐
//!  sparse ─embed──┴─concat─▶ bottom (ReLU) ─┬─▶ experts E× (ReLU layers) ──┐
//!  [position ─embed, plain-input mode only]  │                            ├─ gate_t·experts ─▶ tower_t ─▶ logit_t
//!                                            └─▶ gate_t = softmax(W_t·h) ──┘                          │
//!  position×device, … ─▶ shallow tower (one weight per cross) ─▶ bias logit ─(+, debiased tasks, training)┘
//! ```
//! - **Experts** are computed together: the first expert layer of all E
//!   experts is one `[bottom, E·h₁]` matmul, later layers are one batched
//!   `[E, in, out]` matmul; the mixture of every task's gate is one batched
//!   matmul `[B, T, E]·[B, E, H]`, and the towers of all tasks are batched
//!   `[T, in, out]` matmuls.
//! - **Shared bottom** (baseline, same cost) uses the same first layer but
//!   dense later layers, and every tower reads the same output (no gates).
//! - **Gate dropout**: in training each (row, task, expert) gate entry is
//!   dropped with probability `gate_dropout` by adding −10⁹ to its logit
//!   before the softmax — exactly "set to 0 and renormalise" (a row whose
//!   experts are all dropped keeps them all).
//! - **Shallow tower**: a weight per (position, device) cell and task (and
//!   per cell of the other configured crosses), summed into a bias added to
//!   each debiased task's logit — one column per task, since a click's bias
//!   logit and a bias on log watch time live on different scales. Position
//!   0 is "missing": 10% of training rows (configurable) see it, and serving
//!   never sees the tower at all.
//! - Parameters are initialised from the config's seed (ChaCha8), never
//!   from a global RNG, so a run is reproducible.

use candle_core::{D, DType, Device, Tensor, Var};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use watchnext_core::{
    features::{DENSE_LEN, FeatureSchema, SPARSE_LEN},
    model::TaskKind,
};

use crate::config::{Architecture, BiasFeature, ClickLoss, PositionMode, TrainerConfig};

/// Number of devices and sources, `Unspecified` included (the bias
/// crosses' second factor; a source's cell is its wire value).
const DEVICES: usize = 5;
const SOURCES: usize = watchnext_core::registry::SOURCES.len();
/// Added to a dropped gate entry's logit.
const DROPPED: f32 = -1e9;

/// Which embedding table each sparse field uses (the candidate and query
/// videos share one table, as do their topics).
pub const FIELD_TABLE: [usize; SPARSE_LEN] = [0, 1, 1, 2, 2, 3, 4];

/// An embedding table, kept on the host and updated sparsely: a batch
/// gathers its rows into a small leaf tensor, and after the backward pass
/// only those rows are updated (lazy Adam), so a step costs O(batch · dim)
/// whatever the table's size — a dense update of 100k-row tables would
/// cost more than the whole network.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub rows: usize,
    pub dim: usize,
    pub values: Vec<f32>,
    /// Adam moments per value.
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Table {
    pub fn new(name: String, rows: usize, dim: usize, values: Vec<f32>) -> Self {
        Self { name, rows, dim, m: vec![0.0; values.len()], v: vec![0.0; values.len()], values }
    }

    /// Rows `ids` (clamped into range) as a `[ids.len(), dim]` vector.
    pub fn gather(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        for &id in ids {
            let r = (id as usize).min(self.rows - 1);
            out.extend_from_slice(&self.values[r * self.dim..(r + 1) * self.dim]);
        }
        out
    }
}

/// A named parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
}

/// A batch on the device, ready for a forward pass.
#[derive(Debug)]
pub struct Batch {
    pub rows: usize,
    /// `[B, DENSE_LEN]`, raw (normalised inside the model).
    pub dense: Tensor,
    /// Per sparse field: the table rows of the batch.
    pub field_rows: Vec<Vec<u32>>,
    /// Per sparse field: the gathered `[B, dim]` rows (leaf variables in
    /// training, whose gradients update the tables).
    pub embedded: Vec<Var>,
    /// `[B]` u32 position bucket (0 = missing), used in plain-input mode.
    pub position: Option<Tensor>,
    /// One `[B]` u32 cell index per bias feature.
    pub bias_cells: Vec<Tensor>,
    /// `[B, T, E]` of 0 / −10⁹, in training with gate dropout.
    pub gate_mask: Option<Tensor>,
    /// `[B, T]` labels and observation mask.
    pub labels: Option<(Tensor, Tensor)>,
    /// The group (request or replayed moment) of each row, numbered from 0
    /// within the batch in row order: what a list-wise loss normalises over.
    pub groups: Vec<u32>,
}

/// The network.
#[derive(Debug)]
pub struct Model {
    pub config: TrainerConfig,
    pub schema: FeatureSchema,
    /// Dense-feature standardisation (fixed, from the training data).
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    params: Vec<Param>,
    tables: std::sync::Mutex<Vec<Table>>,
    index: ParamIndex,
    device: Device,
}

/// Positions of the parameters in `params`.
#[derive(Debug, Clone, Default)]
struct ParamIndex {
    position: Option<usize>,
    bottom: (usize, usize),
    /// (weight, bias) per expert layer (or per shared layer).
    experts: Vec<(usize, usize)>,
    gates: Option<(usize, usize)>,
    towers: Vec<(usize, usize)>,
    bias: Vec<usize>,
}

/// Outputs of one forward pass.
#[derive(Debug)]
pub struct Forward {
    /// `[B, T]` main logits (or raw regression outputs), without the bias.
    pub main: Tensor,
    /// `[B, T]` what the loss sees: `main` plus the bias logit on debiased tasks.
    pub logits: Tensor,
    /// `[B, T, E]` gate weights (MMoE only).
    pub gates: Option<Tensor>,
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

impl Model {
    /// Dimension of the concatenated input of the bottom layer.
    pub fn input_width(config: &TrainerConfig) -> usize {
        let mut w = DENSE_LEN + SPARSE_LEN * config.embedding_dim;
        if config.position_mode == PositionMode::PlainInput {
            w += config.embedding_dim;
        }
        w
    }

    /// Width of the tower inputs (the last expert layer).
    pub fn expert_width(config: &TrainerConfig) -> usize {
        *config.expert_layers.last().unwrap_or(&1)
    }

    /// Number of cells of a bias cross.
    pub fn bias_cells(config: &TrainerConfig, feature: BiasFeature) -> usize {
        let p = config.max_position as usize + 1;
        match feature {
            BiasFeature::PositionDevice => p * DEVICES,
            BiasFeature::PositionSource => p * SOURCES,
            BiasFeature::Device => DEVICES,
        }
    }

    /// The bias features actually used (none unless the shallow tower is on).
    pub fn bias_features(config: &TrainerConfig) -> Vec<BiasFeature> {
        if config.position_mode != PositionMode::ShallowTower {
            return Vec::new();
        }
        let mut f = vec![BiasFeature::PositionDevice];
        for b in &config.bias_features {
            if !f.contains(b) {
                f.push(*b);
            }
        }
        f
    }

    /// Experts per gate in the exported graph (0 for shared bottom).
    pub fn experts(&self) -> usize {
        match self.config.architecture {
            Architecture::Mmoe => self.config.experts,
            Architecture::SharedBottom => 0,
        }
    }

    /// A freshly initialised network. `mean`/`inv_std` standardise the dense
    /// features; `label_means` (per task, in label space) set the towers'
    /// output biases so training starts at the base rates.
    pub fn new(
        config: &TrainerConfig,
        mut mean: Vec<f32>,
        mut inv_std: Vec<f32>,
        label_means: &[f32],
    ) -> candle_core::Result<Self> {
        let schema = FeatureSchema::new(config.features).map_err(candle_core::Error::msg)?;
        // Ignored features enter as 0 whatever their value: (x − 0) · 0.
        for name in &config.ignore_features {
            if let Some(j) = watchnext_core::features::DENSE.iter().position(|n| n == name)
                && j < mean.len()
                && j < inv_std.len()
            {
                mean[j] = 0.0;
                inv_std[j] = 0.0;
            }
        }
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x006d_6f64_656c);
        let mut params: Vec<Param> = Vec::new();
        fn push(
            params: &mut Vec<Param>,
            name: String,
            shape: &[usize],
            values: Vec<f32>,
        ) -> candle_core::Result<usize> {
            params.push(Param { name, var: Var::from_vec(values, shape, &Device::Cpu)? });
            Ok(params.len() - 1)
        }
        fn linear(
            params: &mut Vec<Param>,
            name: &str,
            fan_in: usize,
            shape: &[usize],
            bias_shape: &[usize],
            rng: &mut ChaCha8Rng,
        ) -> candle_core::Result<(usize, usize)> {
            let n: usize = shape.iter().product();
            let bound = (6.0 / fan_in as f32).sqrt();
            let w = push(params, format!("{name}.weight"), shape, uniform(rng, n, bound))?;
            let b = push(params, format!("{name}.bias"), bias_shape, vec![0.0; bias_shape.iter().product()])?;
            Ok((w, b))
        }
        let d = config.embedding_dim;
        let buckets = schema.sparse_buckets();
        let table_rows = [buckets[0], buckets[1], buckets[3], buckets[5], buckets[6]];
        let mut index = ParamIndex::default();
        let mut tables = Vec::new();
        for (t, rows) in table_rows.iter().enumerate() {
            let rows = *rows as usize;
            tables.push(Table::new(format!("embedding.{t}"), rows, d, uniform(&mut rng, rows * d, 0.05)));
        }
        if config.position_mode == PositionMode::PlainInput {
            let rows = config.max_position as usize + 1;
            let values = uniform(&mut rng, rows * d, 0.05);
            index.position = Some(push(&mut params, "embedding.position".into(), &[rows, d], values)?);
        }
        let input = Self::input_width(config);
        index.bottom = linear(&mut params, "bottom", input, &[input, config.bottom], &[config.bottom], &mut rng)?;
        let e = config.experts;
        let t = config.tasks.len();
        let first = config.expert_layers[0];
        let wide = match config.architecture {
            Architecture::Mmoe => e * first,
            Architecture::SharedBottom => e * first,
        };
        index.experts.push(linear(&mut params, "experts.0", config.bottom, &[config.bottom, wide], &[wide], &mut rng)?);
        for (l, w) in config.expert_layers.windows(2).enumerate() {
            let name = format!("experts.{}", l + 1);
            let pair = match (config.architecture, l) {
                (Architecture::Mmoe, _) => linear(&mut params, &name, w[0], &[e, w[0], w[1]], &[e, 1, w[1]], &mut rng)?,
                (Architecture::SharedBottom, 0) => linear(&mut params, &name, wide, &[wide, w[1]], &[w[1]], &mut rng)?,
                (Architecture::SharedBottom, _) => linear(&mut params, &name, w[0], &[w[0], w[1]], &[w[1]], &mut rng)?,
            };
            index.experts.push(pair);
        }
        if config.architecture == Architecture::Mmoe {
            // Small gate weights: every expert starts with about 1/E of each gate.
            let values = uniform(&mut rng, config.bottom * t * e, 0.01);
            let wg = push(&mut params, "gates.weight".into(), &[config.bottom, t * e], values)?;
            let bg = push(&mut params, "gates.bias".into(), &[t * e], vec![0.0; t * e])?;
            index.gates = Some((wg, bg));
        }
        let mut widths = vec![Self::expert_width(config)];
        if config.architecture == Architecture::SharedBottom && config.expert_layers.len() == 1 {
            widths[0] = wide;
        }
        widths.extend(&config.tower_layers);
        widths.push(1);
        for (l, w) in widths.windows(2).enumerate() {
            let pair = linear(&mut params, &format!("towers.{l}"), w[0], &[t, w[0], w[1]], &[t, 1, w[1]], &mut rng)?;
            index.towers.push(pair);
        }
        // Start every task at its base rate (binary: the logit of the mean).
        if let Some(&(_, b)) = index.towers.last() {
            let init: Vec<f32> = config
                .tasks
                .iter()
                .zip(label_means.iter().chain(std::iter::repeat(&0.0)))
                .map(|(task, &m)| match task.kind {
                    TaskKind::Binary => {
                        let p = m.clamp(1e-4, 1.0 - 1e-4);
                        (p / (1.0 - p)).ln()
                    }
                    TaskKind::Regression => m,
                })
                .collect();
            params[b].var.set(&Tensor::from_vec(init, (t, 1, 1), &device)?)?;
        }
        for f in Self::bias_features(config) {
            let cells = Self::bias_cells(config, f);
            params.push(Param {
                name: format!("bias.{f:?}"),
                // One column per task: a bias logit for a click is not a bias
                // on log watch time (only debiased tasks' columns are used).
                var: Var::from_vec(vec![0.0f32; cells * t], (cells, t), &device)?,
            });
            index.bias.push(params.len() - 1);
        }
        let tables = std::sync::Mutex::new(tables);
        Ok(Self { config: config.clone(), schema, mean, inv_std, params, tables, index, device })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn p(&self, i: usize) -> &Tensor {
        self.params[i].var.as_tensor()
    }

    /// The embedding tables (locked while the guard lives).
    pub fn tables(&self) -> std::sync::MutexGuard<'_, Vec<Table>> {
        self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of a parameter or table as a flat vector and its shape (for export).
    pub fn param_values(&self, name: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        if let Some(t) = self.tables().iter().find(|t| t.name == name) {
            return Some((t.values.clone(), vec![t.rows, t.dim]));
        }
        let p = self.params.iter().find(|p| p.name == name)?;
        let t = p.var.as_tensor();
        Some((t.flatten_all().ok()?.to_vec1().ok()?, t.dims().to_vec()))
    }

    /// The forward pass. `training` adds the bias logit (shallow tower) to the
    /// debiased tasks and feeds the batch's positions in plain-input mode;
    /// otherwise position is missing, as at serving. Gate dropout applies
    /// when the batch carries a mask.
    pub fn forward(&self, batch: &Batch, training: bool) -> candle_core::Result<Forward> {
        let c = &self.config;
        let b = batch.rows;
        let t = c.tasks.len();
        let e = c.experts;
        let mean = Tensor::from_slice(&self.mean, (1, DENSE_LEN), &self.device)?;
        let inv = Tensor::from_slice(&self.inv_std, (1, DENSE_LEN), &self.device)?;
        let mut parts = vec![batch.dense.broadcast_sub(&mean)?.broadcast_mul(&inv)?];
        for e in &batch.embedded {
            parts.push(e.as_tensor().clone());
        }
        if let Some(p) = self.index.position {
            let missing;
            // Serving never knows the position: "missing" (row 0).
            let pos = match (&batch.position, training) {
                (Some(pos), true) => pos,
                _ => {
                    missing = Tensor::zeros(b, DType::U32, &self.device)?;
                    &missing
                }
            };
            parts.push(self.p(p).index_select(pos, 0)?);
        }
        let x = Tensor::cat(&parts, 1)?;
        let (bw, bb) = self.index.bottom;
        let h = x.matmul(self.p(bw))?.broadcast_add(self.p(bb))?.relu()?;

        let (w0, b0) = self.index.experts[0];
        let mut z = h.matmul(self.p(w0))?.broadcast_add(self.p(b0))?.relu()?;
        let (towers_in, gates) = match c.architecture {
            Architecture::Mmoe => {
                let first = c.expert_layers[0];
                z = z.reshape((b, e, first))?.transpose(0, 1)?.contiguous()?; // [E, B, h1]
                for &(w, bias) in &self.index.experts[1..] {
                    z = z.matmul(self.p(w))?.broadcast_add(self.p(bias))?.relu()?;
                }
                let experts = z.transpose(0, 1)?.contiguous()?; // [B, E, H]
                let (wg, bg) = self.index.gates.ok_or_else(|| candle_core::Error::msg("no gates"))?;
                let mut logits = h.matmul(self.p(wg))?.broadcast_add(self.p(bg))?.reshape((b, t, e))?;
                if let Some(mask) = &batch.gate_mask {
                    logits = (logits + mask)?;
                }
                let gates = candle_nn::ops::softmax(&logits, D::Minus1)?; // [B, T, E]
                let mixed = gates.matmul(&experts)?; // [B, T, H]
                (mixed.transpose(0, 1)?.contiguous()?, Some(gates))
            }
            Architecture::SharedBottom => {
                for &(w, bias) in &self.index.experts[1..] {
                    z = z.matmul(self.p(w))?.broadcast_add(self.p(bias))?.relu()?;
                }
                let width = z.dim(1)?;
                (z.unsqueeze(0)?.broadcast_as((t, b, width))?.contiguous()?, None)
            }
        };
        let mut y = towers_in;
        let last = self.index.towers.len() - 1;
        for (l, &(w, bias)) in self.index.towers.iter().enumerate() {
            y = y.matmul(self.p(w))?.broadcast_add(self.p(bias))?;
            if l < last {
                y = y.relu()?;
            }
        }
        let main = y.reshape((t, b))?.transpose(0, 1)?.contiguous()?; // [B, T]
        let logits = if training && !self.index.bias.is_empty() {
            let mut bias = Tensor::zeros((b, t), DType::F32, &self.device)?;
            for (table, cells) in self.index.bias.iter().zip(&batch.bias_cells) {
                bias = (bias + self.p(*table).index_select(cells, 0)?)?;
            }
            let debias: Vec<f32> = c.tasks.iter().map(|t| f32::from(u8::from(t.debias))).collect();
            let debias = Tensor::from_vec(debias, (1, t), &self.device)?;
            (&main + bias.broadcast_mul(&debias)?)?
        } else {
            main.clone()
        };
        Ok(Forward { main, logits, gates })
    }

    /// Serving predictions `[B, T]` from main logits: probabilities for
    /// binary tasks, raw values for regression tasks.
    pub fn predictions(&self, logits: &Tensor) -> candle_core::Result<Tensor> {
        let t = self.config.tasks.len();
        let binary: Vec<f32> =
            self.config.tasks.iter().map(|t| f32::from(u8::from(t.kind == TaskKind::Binary))).collect();
        let binary = Tensor::from_vec(binary, (1, t), &self.device)?;
        let sig = candle_nn::ops::sigmoid(logits)?;
        let one_minus = binary.affine(-1.0, 1.0)?;
        sig.broadcast_mul(&binary)? + logits.broadcast_mul(&one_minus)?
    }

    /// The loss of a batch: per task the masked mean of binary cross-entropy
    /// (on logits, numerically stable) or squared error, weighted by the
    /// tasks' loss weights and summed. Also returns each task's mean loss.
    pub fn loss(&self, forward: &Forward, batch: &Batch) -> candle_core::Result<(Tensor, Vec<f32>)> {
        let Some((labels, mask)) = &batch.labels else {
            return Err(candle_core::Error::msg("the batch has no labels"));
        };
        let t = self.config.tasks.len();
        let x = &forward.logits;
        let binary: Vec<f32> =
            self.config.tasks.iter().map(|t| f32::from(u8::from(t.kind == TaskKind::Binary))).collect();
        let binary = Tensor::from_vec(binary, (1, t), &self.device)?;
        // BCE with logits: max(x, 0) − x·y + ln(1 + e^(−|x|)).
        let bce = ((x.relu()? - (x * labels)?)? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        let sq = (x - labels)?.sqr()?;
        let per = (bce.broadcast_mul(&binary)? + sq.broadcast_mul(&binary.affine(-1.0, 1.0)?)?)?;
        let per = (per * mask)?;
        let sums = per.sum(0)?; // [T]
        let counts = mask.sum(0)?.clamp(1.0, f64::INFINITY)?;
        let mut means = (sums / counts)?;
        if self.config.click_loss == ClickLoss::Softmax
            && let Some(k) = self.config.tasks.iter().position(|t| t.name == "click")
        {
            let softmax = self.group_softmax_loss(x, labels, mask, k, &batch.groups)?;
            // click: softmax + w · point-wise, written into column k.
            let w = f64::from(self.config.softmax_bce_weight);
            let onehot: Vec<f32> = (0..t).map(|j| f32::from(u8::from(j == k))).collect();
            let onehot = Tensor::from_vec(onehot, t, &self.device)?;
            let click = (means.narrow(0, k, 1)?.affine(w, 0.0)? + softmax.reshape(1)?)?;
            let replaced = (click.broadcast_mul(&onehot)? - means.narrow(0, k, 1)?.broadcast_mul(&onehot)?)?;
            means = (means + replaced)?;
        }
        let weights: Vec<f32> = self.config.tasks.iter().map(|t| t.loss_weight).collect();
        let weights = Tensor::from_vec(weights, t, &self.device)?;
        let total = (&means * &weights)?.sum_all()?;
        let per_task = means.to_vec1::<f32>()?;
        Ok((total, per_task))
    }

    /// The list-wise loss of task `k`: for every group with a positive and at
    /// least two observed rows, the mean over its positives of
    /// −log softmax(logits of the group)[positive], averaged over groups.
    fn group_softmax_loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        mask: &Tensor,
        k: usize,
        groups: &[u32],
    ) -> candle_core::Result<Tensor> {
        let b = groups.len();
        let xk = logits.narrow(1, k, 1)?.squeeze(1)?; // [B]
        let x: Vec<f32> = xk.to_vec1()?;
        let y: Vec<f32> = labels.narrow(1, k, 1)?.squeeze(1)?.to_vec1()?;
        let m: Vec<f32> = mask.narrow(1, k, 1)?.squeeze(1)?.to_vec1()?;
        let n_groups = groups.last().map_or(0, |&g| g as usize + 1);
        let (mut max, mut rows, mut pos) =
            (vec![f32::NEG_INFINITY; n_groups], vec![0u32; n_groups], vec![0u32; n_groups]);
        for r in 0..b {
            if m[r] > 0.0 {
                let g = groups[r] as usize;
                max[g] = max[g].max(x[r]);
                rows[g] += 1;
                pos[g] += u32::from(y[r] > 0.5);
            }
        }
        let valid: Vec<bool> = (0..n_groups).map(|g| pos[g] > 0 && rows[g] >= 2).collect();
        let n_valid = valid.iter().filter(|v| **v).count();
        if n_valid == 0 {
            return Tensor::zeros((), DType::F32, &self.device);
        }
        // Membership [G, B] of observed rows of valid groups; the per-row
        // shift is the group's max (the gradient does not depend on it).
        let mut member = vec![0.0f32; n_groups * b];
        let mut shift = vec![0.0f32; b];
        let mut weight = vec![0.0f32; b];
        for r in 0..b {
            let g = groups[r] as usize;
            if m[r] > 0.0 && valid[g] {
                member[g * b + r] = 1.0;
                shift[r] = max[g];
                if y[r] > 0.5 {
                    weight[r] = 1.0 / (pos[g] as f32 * n_valid as f32);
                }
            }
        }
        let dev = &self.device;
        let member = Tensor::from_vec(member, (n_groups, b), dev)?;
        let shift_rows = Tensor::from_vec(shift, b, dev)?;
        let group_max: Vec<f32> = max.iter().map(|v| if v.is_finite() { *v } else { 0.0 }).collect();
        let group_max = Tensor::from_vec(group_max, n_groups, dev)?;
        let e = ((&xk - &shift_rows)? * member.sum(0)?)?.exp()?; // rows outside valid groups: e^0, unused
        let sums = member.matmul(&e.unsqueeze(1)?)?.squeeze(1)?.clamp(1e-30, f64::INFINITY)?; // [G]
        let lse = (sums.log()? + group_max)?; // [G]
        let lse_rows = member.t()?.matmul(&lse.unsqueeze(1)?)?.squeeze(1)?; // [B]
        let weight = Tensor::from_vec(weight, b, dev)?;
        ((lse_rows - xk)? * weight)?.sum_all()
    }

    /// Copies parameter values from `other` (same config), e.g. the best epoch.
    pub fn load_values(&self, values: &[(String, Tensor)]) -> candle_core::Result<()> {
        for (name, value) in values {
            if let Some(t) = self.tables().iter_mut().find(|t| &t.name == name) {
                if value.dims() != [t.rows, t.dim] {
                    return Err(candle_core::Error::msg(format!(
                        "checkpoint table `{name}` has shape {:?}, the model [{}, {}]",
                        value.dims(),
                        t.rows,
                        t.dim
                    )));
                }
                t.values = value.flatten_all()?.to_vec1()?;
                continue;
            }
            let p = self
                .params
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| candle_core::Error::msg(format!("checkpoint has unknown parameter `{name}`")))?;
            if p.var.dims() != value.dims() {
                return Err(candle_core::Error::msg(format!(
                    "checkpoint parameter `{name}` has shape {:?}, the model {:?}",
                    value.dims(),
                    p.var.dims()
                )));
            }
            p.var.set(value)?;
        }
        Ok(())
    }

    /// The shallow tower's position × device weights of the click task (or
    /// the first debiased task); `None` without a tower.
    pub fn bias_tower(&self) -> Option<crate::evaluate::BiasTower> {
        let (values, _) = self.param_values(&format!("bias.{:?}", BiasFeature::PositionDevice))?;
        let tasks = &self.config.tasks;
        let k =
            tasks.iter().position(|t| t.debias && t.name == "click").or_else(|| tasks.iter().position(|t| t.debias))?;
        let t = tasks.len();
        let p1 = self.config.max_position as usize + 1;
        let column: Vec<f32> = values.chunks(t).map(|cell| cell[k]).collect();
        Some(crate::evaluate::BiasTower {
            task: tasks[k].name.clone(),
            max_position: self.config.max_position,
            position_device: column.chunks(p1).map(<[f32]>::to_vec).collect(),
        })
    }

    /// A snapshot of every parameter's value.
    pub fn values(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        for t in self.tables().iter() {
            out.push((t.name.clone(), Tensor::from_slice(&t.values, (t.rows, t.dim), &self.device)?));
        }
        for p in &self.params {
            out.push((p.name.clone(), p.var.as_tensor().copy()?));
        }
        Ok(out)
    }
}

/// Everything needed to draw a batch's random parts.
#[derive(Debug)]
pub struct BatchRng(pub ChaCha8Rng);

impl Model {
    /// Builds a batch from rows `start..end` of `ex`. With `rng` (training),
    /// positions are dropped to "missing" with `position_dropout` and gate
    /// entries with `gate_dropout`.
    pub fn batch(
        &self,
        ex: &crate::dataset::Examples,
        start: usize,
        end: usize,
        rng: Option<&mut BatchRng>,
    ) -> candle_core::Result<Batch> {
        let c = &self.config;
        let rows = end - start;
        let dev = &self.device;
        let dense = Tensor::from_slice(&ex.dense[start * DENSE_LEN..end * DENSE_LEN], (rows, DENSE_LEN), dev)?;
        let mut field_rows = Vec::with_capacity(SPARSE_LEN);
        let mut embedded = Vec::with_capacity(SPARSE_LEN);
        {
            let tables = self.tables();
            for (f, &table) in FIELD_TABLE.iter().enumerate() {
                let t = &tables[table];
                let ids: Vec<u32> = (start..end)
                    .map(|i| (ex.sparse[i * SPARSE_LEN + f].max(0) as u64).min(t.rows as u64 - 1) as u32)
                    .collect();
                embedded.push(Var::from_vec(t.gather(&ids), (rows, t.dim), dev)?);
                field_rows.push(ids);
            }
        }
        let max_p = c.max_position;
        // 0 = not shown (a replayed candidate): the "missing" cell, as at serving.
        let mut positions: Vec<u32> = ex.position[start..end].iter().map(|&p| p.min(max_p)).collect();
        let mut gate_mask = None;
        if let Some(BatchRng(rng)) = rng {
            if c.position_dropout > 0.0 {
                for p in &mut positions {
                    if rng.random::<f32>() < c.position_dropout {
                        *p = 0;
                    }
                }
            }
            if c.architecture == Architecture::Mmoe && c.gate_dropout > 0.0 {
                let (t, e) = (c.tasks.len(), c.experts);
                let mut mask = vec![0.0f32; rows * t * e];
                for gate in mask.chunks_mut(e) {
                    for m in gate.iter_mut() {
                        if rng.random::<f32>() < c.gate_dropout {
                            *m = DROPPED;
                        }
                    }
                    if gate.iter().all(|&m| m != 0.0) {
                        gate.fill(0.0);
                    }
                }
                gate_mask = Some(Tensor::from_vec(mask, (rows, t, e), dev)?);
            }
        }
        let p1 = max_p + 1;
        let mut bias_cells = Vec::new();
        for f in Self::bias_features(c) {
            let cells: Vec<u32> = (0..rows)
                .map(|r| {
                    let i = start + r;
                    match f {
                        BiasFeature::PositionDevice => u32::from(ex.device[i]) * p1 + positions[r],
                        BiasFeature::PositionSource => {
                            u32::from(ex.source[i].min(SOURCES as u8 - 1)) * p1 + positions[r]
                        }
                        BiasFeature::Device => u32::from(ex.device[i]),
                    }
                })
                .collect();
            bias_cells.push(Tensor::from_vec(cells, rows, dev)?);
        }
        let position = (c.position_mode == PositionMode::PlainInput)
            .then(|| Tensor::from_vec(positions, rows, dev))
            .transpose()?;
        let t = c.tasks.len();
        let labels = Tensor::from_slice(&ex.labels[start * t..end * t], (rows, t), dev)?;
        let mask = Tensor::from_slice(&ex.mask[start * t..end * t], (rows, t), dev)?;
        let mut groups = Vec::with_capacity(rows);
        let mut group = 0u32;
        for i in start..end {
            if i > start && ex.request[i] != ex.request[i - 1] {
                group += 1;
            }
            groups.push(group);
        }
        Ok(Batch {
            rows,
            dense,
            field_rows,
            embedded,
            position,
            bias_cells,
            gate_mask,
            labels: Some((labels, mask)),
            groups,
        })
    }
}
