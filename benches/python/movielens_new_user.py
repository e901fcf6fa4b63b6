"""The whole pipeline on MovieLens, tried as a new user would: with the built
binary, over gRPC, the user's last rating held out.

1. Each user's last rating (by time, then movie id: the order the importer
   writes) is removed from ratings.csv; the rest goes to a scratch copy of the
   data set, which `watchnext import movielens` reads.
2. `watchnext train-sequence`, `watchnext train`, then `watchnext serve` on a
   loopback port.
3. For every user: `Recommend` with the user's last remaining movie as the
   query, the history the server keeps from its own log, 100 results and
   `context.request_time_ms` = the time of the held-out rating; the user's
   rated movies are removed client-side; where does the held-out movie land?

Prints HR@10, NDCG@10 and HR@100 with 95% bootstrap intervals. With
`--eval-report` (the `report.json` of `watchnext eval pipeline` on the same
data) it also prints the final list's HR@10 interval there, and exits 1 when
this run's HR@10 lies outside it.

Usage (after `scripts/setup.sh` and `cargo build --release -p watchnext-server`):
    .venv/bin/python benches/python/movielens_new_user.py \\
        --movielens ../shared/data/ml-latest-small [--eval-report REPORT.json]
"""

import argparse
import csv
import json
import math
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

import grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The stubs come from the example client's generator (one copy of that code).
sys.path.insert(0, str(ROOT / "integration-tests" / "python"))
from example_client import generate_stubs  # noqa: E402


def hold_out(source: pathlib.Path, target: pathlib.Path):
    """Copies the data set without each user's last rating; returns the
    held-out (movie, time ms) and the remaining ratings per user in time order."""
    target.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and f.name != "ratings.csv":
            shutil.copy(f, target / f.name)
    with open(source / "ratings.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [r for r in reader]
    per_user = {}
    for r in rows:
        per_user.setdefault(r[0], []).append((int(r[3]), int(r[1]), r))
    held, kept = {}, {}
    with open(target / "ratings.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for user, ratings in per_user.items():
            ratings.sort(key=lambda x: (x[0], x[1]))
            if len(ratings) < 2:
                continue
            ts, movie, _ = ratings[-1]
            held[user] = (str(movie), ts * 1000)
            kept[user] = [str(m) for _, m, _ in ratings[:-1]]
        for r in rows:
            if r[0] in held and held[r[0]] == (r[1], int(r[3]) * 1000):
                continue
            writer.writerow(r)
    return held, kept


def run(binary: str, data: pathlib.Path, *args: str) -> None:
    cmd = [binary, "--data-dir", str(data), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def serve(binary: str, data: pathlib.Path, log: pathlib.Path) -> tuple[subprocess.Popen, str]:
    out = open(log, "w")
    proc = subprocess.Popen(
        [binary, "--data-dir", str(data), "--listen", "127.0.0.1:0", "--metrics-listen", "", "serve"],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see {log}")
        for line in open(log):
            if line.startswith("watchnext listening grpc="):
                return proc, line.split("grpc=")[1].split()[0]
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start in 300 s; see {log}")


def interval(values, seed=7, rounds=1000):
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return sum(values) / n, means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", default=str(ROOT.parent / "shared/data/ml-latest-small"))
    parser.add_argument("--watchnext", default=str(ROOT / "target/release/watchnext"))
    parser.add_argument("--eval-report", help="report.json of `watchnext eval pipeline` on the same data")
    parser.add_argument("--work", help="keep the data folder here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(args.work or tmp)
        (work / "stubs").mkdir(parents=True, exist_ok=True)
        generate_stubs(str(work / "stubs"))
        from watchnext.v1 import recommender_pb2, recommender_pb2_grpc, common_pb2

        held, kept = hold_out(pathlib.Path(args.movielens), work / "ratings-held-out")
        print(f"{len(held)} users, each without their last rating", flush=True)
        data = work / "data"
        run(args.watchnext, data, "import", "movielens", str(work / "ratings-held-out"))
        run(args.watchnext, data, "train-sequence")
        run(args.watchnext, data, "train")
        proc, addr = serve(args.watchnext, data, work / "serve.log")
        try:
            channel = grpc.insecure_channel(addr)
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            hits10, ndcg10, hits100, failed = [], [], [], 0
            for user, (movie, at_ms) in sorted(held.items(), key=lambda kv: int(kv[0])):
                rated = set(kept[user])
                request = recommender_pb2.RecommendRequest(
                    user_id=user,
                    query_video_id=kept[user][-1],
                    num_results=100,
                    context=common_pb2.RequestContext(request_time_ms=at_ms),
                )
                try:
                    response = stub.Recommend(request, timeout=30)
                except grpc.RpcError as err:
                    failed += 1
                    print(f"user {user}: {err.code().name}: {err.details()}", file=sys.stderr)
                    ranked = []
                else:
                    ranked = [i.video_id for i in response.items if i.video_id not in rated]
                rank = ranked.index(movie) if movie in ranked else None
                hits10.append(1.0 if rank is not None and rank < 10 else 0.0)
                hits100.append(1.0 if rank is not None else 0.0)
                ndcg10.append(1.0 / math.log2(rank + 2) if rank is not None and rank < 10 else 0.0)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

        print(f"\n{len(held)} users, {failed} failed Recommend calls")
        for name, values in [("HR@10", hits10), ("NDCG@10", ndcg10), ("HR@100 (after filtering)", hits100)]:
            mean, lo, hi = interval(values)
            print(f"final Recommend list {name}: {mean:.4f} [{lo:.4f}, {hi:.4f}]")
        if args.eval_report:
            report = json.load(open(args.eval_report))
            row = find_final(report)
            if row is None:
                raise SystemExit(f"{args.eval_report}: no final-list HR@10 under leave-last-out")
            value, lo, hi = row
            mine = sum(hits10) / len(hits10)
            inside = lo <= mine <= hi
            print(f"eval pipeline's final list HR@10: {value:.4f} [{lo:.4f}, {hi:.4f}]: this run "
                  f"{'inside' if inside else 'OUTSIDE'} it")
            return 0 if inside and failed == 0 else 1
        return 0 if failed == 0 else 1


def find_final(report):
    """(mean, low, high) of the final list's HR@10 under leave-last-out."""
    for protocol in report:
        if protocol.get("protocol") != "leave-last-out":
            continue
        scores = protocol["scores"]
        k = scores["ks"].index(10)
        for method in scores["methods"]:
            if method["name"] == "final list":
                hit = method["hit"][k]
                return hit["mean"], hit["low"], hit["high"]
    return None


if __name__ == "__main__":
    sys.exit(main())
