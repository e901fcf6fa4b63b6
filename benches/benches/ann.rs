//! Approximate nearest neighbours, side by side with `hnswlib`, in one run.
//!
//! ```sh
//! scripts/setup.sh                 # creates .venv (once)
//! benches/python/setup.sh          # hnswlib + numpy into .venv (once; compiles hnswlib)
//! cargo bench -p watchnext-benches --bench ann
//! ```
//!
//! It generates 100k clustered, normalised 64-d vectors and 2,000 queries
//! (seeded: 100 Gaussian clusters around random unit centres, noise σ = 0.1
//! per component, then normalised; queries drawn the same way), writes them
//! with the exact top-10 of every query (found by [`ExactIndex`]) under
//! `target/ann-bench/`, then measures each index in a fresh child process (so
//! that one index's freed memory does not hide the next one's): build time
//! (M = 16, ef_construction = 200, insertion on all cores), resident memory
//! the build added, and for each ef single-thread queries/s (median of three
//! passes) and recall@10 against the exact top-10. `hnswlib` runs on the same
//! files through `benches/python/hnswlib_bench.py` (skipped, with a message,
//! when `.venv` has no hnswlib). The table reports, per index, the fastest ef
//! reaching recall@10 ≥ 0.95 and ≥ 0.98, with ratios to `hnswlib`.
//!
//! Environment: `ANN_N` (vectors, 100000), `ANN_QUERIES` (2000), `ANN_THREADS`
//! (build threads, all cores), `ANN_ONLY` (comma-separated index names to run,
//! e.g. `flat_hnsw,hnswlib`).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use watchnext_sequence::ann::{AnnIndex, AnnParams, Embeddings, ExactIndex, FlatHnsw, HnswRsDistance, HnswRsIndex};

const DIM: usize = 64;
const CLUSTERS: usize = 100;
const NOISE: f32 = 0.1;
const K: usize = 10;
const M: usize = 16;
const EF_CONSTRUCTION: usize = 200;
const EFS: &[usize] = &[10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512];
const PASSES: usize = 3;
const SEED: u64 = 20_190_916;

/// The Rust indexes measured, by the name used in `ANN_ONLY` and the table.
const RUST_INDEXES: &[&str] = &["hnsw_rs default", "hnsw_rs tuned", "flat_hnsw"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ann-bench")
}

fn threads() -> usize {
    env_usize("ANN_THREADS", std::thread::available_parallelism().map_or(1, usize::from))
}

fn main() {
    if let Ok(name) = std::env::var("ANN_CHILD") {
        child(&name);
        return;
    }
    parent();
}

// ---------------------------------------------------------------- data

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` base vectors and `q` queries around the same centres.
fn generate(n: usize, q: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS)
        .map(|_| {
            let mut c: Vec<f32> = (0..DIM).map(|_| normal(&mut rng)).collect();
            normalise(&mut c);
            c
        })
        .collect();
    let mut draw = |count: usize| {
        let mut out = Vec::with_capacity(count * DIM);
        for _ in 0..count {
            let c = &centres[(rng.next_u64() % CLUSTERS as u64) as usize];
            let mut v: Vec<f32> = c.iter().map(|x| x + NOISE * normal(&mut rng)).collect();
            normalise(&mut v);
            out.extend(v);
        }
        out
    };
    let base = draw(n);
    let queries = draw(q);
    (base, queries)
}

fn write_f32(path: &Path, data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn read_u32(path: &Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time of this thread, from the scheduler (nanoseconds). Queries/s
/// are computed from it, not from the wall clock: on a machine shared with
/// other work a descheduled thread's wait is not the index's cost.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

/// CPU time of this process, all threads, user + system (Linux reports it
/// in 1/100 s).
fn process_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are the 14th and 15th fields of the line.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------- child

/// Builds one index from the files, measures it, prints `RESULT {json}`.
fn child(name: &str) {
    let dir = bench_dir();
    let base = read_f32(&dir.join("base.f32"));
    let queries = read_f32(&dir.join("queries.f32"));
    let truth = read_u32(&dir.join("gt.u32"));
    let n = base.len() / DIM;
    let embeddings = Embeddings::from_flat(DIM, (0..n as u32).collect(), base).expect("valid vectors");
    let params = AnnParams { m: M, ef_construction: EF_CONSTRUCTION, seed: SEED, threads: threads() };

    let rss0 = rss_bytes();
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    let index: Box<dyn AnnIndex> = match name {
        "hnsw_rs default" => {
            Box::new(HnswRsIndex::build(&embeddings, &params, HnswRsDistance::DistDot).expect("build"))
        }
        "hnsw_rs tuned" => Box::new(HnswRsIndex::build(&embeddings, &params, HnswRsDistance::Kernel).expect("build")),
        "flat_hnsw" => Box::new(FlatHnsw::build(&embeddings, &params).expect("build")),
        "exact" => Box::new(ExactIndex::build(&embeddings)),
        other => panic!("unknown index {other}"),
    };
    let build_s = start.elapsed().as_secs_f64();
    let build_cpu_s = process_cpu_s() - cpu0;
    let rss_mb = rss_bytes().saturating_sub(rss0) as f64 / f64::from(1 << 20);
    drop(embeddings);

    let queries: Vec<&[f32]> = queries.chunks_exact(DIM).collect();
    let efs: &[usize] = if name == "exact" { &[0] } else { EFS };
    let mut out = Vec::with_capacity(K);
    let mut curve = Vec::new();
    for &ef in efs {
        let mut times = Vec::with_capacity(PASSES);
        let mut walls = Vec::with_capacity(PASSES);
        let mut hits = 0usize;
        for pass in 0..PASSES {
            let start = Instant::now();
            let cpu = thread_cpu_s();
            for (qi, q) in queries.iter().enumerate() {
                index.search_into(q, K, ef, &mut out).expect("search");
                if pass == 0 {
                    let want: HashSet<u32> = truth[qi * K..(qi + 1) * K].iter().copied().collect();
                    hits += out.iter().filter(|(id, _)| want.contains(id)).count();
                }
            }
            times.push(thread_cpu_s() - cpu);
            walls.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        walls.sort_by(f64::total_cmp);
        let qps = queries.len() as f64 / times[PASSES / 2];
        let wall_qps = queries.len() as f64 / walls[PASSES / 2];
        let recall = hits as f64 / (queries.len() * K) as f64;
        curve.push(json!({ "ef": ef, "qps": qps, "wall_qps": wall_qps, "recall": recall }));
        // Past 0.999 a wider search only costs time.
        if recall > 0.999 {
            break;
        }
    }
    let result = json!({
        "name": name,
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "rss_mb": rss_mb,
        "est_mb": index.memory_bytes() as f64 / f64::from(1 << 20),
        "curve": curve,
    });
    println!("RESULT {result}");
}

// ---------------------------------------------------------------- parent

fn parent() {
    let n = env_usize("ANN_N", 100_000);
    let nq = env_usize("ANN_QUERIES", 2_000);
    let only: Option<Vec<String>> =
        std::env::var("ANN_ONLY").ok().map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| name.starts_with(x.as_str())));
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!(
        "ANN benchmark: {n} clustered normalised {DIM}-d vectors ({CLUSTERS} clusters), {nq} queries, inner \
         product, M={M}, ef_construction={EF_CONSTRUCTION}, {} build threads, single-thread search; load average \
         {}",
        threads(),
        load_average()
    );

    let (base, queries) = generate(n, nq);
    write_f32(&dir.join("base.f32"), &base);
    write_f32(&dir.join("queries.f32"), &queries);
    let embeddings = Embeddings::from_flat(DIM, (0..n as u32).collect(), base).expect("valid vectors");
    let exact = ExactIndex::build(&embeddings);
    let start = Instant::now();
    let truth: Vec<u32> = std::thread::scope(|s| {
        let workers = threads().max(1);
        let chunk = nq.div_ceil(workers);
        let handles: Vec<_> = queries
            .chunks(chunk * DIM)
            .map(|qs| {
                let exact = &exact;
                s.spawn(move || {
                    qs.chunks_exact(DIM)
                        .flat_map(|q| exact.search(q, K, 0).expect("search").into_iter().map(|(id, _)| id))
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("exact search")).collect()
    });
    let exact_qps = nq as f64 / start.elapsed().as_secs_f64() / threads().max(1) as f64;
    let bytes: Vec<u8> = truth.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(dir.join("gt.u32"), bytes).expect("write ground truth");
    drop((exact, embeddings));
    println!("exact ground truth: ~{exact_qps:.0} queries/s per thread; files in {}", dir.display());

    let mut results: Vec<Value> = Vec::new();
    if wanted("hnswlib") {
        match run_hnswlib(&dir) {
            Ok(r) => results.push(r),
            Err(why) => println!("hnswlib skipped: {why}"),
        }
    }
    let exe = std::env::current_exe().expect("own path");
    for &name in RUST_INDEXES {
        if !wanted(name) {
            continue;
        }
        print!("measuring {name} … ");
        std::io::stdout().flush().ok();
        let output = Command::new(&exe).env("ANN_CHILD", name).output().expect("run child");
        match parse_result(&output.stdout) {
            Some(r) => {
                println!("done");
                results.push(r);
            }
            None => println!("failed:\n{}", String::from_utf8_lossy(&output.stderr)),
        }
    }
    report(&results);
    println!("load average at the end: {}", load_average());
}

fn parse_result(stdout: &[u8]) -> Option<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
}

fn run_hnswlib(dir: &Path) -> Result<Value, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return Err("no .venv/bin/python (run scripts/setup.sh, then benches/python/setup.sh)".into());
    }
    let efs: Vec<String> = EFS.iter().map(usize::to_string).collect();
    print!("measuring hnswlib … ");
    std::io::stdout().flush().ok();
    let output = Command::new(python)
        .arg(root.join("benches/python/hnswlib_bench.py"))
        .args(["--dir", &dir.display().to_string()])
        .args(["--dim", &DIM.to_string(), "--m", &M.to_string(), "--efc", &EF_CONSTRUCTION.to_string()])
        .args(["--efs", &efs.join(","), "--k", &K.to_string(), "--passes", &PASSES.to_string()])
        .args(["--threads", &threads().to_string()])
        .output()
        .map_err(|e| format!("cannot run python: {e}"))?;
    if output.status.code() == Some(3) {
        return Err("hnswlib is not installed in .venv (run benches/python/setup.sh)".into());
    }
    let result = parse_result(&output.stdout)
        .ok_or_else(|| format!("hnswlib_bench.py failed:\n{}", String::from_utf8_lossy(&output.stderr)))?;
    println!("done");
    Ok(result)
}

/// The fastest point of a curve at or above `recall`: (ef, qps, recall).
fn at_recall(r: &Value, recall: f64) -> Option<(u64, f64, f64)> {
    r["curve"]
        .as_array()?
        .iter()
        .filter_map(|p| Some((p["ef"].as_u64()?, p["qps"].as_f64()?, p["recall"].as_f64()?)))
        .filter(|p| p.2 >= recall)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn report(results: &[Value]) {
    let reference = results.iter().find(|r| r["name"].as_str().is_some_and(|n| n.starts_with("hnswlib")));
    let ratio = |ours: f64, theirs: Option<f64>, lower_is_better: bool| match theirs {
        Some(t) if t > 0.0 && ours > 0.0 => {
            let slower = if lower_is_better { ours / t } else { t / ours };
            format!("{slower:.2}×")
        }
        _ => "—".into(),
    };
    println!();
    println!("Curves (ef: queries/s on one thread by its CPU time [by the wall clock], recall@10):");
    for r in results {
        let points: Vec<String> = r["curve"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|p| {
                        format!(
                            "{}: {:.0}/s [{:.0}] {:.3}",
                            p["ef"],
                            p["qps"].as_f64().unwrap_or(0.0),
                            p["wall_qps"].as_f64().unwrap_or(0.0),
                            p["recall"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!("  {:<16} {}", r["name"].as_str().unwrap_or("?"), points.join(" | "));
    }
    println!();
    println!(
        "Ratios are slowdowns against hnswlib (build time ours/theirs, queries/s theirs/ours; target ≤ 1.5×). \
         Queries/s are by thread CPU time.\n"
    );
    println!(
        "| index | build s (wall) | build CPU s | build × (wall / CPU) | RSS MB | est. MB | QPS @ recall ≥ 0.95 (ef, recall) | × \
         | QPS @ recall ≥ 0.98 (ef, recall) | × |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ref_build = reference.and_then(|r| r["build_s"].as_f64());
    let ref_build_cpu = reference.and_then(|r| r["build_cpu_s"].as_f64());
    for r in results {
        let build = r["build_s"].as_f64().unwrap_or(0.0);
        let build_cpu = r["build_cpu_s"].as_f64().unwrap_or(0.0);
        let mut row = format!(
            "| {} | {:.1} | {:.1} | {} / {} | {:.0} | {:.0} |",
            r["name"].as_str().unwrap_or("?"),
            build,
            build_cpu,
            ratio(build, ref_build, true),
            ratio(build_cpu, ref_build_cpu, true),
            r["rss_mb"].as_f64().unwrap_or(0.0),
            r["est_mb"].as_f64().unwrap_or(0.0)
        );
        for target in [0.95, 0.98] {
            let theirs = reference.and_then(|x| at_recall(x, target)).map(|p| p.1);
            match at_recall(r, target) {
                Some((ef, qps, recall)) => {
                    row += &format!(" {qps:.0} ({ef}, {recall:.3}) | {} |", ratio(qps, theirs, false));
                }
                None => row += " not reached | — |",
            }
        }
        println!("{row}");
    }
}
