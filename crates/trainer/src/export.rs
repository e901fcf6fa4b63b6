//! The serving graph: the trained network as ONNX, without the shallow
//! tower and without any position input, and the model directory around it
//! (`model.onnx` + `manifest.json`, the contract of
//! `watchnext_core::model`).
//!
//! The graph mirrors [`Model::forward`] op for op: standardise `dense`,
//! gather one embedding row per `sparse` column, concatenate, bottom layer,
//! experts (first layer one wide matmul, later layers batched `[E, in, out]`),
//! one softmax gate per task (output `gates`), the mixture as one batched
//! matmul, batched towers, then a sigmoid on binary tasks (output
//! `predictions`). In plain-input position mode, the "missing position"
//! embedding row is a constant input block, expanded over the batch.

use std::path::Path;

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
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// The serving graph of `model`, encoded.
pub fn serving_graph(model: &Model, model_version: &str) -> Result<Vec<u8>, ExportError> {
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

    let (wb, wshape) = get("bottom.weight")?;
    let (bb, _) = get("bottom.bias")?;
    let (in_rows, bottom) = (wshape[0], wshape[1]);
    let wb = g.init_f32("bottom_weight", &[in_rows as i64, bottom as i64], &wb);
    let bb = g.init_f32("bottom_bias", &[bottom as i64], &bb);
    let mm = g.op("MatMul", &[&x, &wb], &[], "bottom_mm");
    let add = g.op("Add", &[&mm, &bb], &[], "bottom_add");
    let h = g.op("Relu", &[&add], &[], "bottom");

    let layer = |g: &mut GraphBuilder, input: &str, name: &str, relu: bool| -> Result<String, ExportError> {
        let (w, ws) = get(&format!("{name}.weight"))?;
        let (b, bs) = get(&format!("{name}.bias"))?;
        let key = name.replace('.', "_");
        let w = g.init_f32(&format!("{key}_weight"), &dims(&ws), &w);
        let b = g.init_f32(&format!("{key}_bias"), &dims(&bs), &b);
        let mm = g.op("MatMul", &[input, &w], &[], &format!("{key}_mm"));
        let add = g.op("Add", &[&mm, &b], &[], &format!("{key}_add"));
        Ok(if relu { g.op("Relu", &[&add], &[], &key) } else { add })
    };
    let mut z = layer(&mut g, &h, "experts.0", true)?;
    let towers_in = match c.architecture {
        Architecture::Mmoe => {
            let first = c.expert_layers[0] as i64;
            let shape = g.init_i64("experts_shape", &[3], &[-1, e, first]);
            let r = g.op("Reshape", &[&z, &shape], &[], "experts_split");
            z = g.op("Transpose", &[&r], &[("perm", Attr::Ints(vec![1, 0, 2]))], "experts_major");
            for l in 1..c.expert_layers.len() {
                z = layer(&mut g, &z, &format!("experts.{l}"), true)?;
            }
            let experts = g.op("Transpose", &[&z], &[("perm", Attr::Ints(vec![1, 0, 2]))], "experts_out");
            let logits = layer(&mut g, &h, "gates", false)?;
            let gshape = g.init_i64("gates_shape", &[3], &[-1, t, e]);
            let logits = g.op("Reshape", &[&logits, &gshape], &[], "gate_logits");
            g.op_named("Softmax", &[&logits], &[("axis", Attr::Int(-1))], &[GATES_OUTPUT]);
            let mixed = g.op("MatMul", &[GATES_OUTPUT, &experts], &[], "mixed");
            g.op("Transpose", &[&mixed], &[("perm", Attr::Ints(vec![1, 0, 2]))], "towers_in")
        }
        Architecture::SharedBottom => {
            for l in 1..c.expert_layers.len() {
                z = layer(&mut g, &z, &format!("experts.{l}"), true)?;
            }
            // [B, H] · [T, H, o] broadcasts to [T, B, o], as in training.
            z
        }
    };
    let mut y = towers_in;
    let layers = c.tower_layers.len() + 1;
    for l in 0..layers {
        y = layer(&mut g, &y, &format!("towers.{l}"), l + 1 < layers)?;
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
    g.metadata("model_version", model_version);
    g.metadata("feature_schema", model.schema.hash());
    Ok(g.to_bytes())
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
