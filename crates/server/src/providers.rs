//! `watchnext check-providers`: is this machine ready to rank on its GPU?
//!
//! Loads one ranking model (the newest under `<data>/models`, or `--model
//! DIR`) once per execution provider asked for (`cpu`, `cuda`, `tensorrt`),
//! each exactly as the ranker loads it (`[onnx]` settings, the provider
//! swapped), then for each candidate count runs the same feature rows
//! through every provider:
//!
//! - **time**: the median of `--runs` runs of one request's rows (after a
//!   warm-up run, which on a GPU builds the kernels or engines);
//! - **agreement**: the largest absolute difference of every prediction
//!   from the CPU provider's on the same rows, against `--tolerance`.
//!
//! A provider that cannot be had (the binary built without its feature,
//! the ONNX Runtime library without it, no driver or device) is reported
//! with the reason; the ranker would fall back to CPU there, which this
//! check counts as a failure. The exit status is non-zero on any failure,
//! so `scripts/gpu-check.sh` can gate a GPU node's readiness on it.
//!
//! The rows are deterministic: dense features drawn in [-1, 1) and sparse
//! ids over the schema's bucket ranges (seeded): what a run costs and how
//! providers agree do not depend on the rows being realistic.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context as _, bail};
use watchnext_core::{
    Config,
    config::ExecutionProviderKind,
    datadir::DataDir,
    features::{DENSE_LEN, FeatureSchema},
};
use watchnext_ranker::{LoadedModel, Ranker, RankerSettings};

/// `watchnext check-providers`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckProvidersArgs {
    /// The model directory; default the newest under <data>/models.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Execution providers to check, CPU first (the reference).
    #[arg(long, value_delimiter = ',', default_value = "cpu,cuda,tensorrt")]
    pub providers: Vec<String>,
    /// Candidates per request.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    pub candidates: Vec<usize>,
    /// Timed runs per provider and candidate count.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Largest allowed difference of a prediction from the CPU provider's.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f32,
}

/// One provider's figures at one candidate count.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRow {
    pub provider: String,
    pub candidates: usize,
    pub median_ms: f64,
    /// Largest |prediction − CPU's| (0 for the CPU itself).
    pub max_diff: f32,
}

fn parse_provider(name: &str) -> anyhow::Result<ExecutionProviderKind> {
    serde_json::from_value(serde_json::Value::String(name.trim().to_owned()))
        .map_err(|_| anyhow::anyhow!("unknown execution provider `{name}`; expected cpu, cuda or tensorrt"))
}

/// Deterministic rows for `n` candidates over `schema`'s buckets.
pub fn rows(schema: &FeatureSchema, n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    // SplitMix64: small, seeded, no extra dependency.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let dense = (0..n * DENSE_LEN).map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
    let buckets = schema.sparse_buckets();
    let sparse = (0..n).flat_map(|_| buckets.map(|b| (next() % u64::from(b.max(1))) as i64)).collect::<Vec<_>>();
    (dense, sparse)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `model` on `rows`: the median of `runs` runs after a warm-up;
/// returns it with the predictions of the last run.
fn time_runs(
    model: &LoadedModel,
    dense: &[f32],
    sparse: &[i64],
    n: usize,
    runs: usize,
) -> anyhow::Result<(f64, Vec<f32>)> {
    let (mut predictions, _) = model.run(dense, sparse, n)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        predictions = model.run(dense, sparse, n)?.0;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(times), predictions))
}

/// Runs the check; the rows of the table and the failures, if any.
pub fn check(config: &Config, args: &CheckProvidersArgs) -> anyhow::Result<(Vec<ProviderRow>, Vec<String>)> {
    let kinds = args.providers.iter().map(|p| parse_provider(p)).collect::<anyhow::Result<Vec<_>>>()?;
    if kinds.first() != Some(&ExecutionProviderKind::Cpu) {
        bail!("--providers must start with cpu: it is the reference the others are compared with");
    }
    if args.candidates.is_empty() || args.candidates.contains(&0) {
        bail!("--candidates must list counts of at least 1");
    }
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let root = DataDir::new(&config.data.dir).models();
            watchnext_ranker::newest_model_dir(&root)
                .map(|(dir, _)| dir)
                .with_context(|| format!("no model under {}: run `watchnext train` or pass --model", root.display()))?
        }
    };
    let trainer = crate::training::trainer_config(config)?;
    let schema = FeatureSchema::new(trainer.features)
        .map_err(|e| anyhow::anyhow!("configuration key `trainer.features`: {e}"))?;
    let runtime = watchnext_onnx::OnnxRuntime::init(&config.onnx).context("loading ONNX Runtime")?;
    let settings = RankerSettings { sessions: 1, warmup_rows: 8, keep_versions: 2 };
    let mut models = Vec::new();
    let mut failures = Vec::new();
    for kind in kinds {
        let mut session = watchnext_onnx::SessionOptions::from(&config.onnx);
        session.provider = kind;
        let ranker = Arc::new(Ranker::new(settings.clone(), schema.clone(), runtime.clone(), session)?);
        let report =
            ranker.load_dir(&dir).with_context(|| format!("loading {} with {}", dir.display(), kind.name()))?;
        if report.provider != kind.name() {
            failures.push(format!(
                "{}: unavailable, the model ran on {} instead (the log above says why)",
                kind.name(),
                report.provider
            ));
            continue;
        }
        let model = ranker.active().context("the model did not become active")?;
        models.push((kind, model));
    }
    let mut table = Vec::new();
    for &n in &args.candidates {
        let (dense, sparse) = rows(&schema, n, 7);
        let mut reference: Option<Vec<f32>> = None;
        for (kind, model) in &models {
            let (median_ms, predictions) = time_runs(model, &dense, &sparse, n, args.runs)?;
            let max_diff = match &reference {
                None => {
                    reference = Some(predictions);
                    0.0
                }
                Some(cpu) => cpu.iter().zip(&predictions).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max),
            };
            if max_diff.is_nan() || max_diff > args.tolerance {
                failures.push(format!(
                    "{} at {n} candidates: predictions differ from the CPU's by up to {max_diff} (tolerance {})",
                    kind.name(),
                    args.tolerance
                ));
            }
            table.push(ProviderRow { provider: kind.name().to_owned(), candidates: n, median_ms, max_diff });
        }
    }
    Ok((table, failures))
}

/// `watchnext check-providers`: prints the table; fails on any failure.
pub fn command(config: &Config, args: &CheckProvidersArgs) -> anyhow::Result<()> {
    let (table, failures) = check(config, args)?;
    println!("| provider | candidates | median ms per request | × CPU speed | largest difference from CPU |");
    println!("|---|---:|---:|---:|---:|");
    for row in &table {
        let cpu = table.iter().find(|r| r.candidates == row.candidates && r.provider == "cpu");
        let speed = cpu.map_or(f64::NAN, |c| c.median_ms / row.median_ms);
        println!(
            "| {} | {} | {:.3} | {:.2} | {:.2e} |",
            row.provider, row.candidates, row.median_ms, speed, row.max_diff
        );
    }
    if failures.is_empty() {
        println!("check-providers: every provider asked for ran the model and agreed with the CPU");
        return Ok(());
    }
    for f in &failures {
        eprintln!("check-providers: {f}");
    }
    bail!("{} of the checks failed", failures.len())
}

#[cfg(test)]
mod tests {
    use watchnext_core::features::SPARSE_LEN;

    use super::*;

    #[test]
    fn rows_are_deterministic_and_inside_the_buckets() {
        let schema = FeatureSchema::new(Default::default()).unwrap();
        let (d1, s1) = rows(&schema, 50, 7);
        let (d2, s2) = rows(&schema, 50, 7);
        assert_eq!((d1.len(), s1.len()), (50 * DENSE_LEN, 50 * SPARSE_LEN));
        assert_eq!((&d1, &s1), (&d2, &s2));
        assert!(d1.iter().all(|x| (-1.0..1.0).contains(x)));
        let buckets = schema.sparse_buckets();
        assert!(s1.chunks(SPARSE_LEN).all(|r| r.iter().zip(buckets).all(|(&v, b)| (0..i64::from(b)).contains(&v))));
        assert_ne!(rows(&schema, 50, 8).0, d1);
    }

    #[test]
    fn providers_parse_and_cpu_must_come_first() {
        assert_eq!(parse_provider("cuda").unwrap(), ExecutionProviderKind::Cuda);
        assert!(parse_provider("tpu").unwrap_err().to_string().contains("cpu, cuda or tensorrt"));
        let args = CheckProvidersArgs {
            model: None,
            providers: vec!["cuda".into()],
            candidates: vec![10],
            runs: 1,
            tolerance: 1e-3,
        };
        let err = check(&Config::default(), &args).unwrap_err().to_string();
        assert!(err.contains("must start with cpu"), "{err}");
    }
}
