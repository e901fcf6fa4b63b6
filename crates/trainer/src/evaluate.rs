//! Offline evaluation of a model directory — the exported ONNX artifact,
//! run by ONNX Runtime exactly as it will be served, never the trainer's
//! in-memory network.
//!
//! - [`predict`] runs `model.onnx` over examples in batches.
//! - [`task_metrics`]: AUC for binary tasks, mean squared error (in the
//!   task's transformed label space) for regression tasks.
//! - [`gate_report`]: expert utilisation per task gate — mean weight per
//!   expert, the gate's entropy (of the mean), and how many experts get
//!   under 1% (a gate with most experts under 1% has polarised).
//! - [`bias_curves`]: the shallow tower's learned position bias per device,
//!   for any data with positions, beside the logged click rate by slot and,
//!   with the synthetic world's ground truth, the true examination curve.
//! - [`ndcg_vs_truth`] (world only) measures how well the model orders each
//!   logged list by true relevance r(u, v) (NDCG@10).

use std::path::Path;

use serde::{Deserialize, Serialize};
use watchnext_core::{
    features::{DENSE_INPUT, DENSE_LEN, SPARSE_INPUT, SPARSE_LEN},
    model::{GATES_OUTPUT, MODEL_FILE, ModelManifest, PREDICTIONS_OUTPUT, TaskKind},
    request::Device,
};
use watchnext_world::World;

use crate::dataset::Examples;

/// An evaluation failure.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Onnx(#[from] watchnext_onnx::OnnxError),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("running the model: {0}")]
    Run(String),
    #[error(transparent)]
    Manifest(#[from] watchnext_core::model::ManifestError),
}

/// Predictions (`rows × tasks`) and gate weights (`rows × tasks × experts`).
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub tasks: usize,
    pub experts: usize,
    pub values: Vec<f32>,
    pub gates: Vec<f32>,
}

/// Runs `dir/model.onnx` over every row of `ex`, `batch` rows per run.
pub fn predict(
    runtime: &watchnext_onnx::OnnxRuntime,
    dir: &Path,
    manifest: &ModelManifest,
    ex: &Examples,
    batch: usize,
) -> Result<Predictions, EvalError> {
    use ort::value::Tensor;
    let path = dir.join(MODEL_FILE);
    let mut loaded = runtime.load_file(&path, &watchnext_onnx::SessionOptions::default())?;
    let tasks = manifest.tasks.len();
    let experts = manifest.experts as usize;
    let mut out = Predictions { tasks, experts, values: Vec::with_capacity(ex.len * tasks), gates: Vec::new() };
    let run = |e: ort::Error| EvalError::Run(e.to_string());
    let mut start = 0;
    while start < ex.len {
        let end = (start + batch.max(1)).min(ex.len);
        let rows = end - start;
        let dense = Tensor::from_array(([rows, DENSE_LEN], ex.dense[start * DENSE_LEN..end * DENSE_LEN].to_vec()))
            .map_err(run)?;
        let sparse = Tensor::from_array(([rows, SPARSE_LEN], ex.sparse[start * SPARSE_LEN..end * SPARSE_LEN].to_vec()))
            .map_err(run)?;
        let outputs = loaded.session.run(ort::inputs![DENSE_INPUT => dense, SPARSE_INPUT => sparse]).map_err(run)?;
        let (_, p) = outputs[PREDICTIONS_OUTPUT].try_extract_tensor::<f32>().map_err(run)?;
        out.values.extend_from_slice(p);
        if experts > 0 {
            let (_, g) = outputs[GATES_OUTPUT].try_extract_tensor::<f32>().map_err(run)?;
            out.gates.extend_from_slice(g);
        }
        start = end;
    }
    Ok(out)
}

/// One task's offline metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMetric {
    pub task: String,
    pub kind: TaskKind,
    /// Rows with an observed label.
    pub rows: usize,
    pub auc: Option<f64>,
    pub mse: Option<f64>,
    /// Mean label and mean prediction (calibration at a glance).
    pub mean_label: f64,
    pub mean_prediction: f64,
}

/// AUC or MSE per task over the rows whose label is observed.
pub fn task_metrics(manifest: &ModelManifest, ex: &Examples, p: &Predictions) -> Vec<TaskMetric> {
    let t = p.tasks;
    manifest
        .tasks
        .iter()
        .enumerate()
        .map(|(k, task)| {
            let mut preds = Vec::new();
            let mut labels = Vec::new();
            for i in 0..ex.len {
                if ex.mask[i * t + k] > 0.0 {
                    preds.push(p.values[i * t + k]);
                    labels.push(ex.labels[i * t + k]);
                }
            }
            let n = labels.len();
            let mean = |v: &[f32]| {
                if v.is_empty() { 0.0 } else { v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64 }
            };
            let (auc, mse) = match task.kind {
                TaskKind::Binary => {
                    let truth: Vec<bool> = labels.iter().map(|l| *l > 0.5).collect();
                    (watchnext_eval::metrics::auc(&preds, &truth), None)
                }
                TaskKind::Regression => (None, watchnext_eval::metrics::mse(&preds, &labels)),
            };
            TaskMetric {
                task: task.name.clone(),
                kind: task.kind,
                rows: n,
                auc,
                mse,
                mean_label: mean(&labels),
                mean_prediction: mean(&preds),
            }
        })
        .collect()
}

/// Utilisation of one task's gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateUtilisation {
    pub task: String,
    /// Mean weight of each expert over the rows.
    pub mean: Vec<f64>,
    /// Entropy (nats) of the mean weights; ln(E) is perfectly even.
    pub entropy: f64,
    /// Experts whose mean weight is under 1%.
    pub below_one_percent: usize,
    /// Whether the gate has polarised: at most one expert at or above 1%.
    pub polarised: bool,
}

/// The polarisation report: utilisation of every gate.
pub fn gate_report(manifest: &ModelManifest, p: &Predictions) -> Vec<GateUtilisation> {
    let (t, e) = (p.tasks, p.experts);
    if e == 0 || p.gates.is_empty() {
        return Vec::new();
    }
    let rows = p.gates.len() / (t * e);
    manifest
        .tasks
        .iter()
        .enumerate()
        .map(|(k, task)| {
            let mut mean = vec![0.0f64; e];
            for r in 0..rows {
                let g = &p.gates[(r * t + k) * e..(r * t + k + 1) * e];
                for (m, w) in mean.iter_mut().zip(g) {
                    *m += f64::from(*w);
                }
            }
            mean.iter_mut().for_each(|m| *m /= rows.max(1) as f64);
            let entropy = -mean.iter().filter(|m| **m > 0.0).map(|m| m * m.ln()).sum::<f64>();
            let below = mean.iter().filter(|m| **m < 0.01).count();
            GateUtilisation {
                task: task.name.clone(),
                mean,
                entropy,
                below_one_percent: below,
                polarised: below + 1 >= e,
            }
        })
        .collect()
}

/// The shallow tower's position × device weights, saved beside the serving
/// graph (training-only: serving never reads them) as `bias_tower.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BiasTower {
    /// The task whose bias this is (click, normally).
    pub task: String,
    pub max_position: u32,
    /// Per device (in `Device::ALL` order): the bias logit of positions
    /// 0 (missing) ..= max_position.
    pub position_device: Vec<Vec<f32>>,
}

pub const BIAS_TOWER_FILE: &str = "bias_tower.json";

/// The learned position bias of one device, beside what the data show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BiasCurve {
    pub device: String,
    pub positions: Vec<u32>,
    /// exp(b(p, d) − b(1, d)): the learned examination odds relative to slot 1.
    pub learned: Vec<f64>,
    /// The logged click rate at slot p over the rate at slot 1, in the rows
    /// given (the evaluation's test period). It mixes position with what the
    /// logging policy put there, which is what the tower separates; NaN
    /// where a slot has fewer than [`MIN_OBSERVED_ROWS`] rows.
    pub observed: Vec<f64>,
    /// Rows of this device with a position in the rows given.
    pub rows: u64,
    /// e(p, d) / e(1, d) from the synthetic world, when the data come from one.
    pub truth: Option<Vec<f64>>,
    /// Mean |learned − truth| over the positions, with a world.
    pub mean_abs_error: Option<f64>,
}

/// Slots with fewer logged rows than this show no observed click rate.
pub const MIN_OBSERVED_ROWS: u64 = 30;

/// The shallow tower's position bias per device, for any data with positions.
///
/// The tower adds b(p, d) to the click logit, so exp(b(p) − b(1)) is the
/// learned ratio of click odds between slot p and slot 1. Devices appear when
/// `rows` holds positioned rows of theirs (every device, with a world). With
/// a world, the curve is set against the truth: the world's clicks are
/// e(p, d)·r(u, v), so for small click probabilities the odds ratio is the
/// examination ratio e(p)/e(1).
pub fn bias_curves(tower: &BiasTower, rows: &Examples, world: Option<&World>, max_position: u32) -> Vec<BiasCurve> {
    let top = max_position.min(tower.max_position);
    let click = rows.tasks.iter().position(|t| t == "click");
    let t = rows.num_tasks();
    // Per device and slot 1..=top: (rows, clicks).
    let devices = Device::ALL.len();
    let mut counts = vec![vec![(0u64, 0u64); top as usize + 1]; devices];
    let mut per_device = vec![0u64; devices];
    for i in 0..rows.len {
        let (p, d) = (rows.position[i], usize::from(rows.device[i]));
        if p == 0 || p > top || d >= devices {
            continue;
        }
        per_device[d] += 1;
        if let Some(k) = click.filter(|&k| rows.mask[i * t + k] > 0.0) {
            let cell = &mut counts[d][p as usize];
            cell.0 += 1;
            cell.1 += u64::from(rows.labels[i * t + k] > 0.5);
        }
    }
    Device::ALL
        .into_iter()
        // With a world: its four devices (it logs no unknown one); otherwise
        // every device the rows show, unknown included (an import has no
        // device).
        .filter(|&device| match world {
            Some(_) => device != Device::Unknown,
            None => per_device[device.index()] > 0,
        })
        .filter_map(|device| {
            let row = tower.position_device.get(device.index())?;
            let b1 = f64::from(*row.get(1)?);
            let positions: Vec<u32> = (1..=top).collect();
            let learned: Vec<f64> = positions.iter().map(|&p| (f64::from(row[p as usize]) - b1).exp()).collect();
            let rate = |(n, c): (u64, u64)| if n >= MIN_OBSERVED_ROWS { c as f64 / n as f64 } else { f64::NAN };
            let r1 = rate(counts[device.index()][1]);
            let observed: Vec<f64> = positions
                .iter()
                .map(|&p| {
                    let r = rate(counts[device.index()][p as usize]);
                    if r1 > 0.0 { r / r1 } else { f64::NAN }
                })
                .collect();
            let truth = world.map(|world| {
                let e1 = world.examination(1, device);
                positions.iter().map(|&p| world.examination(p, device) / e1).collect::<Vec<f64>>()
            });
            let mean_abs_error = truth.as_ref().map(|truth| {
                learned.iter().zip(truth).map(|(l, t)| (l - t).abs()).sum::<f64>() / positions.len().max(1) as f64
            });
            Some(BiasCurve {
                device: device.name().to_owned(),
                positions,
                learned,
                observed,
                rows: per_device[device.index()],
                truth,
                mean_abs_error,
            })
        })
        .collect()
}

/// Mean NDCG@k over the logged lists of `ex` when each list is re-ordered by
/// `scores` (one per row), with the true relevance r(u, v) as the gain.
/// Rows whose user or video the world does not know are skipped.
pub fn ndcg_vs_truth(world: &World, ex: &Examples, scores: &[f32], k: usize) -> Option<f64> {
    let mut order: Vec<usize> = (0..ex.len).collect();
    order.sort_by_key(|&i| ex.request[i]);
    let (mut sum, mut lists) = (0.0f64, 0usize);
    for group in order.chunk_by(|a, b| ex.request[*a] == ex.request[*b]) {
        let mut scored: Vec<(f32, f64)> = Vec::with_capacity(group.len());
        for &i in group {
            let user = world.user_index(&ex.users[ex.user[i] as usize]);
            let video = world.video_index(&ex.videos[ex.video[i] as usize]);
            if let (Some(u), Some(v)) = (user, video) {
                scored.push((scores[i], world.click_prob(u, v)));
            }
        }
        if scored.len() < 2 {
            continue;
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let gains: Vec<f64> = scored.iter().map(|s| s.1).collect();
        sum += watchnext_eval::metrics::graded_ndcg(&gains, &gains, k);
        lists += 1;
    }
    (lists > 0).then(|| sum / lists as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logged rows of one device: `clicks[p - 1]` clicks out of `n` rows at slot p.
    fn logged(ex: &mut Examples, device: Device, n: u64, clicks: &[u64]) {
        for (slot, &c) in clicks.iter().enumerate() {
            for i in 0..n {
                ex.position.push(slot as u32 + 1);
                ex.device.push(device.index() as u8);
                ex.labels.extend([f32::from(u8::from(i < c)), 0.0]);
                ex.mask.extend([1.0, 0.0]);
                ex.len += 1;
            }
        }
    }

    fn empty() -> Examples {
        Examples::new(vec!["click".into(), "watch_time".into()])
    }

    #[test]
    fn curves_without_a_world_show_the_devices_logged_and_their_click_rates() {
        // The tower learned b(p) = −0.5·(p − 1) for every device.
        let row: Vec<f32> = (0..=4).map(|p| -0.5 * (p as f32 - 1.0)).collect();
        let tower = BiasTower { task: "click".into(), max_position: 4, position_device: vec![row; Device::ALL.len()] };
        // Only tablets were logged; slot 4 has too few rows for a rate.
        let mut ex = empty();
        logged(&mut ex, Device::Tablet, 100, &[40, 20, 10]);
        logged(&mut ex, Device::Tablet, MIN_OBSERVED_ROWS - 1, &[0, 0, 0, 5]);
        let curves = bias_curves(&tower, &ex, None, 4);
        assert_eq!(curves.len(), 1, "only the device with positioned rows");
        let c = &curves[0];
        assert_eq!((c.device.as_str(), c.rows), ("tablet", 300 + 4 * (MIN_OBSERVED_ROWS - 1)));
        assert_eq!(c.positions, [1, 2, 3, 4]);
        for (p, learned) in c.learned.iter().enumerate() {
            assert!((learned - (-0.5 * p as f64).exp()).abs() < 1e-6, "{learned}");
        }
        // Slot 1: 40 of 129 clicked; slot 2: 20 of 129; slot 3: 10 of 129.
        assert!((c.observed[0] - 1.0).abs() < 1e-12);
        assert!((c.observed[1] - 0.5).abs() < 1e-12 && (c.observed[2] - 0.25).abs() < 1e-12);
        assert!(c.observed[3].is_nan(), "under {MIN_OBSERVED_ROWS} rows at slot 4");
        assert_eq!((c.truth.as_ref(), c.mean_abs_error), (None, None));
    }

    #[test]
    fn rows_without_positions_give_no_curve() {
        let tower =
            BiasTower { task: "click".into(), max_position: 4, position_device: vec![vec![0.0; 5]; Device::ALL.len()] };
        let mut ex = empty();
        logged(&mut ex, Device::Phone, 50, &[5]);
        ex.position.iter_mut().for_each(|p| *p = 0);
        assert!(bias_curves(&tower, &ex, None, 4).is_empty());
    }
}
