"""The ranking graph run by Python's onnxruntime, for the side-by-side figure
of `cargo bench -p watchnext-benches --bench ranker` (which writes the model
and the feature rows and calls this script).

Usage: ranker_ort.py DIR N [N ...]
DIR holds models/bench/model.onnx, dense.f32 and sparse.i64 (row-major,
as wide as the graph's `dense` and `sparse` inputs). Prints one line per N: the median time of one run over N rows,
with one intra-op thread and no spinning, as the Rust side runs it.

Then, for the largest N, every matrix product of the graph with a constant
weight (each layer's `MatMul`) alone: a one-node graph with that weight,
run on random rows of the shape it sees in the model, one line each —
`gemm NAME MULTIPLY_ADDS MS` — so the bench can say how close ONNX
Runtime's own kernels come to the machine's peak on these shapes.
"""

import pathlib
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    sizes = [int(n) for n in sys.argv[2:]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(root / "models" / "bench" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    width = {i.name: i.shape[1] for i in session.get_inputs()}
    dense = np.fromfile(root / "dense.f32", dtype="<f4").reshape(-1, width["dense"])
    sparse = np.fromfile(root / "sparse.i64", dtype="<i8").reshape(-1, width["sparse"])
    for n in sizes:
        feeds = {"dense": np.ascontiguousarray(dense[:n]), "sparse": np.ascontiguousarray(sparse[:n])}
        print(f"{ort.__version__} /{n}: {median_ms(session, feeds):.3f} ms median")
    gemms_alone(root / "models" / "bench" / "model.onnx", options, max(sizes))
    return 0


def median_ms(session: ort.InferenceSession, feeds: dict) -> float:
    for _ in range(5):
        session.run(None, feeds)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def gemms_alone(path: pathlib.Path, options: ort.SessionOptions, rows: int) -> None:
    model = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    rng = np.random.default_rng(7)
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        # [in, out] sees [rows, in]; a batched [E, in, out] sees [E, rows, in].
        x_shape = [rows, w.shape[0]] if w.ndim == 2 else [w.shape[0], rows, w.shape[1]]
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "gemm",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w")],
        )
        one = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        one.ir_version = model.ir_version
        session = ort.InferenceSession(one.SerializeToString(), options, providers=["CPUExecutionProvider"])
        x = rng.standard_normal(x_shape).astype(np.float32)
        macs = int(np.prod(x_shape)) * int(w.shape[-1])
        print(f"gemm {node.input[1]} {macs} {median_ms(session, {'x': x}):.4f}")


if __name__ == "__main__":
    sys.exit(main())
