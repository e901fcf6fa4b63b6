#!/usr/bin/env python3
"""The hnswlib side of the side-by-side ANN benchmark.

Driven by `cargo bench -p watchnext-benches --bench ann`, which writes the
vectors, queries and exact ground truth (little-endian f32 / u32 files) and
runs this script on them with the same parameters it gives the Rust indexes;
it prints one line, `RESULT {json}`, that the Rust side reads into its table.

Build: `add_items` on `--threads` threads (as the Rust indexes). Search: one
`knn_query` call per ef over all queries with `num_threads=1`, so the loop over
queries runs in C++ on this thread (no per-query Python overhead), timed
`--passes` times in thread CPU time (as the Rust side); the median counts.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

try:
    import hnswlib
except ImportError:
    print("hnswlib is not installed: run benches/python/setup.sh", file=sys.stderr)
    sys.exit(3)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--efs", default="10,20,40,80")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()

    base = np.fromfile(os.path.join(args.dir, "base.f32"), dtype="<f4").reshape(-1, args.dim)
    queries = np.fromfile(os.path.join(args.dir, "queries.f32"), dtype="<f4").reshape(-1, args.dim)
    truth = np.fromfile(os.path.join(args.dir, "gt.u32"), dtype="<u4").reshape(-1, args.k)
    n = base.shape[0]

    rss0 = rss_bytes()
    cpu0 = time.process_time()
    start = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=args.dim)
    index.init_index(max_elements=n, ef_construction=args.efc, M=args.m, random_seed=100)
    index.add_items(base, np.arange(n), num_threads=args.threads)
    build_s = time.perf_counter() - start
    build_cpu_s = time.process_time() - cpu0
    rss1 = rss_bytes()

    curve = []
    for ef in (int(x) for x in args.efs.split(",")):
        index.set_ef(ef)
        times = []
        walls = []
        labels = None
        for _ in range(args.passes):
            t = time.perf_counter()
            c = time.thread_time()
            labels, _ = index.knn_query(queries, k=args.k, num_threads=1)
            times.append(time.thread_time() - c)
            walls.append(time.perf_counter() - t)
        hits = sum(len(set(row.tolist()) & set(want.tolist())) for row, want in zip(labels, truth))
        curve.append({
            "ef": ef,
            "qps": len(queries) / statistics.median(times),
            "wall_qps": len(queries) / statistics.median(walls),
            "recall": hits / (len(queries) * args.k),
        })

    print("RESULT " + json.dumps({
        "name": f"hnswlib {getattr(hnswlib, '__version__', '0.8.0')}",
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "rss_mb": (rss1 - rss0) / 2**20,
        "est_mb": n * (args.dim * 4 + (2 * args.m + 1) * 4 + 8) / 2**20,
        "curve": curve,
    }))


if __name__ == "__main__":
    main()
