//! Proves the ONNX Runtime library loads and runs a graph this test builds,
//! with a dynamic batch dimension, through a session pool used from several
//! threads. Needs the library (`scripts/setup.sh`); the test command sets it up.

use std::sync::Arc;

use ort::value::Tensor;
use watchnext_core::config::{ExecutionProviderKind, OnnxConfig};
use watchnext_onnx::{
    GraphBuilder, OnnxRuntime, SessionOptions, SessionPool,
    graph::{Dim, ElemType},
};

const IN: usize = 3;
const OUT: usize = 2;

/// y = sigmoid(relu(x · W + b)), the shape of one tower layer.
fn tiny_graph(w: &[f32], b: &[f32]) -> Vec<u8> {
    let mut g = GraphBuilder::new("tiny");
    g.input("x", ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(IN as i64)]);
    let w = g.init_f32("w", &[IN as i64, OUT as i64], w);
    let b = g.init_f32("b", &[OUT as i64], b);
    let mm = g.op("MatMul", &["x", &w], &[], "mm");
    let add = g.op("Add", &[&mm, &b], &[], "add");
    let relu = g.op("Relu", &[&add], &[], "relu");
    g.op_named("Sigmoid", &[&relu], &[], &["y"]);
    g.output("y", ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(OUT as i64)]);
    g.metadata("purpose", "test");
    g.to_bytes()
}

fn reference(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let rows = x.len() / IN;
    let mut y = Vec::with_capacity(rows * OUT);
    for r in 0..rows {
        for o in 0..OUT {
            let z: f32 = (0..IN).map(|i| x[r * IN + i] * w[i * OUT + o]).sum::<f32>() + b[o];
            y.push(1.0 / (1.0 + (-z.max(0.0)).exp()));
        }
    }
    y
}

#[test]
fn runs_a_graph_built_here_and_matches_the_reference() {
    let runtime = OnnxRuntime::init(&OnnxConfig::default()).expect("ONNX Runtime library (run scripts/setup.sh)");
    let w = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1];
    let b = [0.1, -0.2];
    let bytes = tiny_graph(&w, &b);
    let pool = Arc::new(SessionPool::new(&runtime, "tiny", &bytes, &SessionOptions::default(), 2).expect("loads"));
    assert_eq!(pool.input_names(), ["x"]);
    assert_eq!(pool.output_names(), ["y"]);
    assert_eq!(pool.provider(), ExecutionProviderKind::Cpu);

    let handles: Vec<_> = (1..=4usize)
        .map(|rows| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let x: Vec<f32> = (0..rows * IN).map(|i| (i as f32 * 0.37).sin()).collect();
                let got = pool.run(|session| {
                    let input = Tensor::from_array(([rows, IN], x.clone())).expect("tensor");
                    let outputs = session.run(ort::inputs!["x" => input]).expect("runs");
                    let (shape, data) = outputs["y"].try_extract_tensor::<f32>().expect("f32 output");
                    assert_eq!(&**shape, &[rows as i64, OUT as i64]);
                    data.to_vec()
                });
                let want = reference(&x, &w, &b);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{got:?} vs {want:?}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
}

#[test]
fn a_gpu_provider_that_is_unavailable_falls_back_to_cpu() {
    let runtime = OnnxRuntime::init(&OnnxConfig::default()).expect("ONNX Runtime library (run scripts/setup.sh)");
    let bytes = tiny_graph(&[0.0; IN * OUT], &[0.0; OUT]);
    let opts = SessionOptions { provider: ExecutionProviderKind::Cuda, ..SessionOptions::default() };
    let loaded = runtime.load("tiny", &bytes, &opts).expect("falls back instead of failing");
    assert_eq!(loaded.provider, ExecutionProviderKind::Cpu);
}

#[test]
fn a_corrupt_model_is_a_clear_error() {
    let runtime = OnnxRuntime::init(&OnnxConfig::default()).expect("ONNX Runtime library (run scripts/setup.sh)");
    let err = runtime.load("garbage", b"not an onnx model", &SessionOptions::default()).unwrap_err();
    assert!(err.to_string().contains("cannot load ONNX model garbage"), "{err}");
}
