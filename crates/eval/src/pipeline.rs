//! Scores of whole-pipeline evaluations (`watchnext eval pipeline`): many
//! ranked lists per held-out case — each generator alone, the merged
//! candidates in fused order, the final list under one or more combiner
//! weightings, baselines — scored side by side on the same cases.
//!
//! Every case has exactly one held-out video, so each metric follows from
//! its rank r in a list (1-based, absent = ∞): HR@K = 𝟙[r ≤ K], NDCG@K =
//! 𝟙[r ≤ K] / log2(r + 1), MRR@K = 𝟙[r ≤ K] / r. Means come with 95%
//! **bootstrap intervals** (cases resampled with replacement, percentile
//! method, seeded), and [`Scores::ratio`] gives the interval of a ratio of
//! two methods' means from the same resamples (paired). **Coverage@K** is
//! the share of the catalogue that appears in some case's top K. With a
//! synthetic world's ground truth, **true NDCG@K** grades a list by the true
//! click probability against the ideal list of the whole catalogue.

use std::collections::HashSet;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use watchnext_core::ids::VideoId;

use crate::metrics::graded_ndcg;

/// A mean with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} [{:.4}, {:.4}]", self.mean, self.low, self.high)
    }
}

/// The scores of one method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodScores {
    pub name: String,
    /// Per K (in `Scores::ks` order).
    pub hit: Vec<Interval>,
    pub ndcg: Vec<Interval>,
    pub mrr: Vec<Interval>,
    /// Share of the catalogue in some case's top K.
    pub coverage: Vec<f64>,
    /// Mean true NDCG@K over the cases with ground truth (synthetic world).
    pub truth_ndcg: Option<Vec<f64>>,
    /// Share of cases with a non-empty list.
    pub answered: f64,
}

/// Which metric a ratio compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Hit,
    Ndcg,
    Mrr,
}

/// Accumulates cases, then scores every method.
#[derive(Debug, Clone)]
pub struct Scorer {
    methods: Vec<String>,
    ks: Vec<usize>,
    /// Per method, per case: the held-out video's rank (1-based).
    ranks: Vec<Vec<Option<u32>>>,
    /// Per method, per K: the videos seen in the top K.
    seen: Vec<Vec<HashSet<VideoId>>>,
    answered: Vec<usize>,
    truth: Vec<Vec<f64>>,
    truth_cases: usize,
}

impl Scorer {
    pub fn new(methods: Vec<String>, ks: Vec<usize>) -> Self {
        let m = methods.len();
        Self {
            seen: vec![vec![HashSet::new(); ks.len()]; m],
            ranks: vec![Vec::new(); m],
            answered: vec![0; m],
            truth: vec![vec![0.0; ks.len()]; m],
            truth_cases: 0,
            methods,
            ks,
        }
    }

    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    pub fn cases(&self) -> usize {
        self.ranks.first().map_or(0, Vec::len)
    }

    /// One case: each method's list (in method order) and, with ground
    /// truth, each list's true gains with the ideal gains of the catalogue.
    ///
    /// # Panics
    /// If `lists` (or `truth`) does not have one entry per method.
    pub fn add(&mut self, held_out: &VideoId, lists: &[&[VideoId]], truth: Option<&[(Vec<f64>, Vec<f64>)]>) {
        assert_eq!(lists.len(), self.methods.len(), "one list per method");
        for (m, list) in lists.iter().enumerate() {
            let rank = list.iter().position(|v| v == held_out).map(|p| p as u32 + 1);
            self.ranks[m].push(rank);
            self.answered[m] += usize::from(!list.is_empty());
            for (j, &k) in self.ks.iter().enumerate() {
                self.seen[m][j].extend(list.iter().take(k).cloned());
            }
        }
        if let Some(truth) = truth {
            assert_eq!(truth.len(), self.methods.len(), "one truth entry per method");
            for (m, (gains, ideal)) in truth.iter().enumerate() {
                for (j, &k) in self.ks.iter().enumerate() {
                    self.truth[m][j] += graded_ndcg(gains, ideal, k);
                }
            }
            self.truth_cases += 1;
        }
    }

    /// Scores every method: means with `resamples` bootstrap resamples
    /// (0 = intervals equal to the mean), coverage against `catalog_size`.
    pub fn finish(self, resamples: usize, seed: u64, catalog_size: usize) -> Scores {
        let n = self.cases();
        let draws = resample_indices(n, resamples, seed);
        let mut methods = Vec::with_capacity(self.methods.len());
        for (m, name) in self.methods.iter().enumerate() {
            let per = |metric: Metric, k: usize| values(&self.ranks[m], metric, k);
            let interval = |metric: Metric, k: usize| bootstrap(&per(metric, k), &draws);
            methods.push(MethodScores {
                name: name.clone(),
                hit: self.ks.iter().map(|&k| interval(Metric::Hit, k)).collect(),
                ndcg: self.ks.iter().map(|&k| interval(Metric::Ndcg, k)).collect(),
                mrr: self.ks.iter().map(|&k| interval(Metric::Mrr, k)).collect(),
                coverage: self.seen[m].iter().map(|s| s.len() as f64 / catalog_size.max(1) as f64).collect(),
                truth_ndcg: (self.truth_cases > 0)
                    .then(|| self.truth[m].iter().map(|t| t / self.truth_cases as f64).collect()),
                answered: self.answered[m] as f64 / n.max(1) as f64,
            });
        }
        Scores { ks: self.ks, cases: n, truth_cases: self.truth_cases, methods, ranks: self.ranks, draws }
    }
}

/// Every method scored on the same cases.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub ks: Vec<usize>,
    pub cases: usize,
    pub truth_cases: usize,
    pub methods: Vec<MethodScores>,
    #[serde(skip)]
    ranks: Vec<Vec<Option<u32>>>,
    #[serde(skip)]
    draws: Vec<Vec<u32>>,
}

impl Scores {
    /// The method named `name`.
    pub fn method(&self, name: &str) -> Option<&MethodScores> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// mean(a) / mean(b) of `metric` at `k` with its paired 95% bootstrap
    /// interval; `None` for an unknown method or K, or a zero denominator.
    pub fn ratio(&self, a: &str, b: &str, metric: Metric, k: usize) -> Option<Interval> {
        let ia = self.methods.iter().position(|m| m.name == a)?;
        let ib = self.methods.iter().position(|m| m.name == b)?;
        self.ks.iter().position(|&x| x == k)?;
        let va = values(&self.ranks[ia], metric, k);
        let vb = values(&self.ranks[ib], metric, k);
        let mean_of = |v: &[f64], idx: Option<&[u32]>| match idx {
            None => v.iter().sum::<f64>() / v.len().max(1) as f64,
            Some(idx) => idx.iter().map(|&i| v[i as usize]).sum::<f64>() / idx.len().max(1) as f64,
        };
        let (ma, mb) = (mean_of(&va, None), mean_of(&vb, None));
        if mb <= 0.0 {
            return None;
        }
        let mut ratios: Vec<f64> = self
            .draws
            .iter()
            .filter_map(|d| {
                let den = mean_of(&vb, Some(d));
                (den > 0.0).then(|| mean_of(&va, Some(d)) / den)
            })
            .collect();
        let mean = ma / mb;
        Some(percentiles(&mut ratios, mean))
    }
}

/// Per-case values of `metric` at `k` from ranks.
fn values(ranks: &[Option<u32>], metric: Metric, k: usize) -> Vec<f64> {
    ranks
        .iter()
        .map(|r| match r {
            Some(r) if (*r as usize) <= k => match metric {
                Metric::Hit => 1.0,
                Metric::Ndcg => 1.0 / (f64::from(*r) + 1.0).log2(),
                Metric::Mrr => 1.0 / f64::from(*r),
            },
            _ => 0.0,
        })
        .collect()
}

fn resample_indices(n: usize, resamples: usize, seed: u64) -> Vec<Vec<u32>> {
    if n == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..resamples).map(|_| (0..n).map(|_| rng.random_range(0..n as u32)).collect()).collect()
}

fn bootstrap(values: &[f64], draws: &[Vec<u32>]) -> Interval {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let mut means: Vec<f64> =
        draws.iter().map(|d| d.iter().map(|&i| values[i as usize]).sum::<f64>() / d.len().max(1) as f64).collect();
    percentiles(&mut means, mean)
}

/// The 2.5% and 97.5% percentiles of `samples` around `mean` (both equal
/// to it without samples).
fn percentiles(samples: &mut [f64], mean: f64) -> Interval {
    if samples.is_empty() {
        return Interval { mean, low: mean, high: mean };
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Interval { mean, low: at(0.025), high: at(0.975) }
}

/// A Markdown table of `scores`: HR, NDCG and MRR at each K with intervals,
/// coverage at the largest K, and true NDCG when there is ground truth.
pub fn markdown_table(scores: &Scores) -> String {
    let mut out = String::from("| method |");
    let ks = &scores.ks;
    for k in ks {
        out.push_str(&format!(" HR@{k} |"));
    }
    for k in ks {
        out.push_str(&format!(" NDCG@{k} |"));
    }
    for k in ks {
        out.push_str(&format!(" MRR@{k} |"));
    }
    let kmax = ks.iter().copied().max().unwrap_or(0);
    out.push_str(&format!(" coverage@{kmax} |"));
    let truth = scores.truth_cases > 0;
    if truth {
        for k in ks {
            out.push_str(&format!(" true NDCG@{k} |"));
        }
    }
    let columns = ks.len() * if truth { 4 } else { 3 } + 2;
    out.push_str(&format!("\n|{}\n", "---|".repeat(columns)));
    let last = ks.iter().position(|&k| k == kmax).unwrap_or(0);
    for m in &scores.methods {
        out.push_str(&format!("| {} |", m.name));
        for v in m.hit.iter().chain(&m.ndcg).chain(&m.mrr) {
            out.push_str(&format!(" {:.4} [{:.4}, {:.4}] |", v.mean, v.low, v.high));
        }
        out.push_str(&format!(" {:.4} |", m.coverage.get(last).copied().unwrap_or(0.0)));
        if truth {
            match &m.truth_ndcg {
                Some(t) => t.iter().for_each(|v| out.push_str(&format!(" {v:.4} |"))),
                None => ks.iter().for_each(|_| out.push_str(" – |")),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str) -> VideoId {
        VideoId::parse("v", id).unwrap()
    }

    #[test]
    fn metrics_follow_the_held_out_rank() {
        let mut s = Scorer::new(vec!["a".into(), "b".into()], vec![1, 2, 10]);
        let (x, y, z) = (v("x"), v("y"), v("z"));
        // Case 1: a ranks x first, b second. Case 2: a misses, b ranks y first.
        s.add(&x, &[&[x.clone(), y.clone()], &[z.clone(), x.clone()]], None);
        s.add(&y, &[std::slice::from_ref(&z), std::slice::from_ref(&y)], None);
        let scores = s.finish(200, 7, 10);
        let a = scores.method("a").unwrap();
        let b = scores.method("b").unwrap();
        assert_eq!(a.hit.iter().map(|i| i.mean).collect::<Vec<_>>(), [0.5, 0.5, 0.5]);
        assert_eq!(b.hit.iter().map(|i| i.mean).collect::<Vec<_>>(), [0.5, 1.0, 1.0]);
        let ndcg_b2 = (1.0 / 3f64.log2() + 1.0) / 2.0;
        assert!((b.ndcg[1].mean - ndcg_b2).abs() < 1e-12);
        assert!((b.mrr[2].mean - 0.75).abs() < 1e-12);
        // Coverage@10: a showed x, y, z; b showed z, x, y → 3 of 10.
        assert!((a.coverage[2] - 0.3).abs() < 1e-12 && (b.coverage[2] - 0.3).abs() < 1e-12);
        // Two cases: a resample's mean is 0, 0.5 or 1.
        assert!(a.hit[0].low >= 0.0 && a.hit[0].high <= 1.0 && a.hit[0].low <= 0.5 && a.hit[0].high >= 0.5);
        let r = scores.ratio("b", "a", Metric::Hit, 2).unwrap();
        assert!((r.mean - 2.0).abs() < 1e-12, "{r}");
        assert!(scores.ratio("a", "nobody", Metric::Hit, 2).is_none());
        assert!(markdown_table(&scores).contains("| b | 0.5000 ["));
    }

    #[test]
    fn intervals_shrink_with_more_cases_and_cover_the_mean() {
        let hit = v("h");
        let miss = v("m");
        let mut small = Scorer::new(vec!["m".into()], vec![1]);
        let mut large = Scorer::new(vec!["m".into()], vec![1]);
        for i in 0..2_000 {
            let list: &[VideoId] = if i % 4 == 0 { std::slice::from_ref(&hit) } else { std::slice::from_ref(&miss) };
            if i < 100 {
                small.add(&hit, &[list], None);
            }
            large.add(&hit, &[list], None);
        }
        let (s, l) = (small.finish(500, 1, 5), large.finish(500, 1, 5));
        let (s, l) = (s.methods[0].hit[0], l.methods[0].hit[0]);
        assert!((l.mean - 0.25).abs() < 1e-12 && (s.mean - 0.25).abs() < 1e-12);
        assert!(l.high - l.low < s.high - s.low, "{l} vs {s}");
        // 2,000 Bernoulli(0.25) cases: a 95% interval about ±0.019 wide.
        assert!(l.low > 0.22 && l.high < 0.28, "{l}");
        assert!(s.low < 0.25 && s.high > 0.25);
    }
}
