//! The recommender's settings: `[recommender.fanout]`,
//! `[recommender.combiner]` and `[[recommender.arms]]`. Every field has a
//! default; validation names the key at fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fan-out, deadlines and diversity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Candidates asked of each generator.
    pub per_generator: usize,
    /// Longest a generator may take, ms (capped by the request's own
    /// deadline: each generator gets at most 40% of what is left).
    pub generator_timeout_ms: u64,
    /// Longest the ranker may take, ms (capped by what is left of the
    /// request's deadline).
    pub ranker_timeout_ms: u64,
    /// The deadline of a request that carries none (`grpc-timeout`), ms.
    pub default_deadline_ms: u64,
    /// At most this many items sharing a primary topic in the returned list
    /// (0 = no cap); a list too short otherwise is filled from the rest.
    pub max_per_topic: usize,
    /// Recent watches used when a request carries no history.
    pub history_len: usize,
    /// Wait until the impressions are durable before answering (adds the
    /// log's group-commit latency; off: they are appended right after).
    pub durable_impressions: bool,
    /// Threads of the process's CPU pool, which runs in-process generators
    /// and the ranker (`crate::cpu`); 0 = one per core.
    pub cpu_threads: usize,
    /// Jobs that may wait for a CPU pool thread; one more is refused at
    /// once (the request answers degraded, or RESOURCE_EXHAUSTED).
    pub cpu_queue: usize,
    /// Longest a job may expect to wait for a CPU pool thread, ms: a job
    /// that finds more queued work than that (or than its call's own
    /// deadline) is refused at once — under overload a request answers
    /// degraded within about this much of its normal time instead of
    /// queueing up to `ranker_timeout_ms`.
    pub cpu_max_queue_wait_ms: u64,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            per_generator: 200,
            generator_timeout_ms: 50,
            ranker_timeout_ms: 250,
            default_deadline_ms: 500,
            max_per_topic: 0,
            history_len: 50,
            durable_impressions: false,
            cpu_threads: 0,
            cpu_queue: 1_024,
            cpu_max_queue_wait_ms: 25,
        }
    }
}

/// The combiner's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CombinerConfig {
    /// Exponent per task; tasks not named use the model manifest's
    /// `combiner_weight`.
    pub weights: BTreeMap<String, f32>,
    /// Binary tasks that enter as `1 − p` (outcomes to avoid).
    pub inverted_tasks: Vec<String>,
}

impl Default for CombinerConfig {
    fn default() -> Self {
        Self { weights: BTreeMap::new(), inverted_tasks: vec!["dismiss".into()] }
    }
}

/// One experiment arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    pub name: String,
    /// Relative share of users (> 0).
    #[serde(default = "one")]
    pub share: f64,
    /// The ranking model version this arm is served with ("" = the active one).
    #[serde(default)]
    pub model_version: String,
    /// Task weights overriding the defaults for this arm.
    #[serde(default)]
    pub weights: BTreeMap<String, f32>,
}

fn one() -> f64 {
    1.0
}

/// A bad setting, with its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `recommender.{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.into() }
}

/// Checks that every weight is within `0..=MAX_WEIGHT`.
pub fn check_weights(key: &str, weights: &BTreeMap<String, f32>) -> Result<(), ConfigError> {
    for (task, w) in weights {
        if let Some(problem) = crate::combiner::weight_problem(*w) {
            return Err(bad(format!("{key}.{task}"), problem));
        }
    }
    Ok(())
}

/// The three sections, parsed and checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    pub fanout: FanoutConfig,
    pub combiner: CombinerConfig,
    pub arms: Vec<ArmConfig>,
}

impl Settings {
    /// Parses the `serde_json` forms the core config holds.
    pub fn from_values(
        fanout: &serde_json::Value,
        combiner: &serde_json::Value,
        arms: &serde_json::Value,
    ) -> Result<Self, ConfigError> {
        // An absent or empty section means the defaults.
        let value = |v: &serde_json::Value, empty: serde_json::Value| {
            if v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty) { empty } else { v.clone() }
        };
        let object = || serde_json::Value::Object(serde_json::Map::new());
        let fanout: FanoutConfig =
            serde_json::from_value(value(fanout, object())).map_err(|e| bad("fanout", e.to_string()))?;
        let combiner: CombinerConfig =
            serde_json::from_value(value(combiner, object())).map_err(|e| bad("combiner", e.to_string()))?;
        let arms: Vec<ArmConfig> = serde_json::from_value(value(arms, serde_json::Value::Array(Vec::new())))
            .map_err(|e| bad("arms", e.to_string()))?;
        let s = Self { fanout, combiner, arms };
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.fanout;
        if f.per_generator == 0 {
            return Err(bad("fanout.per_generator", "must be at least 1"));
        }
        if f.cpu_threads > 1_024 {
            return Err(bad("fanout.cpu_threads", "must be at most 1024 (0 = one per core)"));
        }
        if !(1..=1_000_000).contains(&f.cpu_queue) {
            return Err(bad("fanout.cpu_queue", "must be between 1 and 1000000"));
        }
        for (key, v) in [
            ("fanout.generator_timeout_ms", f.generator_timeout_ms),
            ("fanout.ranker_timeout_ms", f.ranker_timeout_ms),
            ("fanout.default_deadline_ms", f.default_deadline_ms),
            ("fanout.cpu_max_queue_wait_ms", f.cpu_max_queue_wait_ms),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1 ms"));
            }
        }
        check_weights("combiner.weights", &self.combiner.weights)?;
        let mut names = std::collections::HashSet::new();
        for (i, arm) in self.arms.iter().enumerate() {
            if arm.name.is_empty() {
                return Err(bad(format!("arms[{i}].name"), "must not be empty"));
            }
            if !names.insert(arm.name.as_str()) {
                return Err(bad(format!("arms[{i}].name"), format!("`{}` is used twice", arm.name)));
            }
            if !(arm.share.is_finite() && arm.share > 0.0) {
                return Err(bad(format!("arms[{i}].share"), "must be a positive number"));
            }
            check_weights(&format!("arms[{i}].weights"), &arm.weights)?;
        }
        Ok(())
    }
}
