//! The context generator's configuration: the trending counters (buckets,
//! decay, event weights, list sizes, how often they are published), the
//! fresh-upload list, and the blend. Every field has a default;
//! [`ContextConfig::validate`] names the field at fault.

use serde::{Deserialize, Serialize};

use crate::error::ContextError;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Configuration of [`crate::ContextGenerator`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Width of a time-of-day bucket in hours; must divide 24.
    pub hour_bucket_hours: u32,
    /// UTC offset assumed for feedback events (they carry none), minutes;
    /// requests use their own `utc_offset_minutes`.
    pub event_utc_offset_minutes: i32,
    /// Half-life of the trending counts, ms.
    pub trending_half_life_ms: i64,
    /// Count a watch event adds (≥ 0).
    pub watch_weight: f32,
    /// Count a click event adds (≥ 0).
    pub click_weight: f32,
    /// Videos a counter tracks; it prunes back to this many when it holds
    /// twice as many (the lowest counts are forgotten).
    pub tracked_per_list: usize,
    /// Length of each published trending list (per device and bucket, and global).
    pub top_list_len: usize,
    /// Least wall-clock time between two publications of the trending
    /// lists, ms; 0 = publish after every `observe` call.
    /// [`crate::ContextGenerator::publish`] publishes at once.
    pub publish_interval_ms: u64,
    /// Oldest upload counted as fresh, ms before the request time.
    pub fresh_max_age_ms: i64,
    /// Newest uploads read per query-video topic.
    pub fresh_per_topic: usize,
    /// Rank constant `κ` of the reciprocal-rank blend (> 0).
    pub rrf_k: f32,
    /// Blend weight of the device × time-of-day trending list (≥ 0).
    pub device_hour_weight: f32,
    /// Blend weight of the global trending list (≥ 0).
    pub global_weight: f32,
    /// Blend weight of the fresh uploads on the query topics (≥ 0).
    pub fresh_weight: f32,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            hour_bucket_hours: 2,
            event_utc_offset_minutes: 0,
            trending_half_life_ms: DAY_MS,
            watch_weight: 1.0,
            click_weight: 0.5,
            tracked_per_list: 2_000,
            top_list_len: 300,
            publish_interval_ms: 250,
            fresh_max_age_ms: 7 * DAY_MS,
            fresh_per_topic: 100,
            rrf_k: 20.0,
            device_hour_weight: 1.0,
            global_weight: 0.5,
            fresh_weight: 0.7,
        }
    }
}

fn check(ok: bool, field: &'static str, problem: impl FnOnce() -> String) -> Result<(), ContextError> {
    if ok { Ok(()) } else { Err(ContextError::config(field, problem())) }
}

fn non_negative(field: &'static str, v: f32) -> Result<(), ContextError> {
    check(v.is_finite() && v >= 0.0, field, || format!("is {v}; must be a finite number >= 0"))
}

impl ContextConfig {
    /// Checks what the types alone cannot; the error names the field.
    pub fn validate(&self) -> Result<(), ContextError> {
        let b = self.hour_bucket_hours;
        check((1..=24).contains(&b) && 24 % b == 0, "hour_bucket_hours", || {
            format!("is {b}; must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24)")
        })?;
        check(self.event_utc_offset_minutes.abs() <= 14 * 60, "event_utc_offset_minutes", || {
            format!("is {}; must be within -840..=840", self.event_utc_offset_minutes)
        })?;
        check(self.trending_half_life_ms > 0, "trending_half_life_ms", || {
            format!("is {}; must be > 0 milliseconds", self.trending_half_life_ms)
        })?;
        non_negative("watch_weight", self.watch_weight)?;
        non_negative("click_weight", self.click_weight)?;
        check(self.tracked_per_list >= 1, "tracked_per_list", || "is 0; must be at least 1".into())?;
        check(self.top_list_len >= 1 && self.top_list_len <= self.tracked_per_list, "top_list_len", || {
            format!("is {}; must be within 1..=tracked_per_list ({})", self.top_list_len, self.tracked_per_list)
        })?;
        check(self.fresh_max_age_ms > 0, "fresh_max_age_ms", || {
            format!("is {}; must be > 0 milliseconds", self.fresh_max_age_ms)
        })?;
        check(self.rrf_k.is_finite() && self.rrf_k > 0.0, "rrf_k", || {
            format!("is {}; must be a finite number > 0", self.rrf_k)
        })?;
        non_negative("device_hour_weight", self.device_hour_weight)?;
        non_negative("global_weight", self.global_weight)?;
        non_negative("fresh_weight", self.fresh_weight)?;
        Ok(())
    }

    /// Time-of-day buckets per day.
    pub fn buckets(&self) -> usize {
        (24 / self.hour_bucket_hours.clamp(1, 24)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_json() {
        let config = ContextConfig::default();
        config.validate().unwrap();
        assert_eq!(config.buckets(), 12);
        let back: ContextConfig = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        let partial: ContextConfig = serde_json::from_str(r#"{"hour_bucket_hours": 3}"#).unwrap();
        assert_eq!(partial.buckets(), 8);
        assert!(serde_json::from_str::<ContextConfig>(r#"{"hour_bucket": 3}"#).is_err(), "typos are rejected");
    }

    #[test]
    fn bad_values_name_the_field() {
        type Mutation = fn(&mut ContextConfig);
        let cases: [(&str, Mutation); 6] = [
            ("hour_bucket_hours", |c| c.hour_bucket_hours = 5),
            ("hour_bucket_hours", |c| c.hour_bucket_hours = 0),
            ("trending_half_life_ms", |c| c.trending_half_life_ms = -1),
            ("top_list_len", |c| c.top_list_len = c.tracked_per_list + 1),
            ("rrf_k", |c| c.rrf_k = 0.0),
            ("fresh_weight", |c| c.fresh_weight = f32::INFINITY),
        ];
        for (field, mutate) in cases {
            let mut config = ContextConfig::default();
            mutate(&mut config);
            let err = config.validate().unwrap_err();
            let ContextError::Config { field: got, .. } = &err;
            assert_eq!(*got, field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }
}
