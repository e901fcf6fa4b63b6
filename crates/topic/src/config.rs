//! The topic generator's configuration: how the request's topic profile is
//! formed, how much of the index a request may read, and the knobs of the
//! online estimators and of the score (formulas in the crate documentation).
//! Every field has a default; [`TopicConfig::validate`] names the field at
//! fault.

use serde::{Deserialize, Serialize};

use crate::error::TopicError;

/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Configuration of [`crate::TopicGenerator`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Weight `w_query` of each topic of the query video in the profile.
    pub query_topic_weight: f32,
    /// Total weight `w_hist` of the history's topics in the profile: a topic
    /// present in every history video read gets all of it.
    pub history_weight: f32,
    /// Recency decay `ρ` per history entry (the most recent weighs 1, the
    /// one before `ρ`, ...), in `(0, 1]`.
    pub history_recency_decay: f32,
    /// Most recent history entries whose topics enter the profile (every
    /// history entry is excluded from the answer regardless).
    pub max_history: usize,
    /// Most profile topics a request reads (the heaviest ones).
    pub max_topics: usize,
    /// Posting-list entries a request reads in all, split over the profile
    /// topics in proportion to their weight.
    pub scan_budget: usize,
    /// Least entries read per profile topic, whatever its weight.
    pub min_scan_per_topic: usize,
    /// Share of each topic's entries read from its freshness-ordered list
    /// (the rest from its prior-ordered list), in `[0, 1]`.
    pub fresh_scan_share: f32,
    /// The first pass keeps `rescore_factor·max` videos for exact rescoring
    /// with the live statistics and the full topic overlap (≥ 0; 0 = answer
    /// from the first pass alone).
    pub rescore_factor: f32,
    /// Half-life of the decayed watch counts behind popularity, ms.
    pub popularity_half_life_ms: i64,
    /// Weight `w_pop` of `ln(1 + n̂)` in the score (≥ 0).
    pub popularity_weight: f32,
    /// Exponent `w_q` of the quality estimate `q̂` in the score (≥ 0).
    pub quality_weight: f32,
    /// Prior mean `m` of the quality estimate, in `[0, 1]`.
    pub quality_prior_mean: f32,
    /// Prior strength `k` of the quality estimate, in pseudo-observations (> 0).
    pub quality_prior_strength: f32,
    /// Observations a like counts for (value 1).
    pub like_weight: f32,
    /// Observations a dismissal counts for (value 0).
    pub dismiss_weight: f32,
    /// Half-life of the freshness boost, ms since upload.
    pub freshness_half_life_ms: i64,
    /// Weight `w_f` of the freshness boost (≥ 0).
    pub freshness_weight: f32,
    /// Leave out videos whose `upload_ms` is after the request time.
    pub exclude_future_uploads: bool,
    /// Re-sort the posting lists by the current prior after this much event
    /// time has been observed since the last sort, on a background thread;
    /// 0 = only when [`crate::TopicGenerator::refresh_prior`] is called.
    pub prior_refresh_ms: i64,
    /// Run the due re-sorts on a background thread (serving); false: only in
    /// [`Generator::sync`](watchnext_core::generator::Generator::sync), on
    /// the caller's thread, so that a replay of a log sees the same order at
    /// the same moments on every run.
    pub background_refresh: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            query_topic_weight: 1.0,
            history_weight: 0.6,
            history_recency_decay: 0.85,
            max_history: 50,
            max_topics: 8,
            scan_budget: 3_000,
            min_scan_per_topic: 64,
            fresh_scan_share: 0.2,
            rescore_factor: 2.0,
            popularity_half_life_ms: 3 * DAY_MS,
            popularity_weight: 0.5,
            quality_weight: 1.0,
            quality_prior_mean: 0.5,
            quality_prior_strength: 5.0,
            like_weight: 1.0,
            dismiss_weight: 2.0,
            freshness_half_life_ms: 7 * DAY_MS,
            freshness_weight: 1.0,
            exclude_future_uploads: true,
            prior_refresh_ms: 600_000,
            background_refresh: true,
        }
    }
}

fn check(ok: bool, field: &'static str, problem: impl FnOnce() -> String) -> Result<(), TopicError> {
    if ok { Ok(()) } else { Err(TopicError::config(field, problem())) }
}

fn non_negative(field: &'static str, v: f32) -> Result<(), TopicError> {
    check(v.is_finite() && v >= 0.0, field, || format!("is {v}; must be a finite number >= 0"))
}

fn unit(field: &'static str, v: f32) -> Result<(), TopicError> {
    check((0.0..=1.0).contains(&v), field, || format!("is {v}; must be within 0..=1"))
}

fn positive_ms(field: &'static str, v: i64) -> Result<(), TopicError> {
    check(v > 0, field, || format!("is {v}; must be > 0 milliseconds"))
}

impl TopicConfig {
    /// Checks what the types alone cannot; the error names the field.
    pub fn validate(&self) -> Result<(), TopicError> {
        non_negative("query_topic_weight", self.query_topic_weight)?;
        non_negative("history_weight", self.history_weight)?;
        check(self.history_recency_decay > 0.0 && self.history_recency_decay <= 1.0, "history_recency_decay", || {
            format!("is {}; must be within (0, 1]", self.history_recency_decay)
        })?;
        check(self.max_topics >= 1, "max_topics", || "is 0; must be at least 1".into())?;
        check(self.scan_budget >= 1, "scan_budget", || "is 0; must be at least 1".into())?;
        check(self.scan_budget <= 1_000_000, "scan_budget", || {
            format!("is {}; at most 1000000 (a request must stay fast)", self.scan_budget)
        })?;
        check(self.min_scan_per_topic <= self.scan_budget, "min_scan_per_topic", || {
            format!("is {}; must not exceed scan_budget ({})", self.min_scan_per_topic, self.scan_budget)
        })?;
        unit("fresh_scan_share", self.fresh_scan_share)?;
        check(
            self.rescore_factor.is_finite() && (self.rescore_factor == 0.0 || self.rescore_factor >= 1.0),
            "rescore_factor",
            || format!("is {}; must be 0 (off) or a finite number >= 1", self.rescore_factor),
        )?;
        positive_ms("popularity_half_life_ms", self.popularity_half_life_ms)?;
        non_negative("popularity_weight", self.popularity_weight)?;
        non_negative("quality_weight", self.quality_weight)?;
        unit("quality_prior_mean", self.quality_prior_mean)?;
        check(
            self.quality_prior_strength.is_finite() && self.quality_prior_strength > 0.0,
            "quality_prior_strength",
            || format!("is {}; must be a finite number > 0", self.quality_prior_strength),
        )?;
        non_negative("like_weight", self.like_weight)?;
        non_negative("dismiss_weight", self.dismiss_weight)?;
        positive_ms("freshness_half_life_ms", self.freshness_half_life_ms)?;
        non_negative("freshness_weight", self.freshness_weight)?;
        check(self.prior_refresh_ms >= 0, "prior_refresh_ms", || {
            format!("is {}; must be >= 0 (0 = manual refresh only)", self.prior_refresh_ms)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_json() {
        let config = TopicConfig::default();
        config.validate().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        let back: TopicConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let partial: TopicConfig = serde_json::from_str(r#"{"scan_budget": 10}"#).unwrap();
        assert_eq!(partial.scan_budget, 10);
        assert_eq!(partial.max_topics, config.max_topics);
        assert!(serde_json::from_str::<TopicConfig>(r#"{"scan_bugdet": 10}"#).is_err(), "typos are rejected");
    }

    #[test]
    fn bad_values_name_the_field() {
        type Mutation = fn(&mut TopicConfig);
        let cases: [(&str, Mutation); 7] = [
            ("history_recency_decay", |c| c.history_recency_decay = 0.0),
            ("max_topics", |c| c.max_topics = 0),
            ("min_scan_per_topic", |c| c.min_scan_per_topic = c.scan_budget + 1),
            ("fresh_scan_share", |c| c.fresh_scan_share = 1.5),
            ("popularity_half_life_ms", |c| c.popularity_half_life_ms = 0),
            ("quality_prior_strength", |c| c.quality_prior_strength = f32::NAN),
            ("freshness_weight", |c| c.freshness_weight = -1.0),
        ];
        for (field, mutate) in cases {
            let mut config = TopicConfig::default();
            mutate(&mut config);
            let err = config.validate().unwrap_err();
            let TopicError::Config { field: got, .. } = &err;
            assert_eq!(*got, field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }
}
