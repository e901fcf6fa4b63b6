//! The score of a candidate and its static part, the prior that orders the
//! posting lists (formulas in the crate documentation).

use rayon::prelude::*;

use crate::{config::TopicConfig, index::CatalogIndex, stats::VideoStats};

/// Scores videos at one request time against one statistics array.
#[derive(Debug)]
pub(crate) struct Scorer<'a> {
    config: &'a TopicConfig,
    stats: &'a VideoStats,
    upload_ms: &'a [i64],
    /// The request time, ms.
    now_ms: i64,
    /// `2^(−(now − T_ref)/h)`: turns a mass into a decayed count at `now`.
    decay: f64,
}

impl<'a> Scorer<'a> {
    pub(crate) fn new(config: &'a TopicConfig, index: &'a CatalogIndex, stats: &'a VideoStats, now_ms: i64) -> Self {
        Self { config, stats, upload_ms: &index.upload_ms, now_ms, decay: stats.decay_to(now_ms) }
    }

    /// The decayed watch count `n̂_v(now)`.
    pub(crate) fn popularity(&self, v: usize) -> f64 {
        self.stats.mass(v) * self.decay
    }

    /// The static prior `(1 + w_pop·ln(1 + n̂_v))·q̂_v^w_q`.
    pub(crate) fn prior(&self, v: usize) -> f32 {
        let c = self.config;
        let pop = 1.0 + c.popularity_weight * (self.popularity(v).ln_1p() as f32);
        let q = self.stats.quality(v, c.quality_prior_mean, c.quality_prior_strength);
        let q = if c.quality_weight == 1.0 { q } else { q.powf(c.quality_weight) };
        pop * q
    }

    /// The freshness `2^(−age/h_f)` of an upload at `upload_ms` (0 when
    /// unknown), or `None` when it is after the request time and such videos
    /// are left out.
    pub(crate) fn freshness(&self, upload_ms: i64) -> Option<f32> {
        if upload_ms <= 0 {
            return Some(0.0);
        }
        let age = self.now_ms - upload_ms;
        if age < 0 {
            return if self.config.exclude_future_uploads { None } else { Some(1.0) };
        }
        let half_lives = age as f64 / self.config.freshness_half_life_ms as f64;
        // Past 64 half-lives the boost is below 1e-19: skip the exp2.
        Some(if half_lives > 64.0 { 0.0 } else { (-half_lives).exp2() as f32 })
    }

    /// `overlap·prior·(1 + w_f·fresh)` for a video uploaded at `upload_ms`,
    /// or `None` for a video left out.
    pub(crate) fn combine(&self, overlap: f32, prior: f32, upload_ms: i64) -> Option<f32> {
        let fresh = self.freshness(upload_ms)?;
        Some(overlap * prior * (1.0 + self.config.freshness_weight * fresh))
    }

    /// The full score with the live prior.
    pub(crate) fn score(&self, v: usize, overlap: f32) -> Option<f32> {
        self.combine(overlap, self.prior(v), self.upload_ms.get(v).copied().unwrap_or(0))
    }
}

/// The prior of every video of `index` at `now_ms` (in parallel).
pub(crate) fn priors(config: &TopicConfig, index: &CatalogIndex, stats: &VideoStats, now_ms: i64) -> Vec<f32> {
    let scorer = Scorer::new(config, index, stats, now_ms);
    (0..index.len()).into_par_iter().map(|v| scorer.prior(v)).collect()
}
