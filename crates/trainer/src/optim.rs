//! Adam(W) arithmetic shared by the ranking and the sequence trainers: a
//! dense step on a parameter tensor, and the lazy step on the embedding-table
//! rows a batch used. Each trainer keeps its own moments (so they can be
//! checkpointed) and calls these.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::model::Table;

/// Adam's constants and the step's bias corrections.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `1 − β₁ᵗ` and `1 − β₂ᵗ` of this step.
    pub c1: f64,
    pub c2: f64,
}

impl AdamStep {
    /// The constants of step `t` (1-based), with β = (0.9, 0.999), ε = 1e-8.
    pub fn at(t: u64) -> Self {
        let (beta1, beta2) = (0.9f64, 0.999f64);
        let t = t.min(i32::MAX as u64) as i32;
        Self { beta1, beta2, eps: 1e-8, c1: 1.0 - beta1.powi(t), c2: 1.0 - beta2.powi(t) }
    }
}

/// One AdamW step on `theta` with gradient `g`: moments `m`, `v` updated in
/// place, then `θ ← θ·(1 − decay) − lr · m̂ / (√v̂ + ε)` (`decay` = learning
/// rate × weight decay, 0 for none).
pub fn dense_step(
    theta: &Var,
    m: &Var,
    v: &Var,
    g: &Tensor,
    s: &AdamStep,
    lr: f64,
    decay: f64,
) -> candle_core::Result<()> {
    let m_new = (m.as_tensor().affine(s.beta1, 0.0)? + g.affine(1.0 - s.beta1, 0.0)?)?;
    let v_new = (v.as_tensor().affine(s.beta2, 0.0)? + g.sqr()?.affine(1.0 - s.beta2, 0.0)?)?;
    let step = (m_new.affine(1.0 / s.c1, 0.0)? / v_new.affine(1.0 / s.c2, 0.0)?.sqrt()?.affine(1.0, s.eps)?)?;
    let t = theta.as_tensor();
    let decayed = if decay > 0.0 { t.affine(1.0 - decay, 0.0)? } else { t.clone() };
    theta.set(&(decayed - step.affine(lr, 0.0)?)?)?;
    m.set(&m_new)?;
    v.set(&v_new)
}

/// Lazy Adam on the rows of `table` in `grads` (row → summed gradient):
/// only those rows' moments and values move; no weight decay.
pub fn rows_step(table: &mut Table, grads: &HashMap<u32, Vec<f32>>, s: &AdamStep, lr: f64) {
    let (b1, b2) = (s.beta1 as f32, s.beta2 as f32);
    let (lr, eps) = (lr as f32, s.eps as f32);
    let (c1, c2) = (s.c1 as f32, s.c2 as f32);
    let dim = table.dim;
    for (&row, g) in grads {
        let base = row as usize * dim;
        for (k, &gk) in g.iter().enumerate().take(dim) {
            let j = base + k;
            table.m[j] = b1 * table.m[j] + (1.0 - b1) * gk;
            table.v[j] = b2 * table.v[j] + (1.0 - b2) * gk * gk;
            table.values[j] -= lr * (table.m[j] / c1) / ((table.v[j] / c2).sqrt() + eps);
        }
    }
}

/// Sums the rows of a `[n, dim]` gradient by table row (`rows[i]` is the
/// table row of gradient row `i`) into `acc`.
pub fn accumulate_rows(acc: &mut HashMap<u32, Vec<f32>>, rows: &[u32], grad: &[f32], dim: usize) {
    for (r, &row) in rows.iter().enumerate() {
        let sum = acc.entry(row).or_insert_with(|| vec![0.0; dim]);
        for (a, x) in sum.iter_mut().zip(&grad[r * dim..(r + 1) * dim]) {
            *a += x;
        }
    }
}
