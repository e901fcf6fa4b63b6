//! Ranking and classification metrics.

use std::{collections::HashSet, hash::Hash};

/// Area under the ROC curve: the probability that a random positive scores
/// above a random negative (ties count half). `None` without both classes.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean squared error; `None` when empty.
pub fn mse(predictions: &[f32], targets: &[f32]) -> Option<f64> {
    if predictions.is_empty() || predictions.len() != targets.len() {
        return None;
    }
    let sum: f64 = predictions.iter().zip(targets).map(|(p, t)| f64::from(p - t).powi(2)).sum();
    Some(sum / predictions.len() as f64)
}

/// Fraction of `relevant` found in the first `k` of `ranked`.
pub fn recall_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked.iter().take(k).filter(|v| relevant.contains(v)).count();
    found as f64 / relevant.len() as f64
}

/// 1 when any relevant item is in the first `k`, else 0.
pub fn hit_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    if ranked.iter().take(k).any(|v| relevant.contains(v)) { 1.0 } else { 0.0 }
}

/// NDCG@K with binary relevance: DCG = Σ 1/log2(rank+1) over relevant hits.
pub fn ndcg_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    let gains: Vec<f64> = ranked.iter().take(k).map(|v| if relevant.contains(v) { 1.0 } else { 0.0 }).collect();
    let ideal = vec![1.0; relevant.len().min(k)];
    graded_ndcg(&gains, &ideal, k)
}

/// DCG@K of gains in list order, `Σ g_i / log2(i + 2)`.
pub fn dcg_at_k(gains: &[f64], k: usize) -> f64 {
    gains.iter().take(k).enumerate().map(|(i, g)| g / ((i + 2) as f64).log2()).sum()
}

/// NDCG@K with graded gains: DCG of the list over DCG of `ideal` (the best
/// possible gains, any order: they are sorted here). 0 when the ideal is 0.
pub fn graded_ndcg(gains: &[f64], ideal: &[f64], k: usize) -> f64 {
    let mut best = ideal.to_vec();
    best.sort_by(|a, b| b.total_cmp(a));
    let ideal_dcg = dcg_at_k(&best, k);
    if ideal_dcg <= 0.0 { 0.0 } else { dcg_at_k(gains, k) / ideal_dcg }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_scores() {
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auc(&[0.5; 4], &labels), Some(0.5), "ties count half");
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &labels), Some(0.75));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn ranking_metrics_by_hand() {
        let ranked = ["a", "b", "c", "d"];
        let relevant: HashSet<_> = ["c", "z"].into_iter().collect();
        assert_eq!(recall_at_k(&ranked, &relevant, 2), 0.0);
        assert_eq!(recall_at_k(&ranked, &relevant, 3), 0.5);
        assert_eq!(hit_at_k(&ranked, &relevant, 3), 1.0);
        // One hit at rank 3: DCG = 1/log2(4) = 0.5; ideal (2 relevant) = 1 + 1/log2(3).
        let expected = 0.5 / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at_k(&ranked, &relevant, 4) - expected).abs() < 1e-12);
        assert!((graded_ndcg(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0], 3) - 1.0).abs() < 1e-12);
        assert!(graded_ndcg(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], 3) < 1.0);
        assert_eq!(mse(&[1.0, 3.0], &[2.0, 3.0]), Some(0.5));
    }
}
