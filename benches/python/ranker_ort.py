"""The ranking graph run by Python's onnxruntime, for the side-by-side figure
of `cargo bench -p watchnext-benches --bench ranker` (which writes the model
and the feature rows and calls this script).

Usage: ranker_ort.py DIR N [N ...]
DIR holds models/bench/model.onnx, dense.f32 and sparse.i64 (row-major,
as wide as the graph's `dense` and `sparse` inputs). Prints one line per N: the median time of one run over N rows,
with one intra-op thread and no spinning, as the Rust side runs it.
"""

import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort


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
        for _ in range(5):
            session.run(None, feeds)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"{ort.__version__} /{n}: {times[len(times) // 2] * 1e3:.3f} ms median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
