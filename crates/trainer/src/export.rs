//! The serving graph: the trained network as ONNX, without the shallow
//! tower and without any position input, and the model directory around it
//! (`model.onnx` + `manifest.json`, the contract of
//! `watchnext_core::model`).
//!
//! The graph mirrors [`Model::forward`]: standardise `dense`, gather one
//! embedding row per `sparse` column, concatenate, bottom layer, experts,
//! one softmax gate per task (output `gates`), the mixture as one batched
//! matmul, batched towers, then a sigmoid on binary tasks (output
//! `predictions`).
//!
//! # Experts
//! The fp32 graph runs each expert as its own chain of 2-D layers
//! (`MatMul` → `Add` → `Relu`, which ONNX Runtime fuses into one GEMM
//! kernel with its bias and activation), then concatenates the experts'
//! outputs. The trainer holds them as one wide first layer and batched
//! `[E, in, out]` later layers; written that way the graph needed two
//! transposes, a broadcast bias add and a separate ReLU per batched layer,
//! and ran 500 candidates about 8% slower (BENCHMARKS.md, "Ranker"). The
//! INT8 graph splits the experts the same way, each expert's layer with
//! the activation range calibrated for the whole layer (the bottom's
//! output is quantised once for all experts); only the calibration graph
//! keeps the trainer's layout, whose layer inputs are the ranges'
//! tensors. In plain-input position mode, the "missing position"
//! embedding row is a constant input block, expanded over the batch.
//!
//! # INT8
//! [`serving_graph_int8`] writes the same network with its big matrix
//! products in 8-bit integers — the shared bottom and every expert layer,
//! about 95% of the default model's multiply-adds — and everything else
//! (embeddings, gates, towers, the mixture) in fp32:
//! - weights: symmetric int8, one scale per output channel (per expert for
//!   the batched layers), `scale = max |w| / 127`;
//! - activations: asymmetric uint8 with a zero point, one scale per layer
//!   input, from the range [`calibrate`] measured by running the fp32 graph
//!   on training rows (every range widened to hold 0);
//! - each product is `QuantizeLinear` → ONNX Runtime's
//!   `MatMulIntegerToFloat` (u8 × s8 → i32 with VNNI on x86, scaled by
//!   `activation scale × weight scales` and biased in the same kernel).
//!
//! Inputs, outputs and names are those of the fp32 graph, so the ranker
//! serves either, and an arm can pin one against the other.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use watchnext_core::{
    features::{DENSE_INPUT, DENSE_LEN, SPARSE_INPUT, SPARSE_LEN},
    model::{
        GATES_OUTPUT, MANIFEST_FORMAT, MODEL_FILE, ModelManifest, PREDICTIONS_OUTPUT, TaskKind, TaskSpec,
        TrainingSummary,
    },
};
use watchnext_onnx::{
    GraphBuilder,
    graph::{Attr, Dim, ElemType},
};

use crate::{
    config::{Architecture, PositionMode},
    model::{FIELD_TABLE, Model},
};

/// An export failure.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("parameter `{0}` is missing from the model")]
    MissingParam(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Onnx(#[from] watchnext_onnx::OnnxError),
    #[error(transparent)]
    Manifest(#[from] watchnext_core::model::ManifestError),
    #[error("INT8 calibration: {0}")]
    Calibration(String),
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// The value range of each quantised layer's input, measured on training
/// rows with the fp32 graph (see the module documentation, "INT8").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Rows the ranges were measured on.
    pub rows: usize,
    /// Layer (`bottom`, `experts.0`, …) → (min, max) of its input.
    pub ranges: BTreeMap<String, (f32, f32)>,
}

/// What a graph build writes.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// The fp32 serving graph.
    Fp32,
    /// The fp32 graph with each quantisable layer's input as an extra output.
    Taps,
    /// The INT8 serving graph.
    Int8(&'a Calibration),
}

/// The serving graph of `model`, encoded.
pub fn serving_graph(model: &Model, model_version: &str) -> Result<Vec<u8>, ExportError> {
    build(model, model_version, Mode::Fp32).map(|(bytes, _)| bytes)
}

/// The INT8 serving graph of `model` with activation ranges `calibration`.
pub fn serving_graph_int8(
    model: &Model,
    model_version: &str,
    calibration: &Calibration,
) -> Result<Vec<u8>, ExportError> {
    build(model, model_version, Mode::Int8(calibration)).map(|(bytes, _)| bytes)
}

/// Measures the input range of every quantisable layer by running the fp32
/// graph on the first `rows` of `examples` with ONNX Runtime.
pub fn calibrate(
    runtime: &watchnext_onnx::OnnxRuntime,
    model: &Model,
    examples: &crate::dataset::Examples,
    rows: usize,
) -> Result<Calibration, ExportError> {
    let n = rows.min(examples.len);
    calibrate_rows(runtime, model, &examples.dense[..n * DENSE_LEN], &examples.sparse[..n * SPARSE_LEN])
}

/// [`calibrate`] on feature rows (`dense`: rows × `DENSE_LEN`, `sparse`:
/// rows × `SPARSE_LEN`), e.g. served ones.
pub fn calibrate_rows(
    runtime: &watchnext_onnx::OnnxRuntime,
    model: &Model,
    dense: &[f32],
    sparse: &[i64],
) -> Result<Calibration, ExportError> {
    use ort::value::Tensor;
    let (bytes, taps) = build(model, "calibration", Mode::Taps)?;
    let mut loaded = runtime.load("calibration", &bytes, &watchnext_onnx::SessionOptions::default())?;
    let run = |e: ort::Error| ExportError::Calibration(e.to_string());
    let n = (dense.len() / DENSE_LEN).min(sparse.len() / SPARSE_LEN);
    let mut ranges: BTreeMap<String, (f32, f32)> = BTreeMap::new();
    let mut start = 0;
    while start < n {
        let end = (start + 2_048).min(n);
        let b = end - start;
        let d =
            Tensor::from_array(([b, DENSE_LEN], dense[start * DENSE_LEN..end * DENSE_LEN].to_vec())).map_err(run)?;
        let s = Tensor::from_array(([b, SPARSE_LEN], sparse[start * SPARSE_LEN..end * SPARSE_LEN].to_vec()))
            .map_err(run)?;
        let outputs = loaded.session.run(ort::inputs![DENSE_INPUT => d, SPARSE_INPUT => s]).map_err(run)?;
        for (key, tensor) in &taps {
            let (_, values) = outputs[tensor.as_str()].try_extract_tensor::<f32>().map_err(run)?;
            let r = ranges.entry(key.clone()).or_insert((0.0, 0.0));
            for &v in values {
                if v.is_finite() {
                    r.0 = r.0.min(v);
                    r.1 = r.1.max(v);
                }
            }
        }
        start = end;
    }
    Ok(Calibration { rows: n, ranges })
}

/// Symmetric per-output-channel int8 weights of `w` (`[.., in, out]`, the
/// channels along the last axis, one set per leading batch slice): the
/// quantised values and the scales (`[batch × out]`).
fn quantise_weights(w: &[f32], shape: &[usize]) -> (Vec<i8>, Vec<f32>) {
    let out = shape[shape.len() - 1];
    let inp = shape[shape.len() - 2];
    let slices = w.len() / (inp * out);
    let mut scales = vec![0.0f32; slices * out];
    for s in 0..slices {
        for i in 0..inp {
            for o in 0..out {
                let v = w[(s * inp + i) * out + o].abs();
                let m = &mut scales[s * out + o];
                *m = m.max(v);
            }
        }
    }
    for m in &mut scales {
        *m = if *m > 0.0 { *m / 127.0 } else { 1.0 };
    }
    let q = w
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let s = k / (inp * out);
            let o = k % out;
            (v / scales[s * out + o]).round().clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

/// Scale and zero point of an asymmetric uint8 activation over `(lo, hi)`
/// (widened to hold 0, so that zero padding and ReLU's zeros are exact).
fn activation_params(range: (f32, f32)) -> (f32, u8) {
    let (lo, hi) = (range.0.min(0.0), range.1.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// An encoded graph and its taps: (layer, tensor) of each quantisable
/// layer's input.
type Built = (Vec<u8>, Vec<(String, String)>);

fn build(model: &Model, model_version: &str, mode: Mode<'_>) -> Result<Built, ExportError> {
    let c = &model.config;
    let t = c.tasks.len() as i64;
    let e = c.experts as i64;
    let get = |name: &str| model.param_values(name).ok_or_else(|| ExportError::MissingParam(name.to_owned()));
    let mut g = GraphBuilder::new("watchnext_ranker");
    g.input(DENSE_INPUT, ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(DENSE_LEN as i64)]);
    g.input(SPARSE_INPUT, ElemType::I64, &[Dim::Dynamic("batch"), Dim::Fixed(SPARSE_LEN as i64)]);

    let mean = g.init_f32("dense_mean", &[1, DENSE_LEN as i64], &model.mean);
    let inv = g.init_f32("dense_inv_std", &[1, DENSE_LEN as i64], &model.inv_std);
    let centred = g.op("Sub", &[DENSE_INPUT, &mean], &[], "centred");
    let mut parts = vec![g.op("Mul", &[&centred, &inv], &[], "standardised")];
    let mut tables = Vec::new();
    for table in 0..5 {
        let (values, shape) = get(&format!("embedding.{table}"))?;
        tables.push(g.init_f32(&format!("embedding_{table}"), &dims(&shape), &values));
    }
    for (field, &table) in FIELD_TABLE.iter().enumerate() {
        let column = g.init_i64(&format!("field_{field}"), &[], &[field as i64]);
        let idx = g.op("Gather", &[SPARSE_INPUT, &column], &[("axis", Attr::Int(1))], "ids");
        parts.push(g.op("Gather", &[&tables[table], &idx], &[("axis", Attr::Int(0))], "embedded"));
    }
    if c.position_mode == PositionMode::PlainInput {
        // Serving never knows the position: the "missing" row (0) of the
        // position embedding, repeated over the batch.
        let (pos, pshape) = get("embedding.position")?;
        let d = pshape[1];
        let row = g.init_f32("position_missing", &[1, d as i64], &pos[..d]);
        let shape = g.op("Shape", &[DENSE_INPUT], &[], "dense_shape");
        let first = g.init_i64("batch_axis", &[1], &[0]);
        let batch = g.op("Gather", &[&shape, &first], &[("axis", Attr::Int(0))], "batch");
        let width = g.init_i64("position_width", &[1], &[d as i64]);
        let target = g.op("Concat", &[&batch, &width], &[("axis", Attr::Int(0))], "position_shape");
        parts.push(g.op("Expand", &[&row, &target], &[], "position"));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let x = g.op("Concat", &refs, &[("axis", Attr::Int(1))], "input");

    // Each quantisable layer's input: (layer, tensor) for `Mode::Taps`.
    let mut taps: Vec<(String, String)> = Vec::new();
    let mut tap_dims: Vec<Vec<Dim>> = Vec::new();
    // `input · weight + bias` (then ReLU): fp32, or in `Mode::Int8` for the
    // layers `quantise` names, in 8-bit integers.
    let quantised: std::cell::RefCell<std::collections::HashMap<(String, String), (String, String)>> =
        std::cell::RefCell::default();
    // One layer from explicit values: `name` is the trainer's layer (its
    // calibrated range), `key` names the graph's tensors.
    let layer_of = |g: &mut GraphBuilder,
                    taps: &mut Vec<(String, String)>,
                    tap_dims: &mut Vec<Vec<Dim>>,
                    input: &str,
                    (name, key): (&str, &str),
                    (w, ws): (Vec<f32>, Vec<usize>),
                    (b, bs): (Vec<f32>, Vec<usize>),
                    relu: bool,
                    quantise: bool|
     -> Result<String, ExportError> {
        let b = g.init_f32(&format!("{key}_bias"), &dims(&bs), &b);
        let mm = match mode {
            Mode::Int8(calibration) if quantise => {
                let range = calibration
                    .ranges
                    .get(name)
                    .copied()
                    .ok_or_else(|| ExportError::Calibration(format!("no calibrated range for layer `{name}`")))?;
                let (sx, zx) = activation_params(range);
                let (wq, sw) = quantise_weights(&w, &ws);
                let out = ws[ws.len() - 1];
                let scale_dims: Vec<i64> =
                    if ws.len() == 3 { vec![ws[0] as i64, 1, out as i64] } else { vec![out as i64] };
                let scales: Vec<f32> = sw.iter().map(|s| s * sx).collect();
                let wq = g.init_i8(&format!("{key}_weight_q"), &dims(&ws), &wq);
                let scales = g.init_f32(&format!("{key}_scales"), &scale_dims, &scales);
                // One quantised copy of an input however many layers read it
                // (every expert's first layer reads the bottom's output).
                let cached = quantised.borrow().get(&(input.to_owned(), name.to_owned())).cloned();
                let (xq, zx) = match cached {
                    Some(q) => q,
                    None => {
                        let sx = g.init_f32(&format!("{key}_x_scale"), &[], &[sx]);
                        let zx = g.init_u8(&format!("{key}_x_zero"), &[], &[zx]);
                        let xq = g.op("QuantizeLinear", &[input, &sx, &zx], &[], &format!("{key}_xq"));
                        quantised.borrow_mut().insert((input.to_owned(), name.to_owned()), (xq.clone(), zx.clone()));
                        (xq, zx)
                    }
                };
                // One fused kernel: integer product and per-column scales
                // (ONNX Runtime's contributed operator), with the bias too
                // where it is one row (it takes no per-expert bias; only the
                // batched layout of the calibration graph has those).
                let one = g.init_f32(&format!("{key}_one"), &[], &[1.0]);
                let fused_bias = ws.len() == 2;
                let y = g.op_in(
                    watchnext_onnx::graph::MICROSOFT_DOMAIN,
                    "MatMulIntegerToFloat",
                    &[&xq, &wq, &one, &scales, &zx, "", if fused_bias { &b } else { "" }],
                    &[],
                    &format!("{key}_mm"),
                );
                if fused_bias {
                    return Ok(if relu { g.op("Relu", &[&y], &[], key) } else { y });
                }
                y
            }
            _ => {
                if quantise && matches!(mode, Mode::Taps) {
                    taps.push((name.to_owned(), input.to_owned()));
                    let width = Dim::Fixed(ws[ws.len() - 2] as i64);
                    tap_dims.push(if ws.len() == 3 {
                        vec![Dim::Fixed(ws[0] as i64), Dim::Dynamic("batch"), width]
                    } else {
                        vec![Dim::Dynamic("batch"), width]
                    });
                }
                let w = g.init_f32(&format!("{key}_weight"), &dims(&ws), &w);
                g.op("MatMul", &[input, &w], &[], &format!("{key}_mm"))
            }
        };
        let add = g.op("Add", &[&mm, &b], &[], &format!("{key}_add"));
        Ok(if relu { g.op("Relu", &[&add], &[], key) } else { add })
    };
    let layer = |g: &mut GraphBuilder,
                 taps: &mut Vec<(String, String)>,
                 tap_dims: &mut Vec<Vec<Dim>>,
                 input: &str,
                 name: &str,
                 relu: bool,
                 quantise: bool|
     -> Result<String, ExportError> {
        let weight = get(&format!("{name}.weight"))?;
        let bias = get(&format!("{name}.bias"))?;
        layer_of(g, taps, tap_dims, input, (name, &name.replace('.', "_")), weight, bias, relu, quantise)
    };
    let h = layer(&mut g, &mut taps, &mut tap_dims, &x, "bottom", true, true)?;
    let towers_in = match c.architecture {
        Architecture::Mmoe => {
            // `[B, E, o]`: every expert's output for every row.
            let experts = if matches!(mode, Mode::Taps) {
                // The trainer's layout: its layer inputs are the tensors
                // whose ranges the INT8 graph is calibrated with.
                let mut z = layer(&mut g, &mut taps, &mut tap_dims, &h, "experts.0", true, true)?;
                let first = c.expert_layers[0] as i64;
                let shape = g.init_i64("experts_shape", &[3], &[-1, e, first]);
                let r = g.op("Reshape", &[&z, &shape], &[], "experts_split");
                z = g.op("Transpose", &[&r], &[("perm", Attr::Ints(vec![1, 0, 2]))], "experts_major");
                for l in 1..c.expert_layers.len() {
                    z = layer(&mut g, &mut taps, &mut tap_dims, &z, &format!("experts.{l}"), true, true)?;
                }
                g.op("Transpose", &[&z], &[("perm", Attr::Ints(vec![1, 0, 2]))], "experts_out")
            } else {
                // Serving: one 2-D layer chain per expert, each product
                // with its bias and ReLU fused into one kernel by ONNX
                // Runtime (see the module documentation, "Experts").
                let mut outputs = Vec::with_capacity(c.experts);
                for expert in 0..c.experts {
                    let mut z = h.clone();
                    let mut width = c.bottom;
                    for (l, &out) in c.expert_layers.iter().enumerate() {
                        let (w, _) = get(&format!("experts.{l}.weight"))?;
                        let (b, _) = get(&format!("experts.{l}.bias"))?;
                        // Layer 0 is one wide matrix `[in, E * out]` (expert e's
                        // columns e*out..); later layers are `[E, in, out]`.
                        let (w_e, b_e): (Vec<f32>, &[f32]) = if l == 0 {
                            let stride = c.experts * out;
                            let w_e =
                                (0..width).flat_map(|r| &w[r * stride + expert * out..][..out]).copied().collect();
                            (w_e, &b[expert * out..][..out])
                        } else {
                            (w[expert * width * out..][..width * out].to_vec(), &b[expert * out..][..out])
                        };
                        let (name, key) = (format!("experts.{l}"), format!("experts_{l}_e{expert}"));
                        z = layer_of(
                            &mut g,
                            &mut taps,
                            &mut tap_dims,
                            &z,
                            (&name, &key),
                            (w_e, vec![width, out]),
                            (b_e.to_vec(), vec![out]),
                            true,
                            true,
                        )?;
                        width = out;
                    }
                    outputs.push(z);
                }
                let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
                let all = g.op("Concat", &refs, &[("axis", Attr::Int(1))], "experts_concat");
                let last = *c.expert_layers.last().unwrap_or(&c.bottom) as i64;
                let shape = g.init_i64("experts_out_shape", &[3], &[-1, e, last]);
                g.op("Reshape", &[&all, &shape], &[], "experts_out")
            };
            let logits = layer(&mut g, &mut taps, &mut tap_dims, &h, "gates", false, false)?;
            let gshape = g.init_i64("gates_shape", &[3], &[-1, t, e]);
            let logits = g.op("Reshape", &[&logits, &gshape], &[], "gate_logits");
            g.op_named("Softmax", &[&logits], &[("axis", Attr::Int(-1))], &[GATES_OUTPUT]);
            let mixed = g.op("MatMul", &[GATES_OUTPUT, &experts], &[], "mixed");
            g.op("Transpose", &[&mixed], &[("perm", Attr::Ints(vec![1, 0, 2]))], "towers_in")
        }
        Architecture::SharedBottom => {
            let mut z = layer(&mut g, &mut taps, &mut tap_dims, &h, "experts.0", true, true)?;
            for l in 1..c.expert_layers.len() {
                z = layer(&mut g, &mut taps, &mut tap_dims, &z, &format!("experts.{l}"), true, true)?;
            }
            // [B, H] · [T, H, o] broadcasts to [T, B, o], as in training.
            z
        }
    };
    let mut y = towers_in;
    let layers = c.tower_layers.len() + 1;
    for l in 0..layers {
        y = layer(&mut g, &mut taps, &mut tap_dims, &y, &format!("towers.{l}"), l + 1 < layers, false)?;
    }
    let tshape = g.init_i64("towers_shape", &[2], &[t, -1]);
    let y = g.op("Reshape", &[&y, &tshape], &[], "task_major");
    let logits = g.op("Transpose", &[&y], &[("perm", Attr::Ints(vec![1, 0]))], "logits");
    let binary: Vec<f32> = c.tasks.iter().map(|t| f32::from(u8::from(t.kind == TaskKind::Binary))).collect();
    let other: Vec<f32> = binary.iter().map(|b| 1.0 - b).collect();
    let binary = g.init_f32("binary_tasks", &[1, t], &binary);
    let other = g.init_f32("regression_tasks", &[1, t], &other);
    let sig = g.op("Sigmoid", &[&logits], &[], "probabilities");
    let a = g.op("Mul", &[&sig, &binary], &[], "binary_part");
    let b = g.op("Mul", &[&logits, &other], &[], "regression_part");
    g.op_named("Add", &[&a, &b], &[], &[PREDICTIONS_OUTPUT]);
    g.output(PREDICTIONS_OUTPUT, ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(t)]);
    if c.architecture == Architecture::Mmoe {
        g.output(GATES_OUTPUT, ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(t), Dim::Fixed(e)]);
    }
    for ((_, tensor), d) in taps.iter().zip(&tap_dims) {
        g.output(tensor, ElemType::F32, d);
    }
    g.metadata("model_version", model_version);
    g.metadata("feature_schema", model.schema.hash());
    if let Mode::Int8(calibration) = mode {
        g.metadata("precision", "int8");
        g.metadata("calibration_rows", &calibration.rows.to_string());
    }
    Ok((g.to_bytes(), taps))
}

/// The manifest of `model`.
pub fn manifest(model: &Model, model_version: &str, training: TrainingSummary) -> ModelManifest {
    let c = &model.config;
    let experts = model.experts() as u32;
    ModelManifest {
        format: MANIFEST_FORMAT,
        model_version: model_version.to_owned(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        schema: model.schema.describe(),
        inputs: ModelManifest::standard_inputs(),
        outputs: ModelManifest::standard_outputs(c.tasks.len(), experts),
        tasks: c
            .tasks
            .iter()
            .map(|t| TaskSpec {
                name: t.name.clone(),
                kind: t.kind,
                transform: t.transform.name().to_owned(),
                combiner_weight: t.combiner_weight,
                debiased: t.debias && c.position_mode == PositionMode::ShallowTower,
            })
            .collect(),
        experts,
        training,
        metrics: Default::default(),
        precision: "fp32".into(),
    }
}

/// Writes `dir/model.onnx` and `dir/manifest.json` (each crash-safe; the
/// manifest last, so a directory with a manifest is complete).
pub fn write_model_dir(dir: &Path, bytes: &[u8], manifest: &ModelManifest) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io { path: dir.to_owned(), source })?;
    watchnext_onnx::graph::write_model(&dir.join(MODEL_FILE), bytes)?;
    manifest.write(dir)?;
    Ok(())
}
