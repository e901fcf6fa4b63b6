//! The combiner: one score per candidate from the ranker's per-task
//! predictions, by weighted multiplication.
//!
//! ```text
//! score = Π_t f_t(ŷ_t) ^ w_t          (computed as exp Σ_t w_t · ln f_t)
//!   binary task:                 f = clamp(p, ε, 1)
//!   binary task, inverted:       f = clamp(1 − p, ε, 1)    (e.g. dismiss: an outcome to avoid)
//!   regression, log1p label:     f = exp(ŷ) = 1 + predicted label   (e.g. 1 + seconds watched)
//!   regression, identity label:  f = max(ŷ, ε)             (e.g. a rating)
//! ε = 1e-6; a weight of 0 leaves the task out, and no weight may exceed
//! [`MAX_WEIGHT`].
//! ```
//! Candidates are ordered by the logarithm, Σ_t w_t · ln f_t
//! ([`log_score`]), never by the product itself: with large weights the
//! product underflows to 0 for every candidate and the order would fall back
//! to the video id.
//! Raising a weight makes the order follow that task more; weights are
//! exponents, so scaling every weight by the same factor leaves the order
//! unchanged. Weights come from `[recommender.combiner]`, fall back to the
//! model manifest's `combiner_weight` for tasks not named there, can be
//! overridden per experiment arm, and can be changed at runtime
//! (`Admin.SetCombinerWeights`).

use std::collections::BTreeMap;

use watchnext_core::model::{TaskKind, TaskSpec};

const EPS: f32 = 1e-6;

/// The largest weight a task may have. Weights are exponents: at 100 a task
/// already decides the order on its own, and larger ones only lose precision.
pub const MAX_WEIGHT: f32 = 100.0;

/// Why a weight cannot be used, or `None` when it can.
pub fn weight_problem(w: f32) -> Option<String> {
    (!w.is_finite() || !(0.0..=MAX_WEIGHT).contains(&w))
        .then(|| format!("is {w}; a task weight must be a number within 0..={MAX_WEIGHT}"))
}

/// How one task enters the product.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub task: String,
    pub weight: f32,
    kind: TermKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TermKind {
    Probability,
    Inverted,
    ExpOfLog1p,
    Positive,
}

/// The terms for a model's tasks: `weights` first, then the manifest's
/// `combiner_weight`; `inverted` names binary tasks that enter as `1 − p`.
pub fn terms(tasks: &[TaskSpec], weights: &BTreeMap<String, f32>, inverted: &[String]) -> Vec<Term> {
    tasks
        .iter()
        .map(|t| {
            let kind = match t.kind {
                TaskKind::Binary if inverted.iter().any(|i| i == &t.name) => TermKind::Inverted,
                TaskKind::Binary => TermKind::Probability,
                TaskKind::Regression if t.transform == "log1p" => TermKind::ExpOfLog1p,
                TaskKind::Regression => TermKind::Positive,
            };
            Term { task: t.name.clone(), weight: weights.get(&t.name).copied().unwrap_or(t.combiner_weight), kind }
        })
        .collect()
}

/// The combined score of one candidate's predictions (in task order).
pub fn score(terms: &[Term], predictions: &[f32]) -> f32 {
    log_score(terms, predictions).exp()
}

/// The logarithm of [`score`]: what candidates are ordered by.
pub fn log_score(terms: &[Term], predictions: &[f32]) -> f32 {
    let mut log = 0.0f32;
    for (term, &y) in terms.iter().zip(predictions) {
        if term.weight == 0.0 {
            continue;
        }
        let ln_f = match term.kind {
            TermKind::Probability => y.clamp(EPS, 1.0).ln(),
            TermKind::Inverted => (1.0 - y).clamp(EPS, 1.0).ln(),
            TermKind::ExpOfLog1p => y.max(0.0),
            TermKind::Positive => y.max(EPS).ln(),
        };
        log += term.weight * ln_f;
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, kind: TaskKind, transform: &str, w: f32) -> TaskSpec {
        TaskSpec { name: name.into(), kind, transform: transform.into(), combiner_weight: w, debiased: false }
    }

    fn tasks() -> Vec<TaskSpec> {
        vec![
            task("click", TaskKind::Binary, "identity", 1.0),
            task("watch", TaskKind::Regression, "log1p", 1.0),
            task("dismiss", TaskKind::Binary, "identity", 1.0),
            task("rating", TaskKind::Regression, "identity", 0.5),
        ]
    }

    #[test]
    fn the_formula_as_documented() {
        let t = terms(&tasks(), &BTreeMap::new(), &["dismiss".into()]);
        let y = [0.5, (1.0f32 + 99.0).ln(), 0.2, 4.0];
        let expected = 0.5f32 * 100.0 * 0.8 * 4.0f32.sqrt();
        assert!((score(&t, &y) - expected).abs() < 1e-3 * expected, "{} vs {expected}", score(&t, &y));
        // Configured weights override the manifest's; a zero weight drops the task.
        let w: BTreeMap<String, f32> = [("watch".to_owned(), 0.0), ("click".to_owned(), 2.0)].into();
        let t = terms(&tasks(), &w, &["dismiss".into()]);
        let expected = 0.25f32 * 0.8 * 2.0;
        assert!((score(&t, &y) - expected).abs() < 1e-4, "{}", score(&t, &y));
    }

    #[test]
    fn weights_outside_the_range_are_refused() {
        for w in [0.0, 1.0, MAX_WEIGHT] {
            assert_eq!(weight_problem(w), None, "{w}");
        }
        for w in [-0.5, MAX_WEIGHT * 1.01, f32::MAX, f32::INFINITY, f32::NAN] {
            assert!(weight_problem(w).is_some_and(|p| p.contains("0..=100")), "{w}");
        }
    }

    #[test]
    fn weights_change_the_order_as_the_formula_says() {
        // a: likely click, short watch; b: less likely click, long watch.
        let a = [0.6, (1.0f32 + 10.0).ln(), 0.1, 3.0];
        let b = [0.3, (1.0f32 + 100.0).ln(), 0.1, 3.0];
        let by = |w: &[(&str, f32)]| {
            let w: BTreeMap<String, f32> = w.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
            let t = terms(&tasks(), &w, &["dismiss".into()]);
            score(&t, &a) > score(&t, &b)
        };
        assert!(!by(&[("click", 1.0), ("watch", 1.0)]), "watch time dominates: 0.6·11 < 0.3·101");
        assert!(by(&[("click", 1.0), ("watch", 0.0)]), "click alone prefers a");
        assert!(by(&[("click", 4.0), ("watch", 0.2)]));
        // Scaling all weights keeps the order.
        assert_eq!(by(&[("click", 2.0), ("watch", 2.0)]), by(&[("click", 1.0), ("watch", 1.0)]));
        // At the largest weight the product underflows to 0 for both, the log keeps the order.
        let w: BTreeMap<String, f32> = [("click".to_owned(), MAX_WEIGHT), ("watch".to_owned(), MAX_WEIGHT)].into();
        let t = terms(&tasks(), &w, &["dismiss".into()]);
        assert!(!score(&t, &a).is_finite() && !score(&t, &b).is_finite(), "the product overflows for both");
        assert!(log_score(&t, &a) < log_score(&t, &b), "the log keeps the order: 0.6·11 < 0.3·101");
        let w: BTreeMap<String, f32> = [("click".to_owned(), MAX_WEIGHT), ("watch".to_owned(), 0.0)].into();
        let t = terms(&tasks(), &w, &["dismiss".into()]);
        assert!(score(&t, &a) < 1e-20 && score(&t, &b) == 0.0, "the product underflows");
        assert!(log_score(&t, &a) > log_score(&t, &b), "click alone decides: 0.6 > 0.3");
        // Inverted: a higher dismiss probability lowers the score.
        let t = terms(&tasks(), &BTreeMap::new(), &["dismiss".into()]);
        let mut worse = a;
        worse[2] = 0.9;
        assert!(score(&t, &worse) < score(&t, &a));
    }

    proptest::proptest! {
        /// For every weight the API accepts, the log orders candidates as
        /// the product does wherever the product is a normal number, and is
        /// always a number itself.
        #[test]
        fn the_log_orders_as_the_product_and_stays_finite(
            weights in proptest::collection::vec(0.0f32..=MAX_WEIGHT, 4),
            a in (0.0f32..=1.0, 0.0f32..12.0, 0.0f32..=1.0, 0.0f32..6.0),
            b in (0.0f32..=1.0, 0.0f32..12.0, 0.0f32..=1.0, 0.0f32..6.0),
        ) {
            let names = ["click", "watch", "dismiss", "rating"];
            let w: BTreeMap<String, f32> = names.iter().zip(&weights).map(|(n, w)| ((*n).to_owned(), *w)).collect();
            let t = terms(&tasks(), &w, &["dismiss".into()]);
            let (a, b) = ([a.0, a.1, a.2, a.3], [b.0, b.1, b.2, b.3]);
            let (la, lb) = (log_score(&t, &a), log_score(&t, &b));
            proptest::prop_assert!(la.is_finite() && lb.is_finite(), "{la} {lb}");
            let (pa, pb) = (score(&t, &a), score(&t, &b));
            if pa.is_normal() && pb.is_normal() && (pa - pb).abs() > 1e-3 * pa.max(pb) {
                proptest::prop_assert_eq!(pa > pb, la > lb, "{} vs {}, logs {} vs {}", pa, pb, la, lb);
            }
        }
    }
}
