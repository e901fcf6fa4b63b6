"""Does ONNX Runtime's CPU provider run BF16 matrix products on this machine?

Issue 13, item 2. One layer of the ranker's size ([500, 256] x [256, 1024],
the first expert layer of the default MMoE) three ways, one intra-op thread,
no spinning, median of 200 runs:
  1. fp32 MatMul;
  2. the same with inputs and weights cast to bfloat16 (what a BF16 graph
     written by our exporter would hold);
  3. the fp32 graph with MLAS's bfloat16 fast-math session option.

Usage (after benches/python/setup.sh):
    .venv/bin/python benches/python/bf16_cpu_check.py
"""

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROWS, IN, OUT = 500, 256, 1024


def layer_graph(bf16: bool) -> bytes:
    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array((rng.standard_normal((IN, OUT)) * 0.05).astype(np.float32), "w")
    if bf16:
        nodes = [
            helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.BFLOAT16),
            helper.make_node("Cast", ["w"], ["w16"], to=TensorProto.BFLOAT16),
            helper.make_node("MatMul", ["x16", "w16"], ["y16"]),
            helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
        ]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", OUT])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def options(extra: dict) -> ort.SessionOptions:
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in extra.items():
        o.add_session_config_entry(key, value)
    return o


def median_ms(session, x) -> float:
    session.run(None, {"x": x})
    times = []
    for _ in range(200):
        started = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def main() -> None:
    x = np.random.default_rng(8).standard_normal((ROWS, IN)).astype(np.float32)
    print(f"onnxruntime {ort.__version__}, one thread, [{ROWS}, {IN}] x [{IN}, {OUT}]")
    cases = [
        ("fp32 MatMul", False, {}),
        ("bfloat16 MatMul", True, {}),
        ("fp32 MatMul, mlas.enable_gemm_fastmath_arm64_bfloat16=1", False,
         {"mlas.enable_gemm_fastmath_arm64_bfloat16": "1"}),
    ]
    for name, bf16, extra in cases:
        try:
            session = ort.InferenceSession(layer_graph(bf16), options(extra), providers=["CPUExecutionProvider"])
        except Exception as err:  # the provider refuses the graph: that is the finding
            print(f"{name}: not runnable: {str(err).splitlines()[0][:200]}")
            continue
        print(f"{name}: {median_ms(session, x):.3f} ms")


if __name__ == "__main__":
    main()
