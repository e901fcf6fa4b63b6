//! The network on synthetic examples: it learns, gate dropout renormalises,
//! and the exported ONNX graph has no position input and computes what the
//! trainer computes (run through ONNX Runtime).

use prost::Message;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use watchnext_core::{
    features::{DENSE_LEN, FeatureConfig, FeatureSchema, SPARSE_LEN},
    model::{ModelManifest, TaskKind},
};
use watchnext_trainer::{
    config::{Architecture, Label, PositionMode, TaskConfig, TrainerConfig, Transform},
    dataset::Examples,
    export,
    model::{BatchRng, Model},
    train::{self, TrainOptions},
};

fn tiny_config(architecture: Architecture, position_mode: PositionMode) -> TrainerConfig {
    TrainerConfig {
        features: FeatureConfig { user_buckets: 50, video_buckets: 100, topic_buckets: 10, history_window: 10 },
        tasks: vec![
            TaskConfig {
                name: "click".into(),
                kind: TaskKind::Binary,
                label: Label::Click,
                transform: Transform::Identity,
                loss_weight: 1.0,
                combiner_weight: 1.0,
                debias: true,
            },
            TaskConfig {
                name: "watch".into(),
                kind: TaskKind::Regression,
                label: Label::WatchSeconds,
                transform: Transform::Log1p,
                loss_weight: 1.0,
                combiner_weight: 1.0,
                debias: false,
            },
        ],
        architecture,
        position_mode,
        embedding_dim: 4,
        bottom: 16,
        experts: 3,
        expert_layers: vec![12, 8],
        tower_layers: vec![6],
        batch_size: 64,
        learning_rate: 1e-2,
        max_epochs: 12,
        patience: 3,
        ..TrainerConfig::default()
    }
}

/// Rows whose click depends on dense feature 0 and the candidate bucket's
/// parity, whose watch is 3·feature 1, shown at random positions where a
/// lower slot halves the click odds.
fn synthetic(n: usize, seed: u64) -> Examples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ex = Examples { tasks: vec!["click".into(), "watch".into()], ..Examples::default() };
    for i in 0..n {
        let dense: Vec<f32> = (0..DENSE_LEN).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let sparse: Vec<i64> = [50, 100, 100, 10, 10, 5, 24].iter().map(|&b| rng.random_range(0..b)).collect();
        let position = rng.random_range(1..=10u32);
        let logit = 3.0 * dense[0] + if sparse[1] % 2 == 0 { 1.0 } else { -1.0 } - 0.3 * position as f32;
        let click = rng.random::<f32>() < 1.0 / (1.0 + (-logit).exp());
        ex.dense.extend(&dense);
        ex.sparse.extend(&sparse);
        ex.labels.extend([f32::from(u8::from(click)), 3.0 * dense[1]]);
        ex.mask.extend([1.0, 1.0]);
        ex.position.push(position);
        ex.device.push(sparse[5] as u8);
        ex.source.push(0);
        ex.timestamp_ms.push(i as i64);
        ex.user.push(0);
        ex.video.push(0);
        ex.request.push(i as u32);
    }
    ex.len = n;
    ex
}

fn model_for(config: &TrainerConfig, ex: &Examples) -> Model {
    let (mean, inv) = train::dense_standardisation(ex);
    Model::new(config, mean, inv, &train::label_means(ex)).expect("model")
}

#[test]
fn loss_falls_on_a_learnable_task() {
    let config = tiny_config(Architecture::Mmoe, PositionMode::ShallowTower);
    let (tr, va) = (synthetic(3_000, 1), synthetic(1_000, 2));
    let model = model_for(&config, &tr);
    let (before, _, _) = train::evaluate_loss(&model, &va).unwrap();
    let report = train::train(&model, &tr, &va, &TrainOptions::default()).unwrap();
    let (after, per_task, aucs) = train::evaluate_loss(&model, &va).unwrap();
    assert!(after < 0.7 * before, "validation loss {before} → {after}");
    assert!(aucs[0].unwrap() > 0.8, "click AUC {:?}", aucs[0]);
    assert!(per_task[1] < 0.5, "watch MSE {}", per_task[1]);
    assert!(report.best_epoch >= 1 && report.epochs.len() <= config.max_epochs);
    // Seeded: the same run again gives the same numbers.
    let again = model_for(&config, &tr);
    let report2 = train::train(&again, &tr, &va, &TrainOptions::default()).unwrap();
    assert_eq!(report.epochs[0].train_loss, report2.epochs[0].train_loss);
}

#[test]
fn gate_dropout_zeroes_dropped_experts_and_renormalises() {
    let mut config = tiny_config(Architecture::Mmoe, PositionMode::ShallowTower);
    config.gate_dropout = 0.4;
    let ex = synthetic(256, 3);
    let model = model_for(&config, &ex);
    let mut rng = BatchRng(ChaCha8Rng::seed_from_u64(9));
    let batch = model.batch(&ex, 0, 256, Some(&mut rng)).unwrap();
    let mask = batch.gate_mask.as_ref().expect("a gate mask in training").to_vec3::<f32>().unwrap();
    let gates = model.forward(&batch, true).unwrap().gates.expect("gates").to_vec3::<f32>().unwrap();
    let (mut dropped, mut kept) = (0, 0);
    for (row, mrow) in gates.iter().zip(&mask) {
        for (gate, m) in row.iter().zip(mrow) {
            let sum: f32 = gate.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "gate sums to {sum}");
            for (w, mm) in gate.iter().zip(m) {
                if *mm != 0.0 {
                    assert_eq!(*w, 0.0, "a dropped expert has weight 0");
                    dropped += 1;
                } else {
                    assert!(*w > 0.0);
                    kept += 1;
                }
            }
        }
    }
    let share = f64::from(dropped) / f64::from(dropped + kept);
    assert!((0.3..0.5).contains(&share), "dropped share {share}");
    // At evaluation there is no mask and no expert is dropped.
    let plain = model.batch(&ex, 0, 256, None).unwrap();
    assert!(plain.gate_mask.is_none());
}

fn run_ort(bytes: &[u8], dense: &[f32], sparse: &[i64], rows: usize, gates: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    use ort::value::Tensor;
    let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())
        .expect("ONNX Runtime (run scripts/setup.sh)");
    let mut loaded = runtime.load("parity", bytes, &watchnext_onnx::SessionOptions::default()).expect("loads");
    let d = Tensor::from_array(([rows, DENSE_LEN], dense.to_vec())).expect("dense");
    let s = Tensor::from_array(([rows, SPARSE_LEN], sparse.to_vec())).expect("sparse");
    let out = loaded.session.run(ort::inputs!["dense" => d, "sparse" => s]).expect("runs");
    let (_, p) = out["predictions"].try_extract_tensor::<f32>().expect("predictions");
    let g = gates.then(|| out["gates"].try_extract_tensor::<f32>().expect("gates").1.to_vec());
    (p.to_vec(), g)
}

/// 1e-5 relative, with an absolute floor of 1e-6 for outputs near zero
/// (a regression output that cancels to ~0 has no meaningful relative error).
fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6
}

#[test]
fn the_exported_graph_matches_the_trainer_and_has_no_position_input() {
    for (architecture, mode) in [
        (Architecture::Mmoe, PositionMode::ShallowTower),
        (Architecture::SharedBottom, PositionMode::ShallowTower),
        (Architecture::Mmoe, PositionMode::PlainInput),
    ] {
        let mut config = tiny_config(architecture, mode);
        config.max_epochs = 2;
        let (tr, va) = (synthetic(1_500, 4), synthetic(300, 5));
        let model = model_for(&config, &tr);
        train::train(&model, &tr, &va, &TrainOptions::default()).unwrap();
        let bytes = export::serving_graph(&model, "parity-test").unwrap();

        let proto = watchnext_onnx::graph::proto::ModelProto::decode(bytes.as_slice()).expect("decodes");
        let graph = proto.graph.expect("graph");
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, ["dense", "sparse"], "{architecture:?}/{mode:?}: no position input");

        let rows = va.len;
        let batch = model.batch(&va, 0, rows, None).unwrap();
        let fwd = model.forward(&batch, false).unwrap();
        let want = model.predictions(&fwd.main).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mmoe = architecture == Architecture::Mmoe;
        let (got, gates) = run_ort(&bytes, &va.dense, &va.sparse, rows, mmoe);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(close(*g, *w), "{architecture:?}/{mode:?} prediction {i}: onnx {g} vs trainer {w}");
        }
        if mmoe {
            let want_g = fwd.gates.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, w) in gates.unwrap().iter().zip(&want_g) {
                assert!(close(*g, *w), "gate: onnx {g} vs trainer {w}");
            }
        }
        // Random inputs far from the training data too.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut wild = synthetic(64, 12);
        wild.dense.iter_mut().for_each(|v| *v = rng.random_range(-20.0f32..20.0));
        let batch = model.batch(&wild, 0, 64, None).unwrap();
        let fwd = model.forward(&batch, false).unwrap();
        let want = model.predictions(&fwd.main).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, _) = run_ort(&bytes, &wild.dense, &wild.sparse, 64, mmoe);
        for (g, w) in got.iter().zip(&want) {
            assert!(close(*g, *w), "wild input: onnx {g} vs trainer {w}");
        }
    }
}

#[test]
fn the_int8_graph_runs_integer_products_and_stays_close_to_fp32() {
    for architecture in [Architecture::Mmoe, Architecture::SharedBottom] {
        let mut config = tiny_config(architecture, PositionMode::ShallowTower);
        config.max_epochs = 2;
        let (tr, va) = (synthetic(1_500, 4), synthetic(300, 5));
        let model = model_for(&config, &tr);
        train::train(&model, &tr, &va, &TrainOptions::default()).unwrap();
        let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())
            .expect("ONNX Runtime (run scripts/setup.sh)");
        let calibration = export::calibrate(&runtime, &model, &tr, 1_000).unwrap();
        assert_eq!(calibration.rows, 1_000);
        let layers: Vec<&str> = calibration.ranges.keys().map(String::as_str).collect();
        assert_eq!(layers, ["bottom", "experts.0", "experts.1"], "{architecture:?}");
        let (lo, hi) = calibration.ranges["experts.0"];
        assert!(lo >= 0.0 && hi > 0.0, "a ReLU output: {lo}..{hi}");
        let bottom = calibration.ranges["bottom"];
        assert!(bottom.0 < 0.0 && bottom.1 > 0.0, "standardised inputs: {bottom:?}");

        let int8 = export::serving_graph_int8(&model, "int8-test", &calibration).unwrap();
        let proto = watchnext_onnx::graph::proto::ModelProto::decode(int8.as_slice()).expect("decodes");
        let graph = proto.graph.expect("graph");
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        let mmoe = architecture == Architecture::Mmoe;
        // MMoE: each expert's layers on their own (bias fused); a shared
        // bottom: one chain.
        let chains = if mmoe { config.experts } else { 1 };
        assert_eq!(
            count("MatMulIntegerToFloat"),
            1 + chains * config.expert_layers.len(),
            "{architecture:?}: bottom and every expert layer in integers: {ops:?}"
        );
        assert_eq!(
            count("QuantizeLinear"),
            2 + chains * (config.expert_layers.len() - 1),
            "{architecture:?}: the bottom's output quantised once for every expert: {ops:?}"
        );
        assert_eq!(
            ops.iter().filter(|o| **o == "MatMul").count(),
            2 + 2 * usize::from(architecture == Architecture::Mmoe),
            "{architecture:?}: towers (and gates, mixture) stay fp32: {ops:?}"
        );
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(inputs, ["dense", "sparse"]);
        assert_eq!(outputs, if mmoe { vec!["predictions", "gates"] } else { vec!["predictions"] });
        assert!(proto.metadata_props.iter().any(|p| p.key == "precision" && p.value == "int8"));

        let fp32 = export::serving_graph(&model, "fp32").unwrap();
        let (want, _) = run_ort(&fp32, &va.dense, &va.sparse, va.len, mmoe);
        let (got, _) = run_ort(&int8, &va.dense, &va.sparse, va.len, mmoe);
        assert_eq!(got.len(), want.len());
        // Click probabilities (task 0) within 0.02 (0.005 on average), log1p
        // watch (task 1) within 5% of its spread (1% on average): 8-bit
        // rounding through three layers as narrow as 8 units, not a wrong
        // scale (which is off by the spread itself).
        let spread = want.iter().skip(1).step_by(2).fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        let mean_watch: f32 =
            got.iter().zip(&want).skip(1).step_by(2).map(|(g, w)| (g - w).abs()).sum::<f32>() / va.len as f32;
        let worst_watch = got.iter().zip(&want).skip(1).step_by(2).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
        assert!(
            mean_watch <= 0.01 * spread && worst_watch <= 0.05 * spread,
            "{architecture:?}: log1p watch off by {mean_watch} on average, {worst_watch} at worst (spread {spread})"
        );
        let (mut worst_click, mut mean_click) = (0.0f32, 0.0f32);
        for (g, w) in got.iter().zip(&want).step_by(2) {
            let d = (g - w).abs();
            worst_click = worst_click.max(d);
            mean_click += d / va.len as f32;
        }
        assert!(worst_click < 0.02 && mean_click < 0.005, "{architecture:?}: worst {worst_click}, mean {mean_click}");
        // A graph quantised with a missing range is refused, not guessed.
        let mut partial = calibration.clone();
        partial.ranges.remove("experts.1");
        let err = export::serving_graph_int8(&model, "x", &partial).unwrap_err().to_string();
        assert!(err.contains("experts.1"), "{err}");
    }
}

#[test]
fn the_model_directory_passes_the_contract_check_and_only_for_its_schema() {
    let config = tiny_config(Architecture::Mmoe, PositionMode::ShallowTower);
    let ex = synthetic(200, 6);
    let model = model_for(&config, &ex);
    let bytes = export::serving_graph(&model, "m-1").unwrap();
    let manifest = export::manifest(&model, "m-1", Default::default());
    let dir = tempfile::tempdir().unwrap();
    export::write_model_dir(dir.path(), &bytes, &manifest).unwrap();
    let back = ModelManifest::read(dir.path()).unwrap();
    back.check(&FeatureSchema::new(config.features).unwrap()).unwrap();
    assert_eq!(back.experts, 3);
    assert!(back.tasks[0].debiased && !back.tasks[1].debiased);
    let err = back.check(&FeatureSchema::default()).unwrap_err().to_string();
    assert!(err.contains("feature schema"), "{err}");
    assert!(dir.path().join("model.onnx").metadata().unwrap().len() > 1_000);
}

/// Rows in groups of `size` (one request each) with exactly one click per
/// group, at the row with the largest `dense[0]`.
fn grouped(groups: usize, size: usize, seed: u64) -> Examples {
    let mut ex = synthetic(groups * size, seed);
    for g in 0..groups {
        let rows = g * size..(g + 1) * size;
        let best = rows
            .clone()
            .max_by(|&a, &b| ex.dense[a * DENSE_LEN].total_cmp(&ex.dense[b * DENSE_LEN]))
            .expect("a group has rows");
        for i in rows {
            ex.request[i] = g as u32;
            ex.labels[i * 2] = f32::from(u8::from(i == best));
        }
    }
    ex
}

#[test]
fn the_softmax_click_loss_is_the_mean_cross_entropy_of_each_request() {
    let config = TrainerConfig {
        click_loss: watchnext_trainer::config::ClickLoss::Softmax,
        softmax_bce_weight: 0.0,
        position_mode: PositionMode::Absent,
        gate_dropout: 0.0,
        ..tiny_config(Architecture::Mmoe, PositionMode::Absent)
    };
    let ex = grouped(8, 5, 3);
    let model = model_for(&config, &ex);
    let batch = model.batch(&ex, 0, ex.len, None).unwrap();
    let fwd = model.forward(&batch, false).unwrap();
    let (_, per_task) = model.loss(&fwd, &batch).unwrap();
    // By hand: per group, logsumexp of its click logits minus the clicked one's, averaged.
    let logits = fwd.logits.to_vec2::<f32>().unwrap();
    let mut want = 0.0f64;
    for g in 0..8 {
        let rows = g * 5..(g + 1) * 5;
        let x: Vec<f64> = rows.clone().map(|i| f64::from(logits[i][0])).collect();
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let pos = rows.clone().position(|i| ex.labels[i * 2] > 0.5).unwrap();
        want += lse - x[pos];
    }
    want /= 8.0;
    assert!((f64::from(per_task[0]) - want).abs() < 1e-4, "{} vs {want}", per_task[0]);

    // A batch boundary never cuts a request in two with this loss.
    assert_eq!(train::batch_end(&model, &ex, 0, 7), 10);
    assert_eq!(train::batch_end(&model, &ex, 10, 5), 15);
}

#[test]
fn training_with_the_softmax_loss_learns_to_order_each_request() {
    let config = TrainerConfig {
        click_loss: watchnext_trainer::config::ClickLoss::Softmax,
        max_epochs: 4,
        position_mode: PositionMode::Absent,
        ..tiny_config(Architecture::Mmoe, PositionMode::Absent)
    };
    let (tr, va) = (grouped(600, 5, 4), grouped(200, 5, 5));
    let model = model_for(&config, &tr);
    train::train(&model, &tr, &va, &TrainOptions::default()).unwrap();
    let batch = model.batch(&va, 0, va.len, None).unwrap();
    let logits = model.forward(&batch, false).unwrap().logits.to_vec2::<f32>().unwrap();
    let mut top = 0;
    for g in 0..200 {
        let rows = g * 5..(g + 1) * 5;
        let best = rows.clone().max_by(|&a, &b| logits[a][0].total_cmp(&logits[b][0])).unwrap();
        top += usize::from(va.labels[best * 2] > 0.5);
    }
    // Chance is 1 in 5.
    assert!(top > 120, "the clicked row ranked first in {top} of 200 requests");
}

#[test]
fn ignored_features_have_no_effect_on_the_output() {
    let config = TrainerConfig {
        ignore_features: vec![watchnext_core::features::DENSE[0].to_owned()],
        ..tiny_config(Architecture::Mmoe, PositionMode::Absent)
    };
    let ex = synthetic(64, 6);
    let model = model_for(&config, &ex);
    let mut changed = ex.clone();
    for i in 0..changed.len {
        changed.dense[i * DENSE_LEN] += 100.0;
    }
    let out = |e: &Examples| {
        let b = model.batch(e, 0, e.len, None).unwrap();
        model.forward(&b, false).unwrap().logits.to_vec2::<f32>().unwrap()
    };
    assert_eq!(out(&ex), out(&changed));
    // Without the setting the same change moves the output.
    let plain = model_for(&tiny_config(Architecture::Mmoe, PositionMode::Absent), &ex);
    let out_plain = |e: &Examples| {
        let b = plain.batch(e, 0, e.len, None).unwrap();
        plain.forward(&b, false).unwrap().logits.to_vec2::<f32>().unwrap()
    };
    assert_ne!(out_plain(&ex), out_plain(&changed));
}
