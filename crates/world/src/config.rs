//! The world's configuration: every parameter of the model in the crate
//! documentation, with defaults, presets and validation.
//!
//! [`WorldConfig`] is plain JSON (serde), every field optional (missing ones
//! take the [`WorldConfig::default`] preset's value) and unknown fields
//! rejected. A data folder stores just this file ([`WORLD_CONFIG_FILE`]):
//! [`crate::World::build`] on it recovers the catalogue and every piece of
//! ground truth exactly.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::WorldError;

/// File name of a world's configuration inside a data folder.
pub const WORLD_CONFIG_FILE: &str = "world.json";

/// 2024-01-01T00:00:00Z, the default start of the simulated period.
pub const DEFAULT_EPOCH_MS: i64 = 1_704_067_200_000;

/// The largest number of topics (topic indices are 16-bit).
pub const MAX_TOPICS: u32 = 65_535;

/// The whole world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Master seed; every random draw of the world derives from it.
    pub seed: u64,
    /// Number of videos N (ids `v0 … v{N-1}`).
    pub videos: u32,
    /// Number of topics T (names `t0 … t{T-1}`).
    pub topics: u32,
    /// Number of users M (ids `u0 … u{M-1}`).
    pub users: u32,
    /// Simulated days D over which generated logs are spread.
    pub days: u32,
    /// Start of the simulated period, Unix epoch milliseconds (UTC).
    pub epoch_ms: i64,
    /// Length K of the lists the logging policies show.
    pub list_size: u32,
    pub catalog: CatalogConfig,
    pub population: PopulationConfig,
    pub response: ResponseConfig,
    pub session: SessionConfig,
}

/// How videos are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Zipf exponent α of organic popularity over popularity ranks:
    /// `popularity ∝ rank^-α`.
    pub popularity_exponent: f64,
    /// Zipf exponent of topic sizes: topic `k` is the primary topic of a video
    /// with probability `∝ (k+1)^-topic_exponent`.
    pub topic_exponent: f64,
    /// Probabilities that a video has 1, 2 or 3 topics.
    pub topics_per_video: [f64; 3],
    /// Median video length in seconds (log-normal).
    pub duration_median_seconds: f64,
    /// Log-scale standard deviation of video length.
    pub duration_sigma: f64,
    /// Mean of the latent quality on the logit scale: `q = σ(mean + sigma·z)`.
    pub quality_mean: f64,
    /// Standard deviation of the latent quality on the logit scale.
    pub quality_sigma: f64,
    /// Share of clickbait videos (clickbait propensity `c ~ U(0.6, 1)`); the
    /// others have `c = 0.2·U³` (mostly near 0).
    pub clickbait_fraction: f64,
    /// Share of videos uploaded during the simulated period (uniformly); the
    /// others were uploaded uniformly over the `upload_history_days` before it.
    pub uploaded_during_fraction: f64,
    /// How far back the oldest uploads go, in days.
    pub upload_history_days: u32,
}

/// How users are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopulationConfig {
    /// Median sessions per day of a user (log-normal across users).
    pub sessions_per_day_median: f64,
    /// Log-scale standard deviation of sessions per day (the heavy tail).
    pub sessions_per_day_sigma: f64,
    /// Mean number of a user's dominant topics (`1 + Poisson(mean − 1)`, at
    /// most 8 and at most T).
    pub interest_topics_mean: f64,
    /// Interest in every other topic is `U(0, interest_floor_max)`.
    pub interest_floor_max: f64,
    /// Population shares of the devices; normalised.
    pub device_mix: DeviceMix,
    /// Mean share of a user's sessions on their primary device (per user
    /// `U(loyalty − 0.25, loyalty + 0.25)`, clipped to `[0, 1]`); the rest
    /// follows the population mix.
    pub device_loyalty: f64,
    /// Mean like tendency τ_L (per user, log-normal around it, at most 1).
    pub like_tendency: f64,
    /// Mean dismiss tendency τ_D.
    pub dismiss_tendency: f64,
    /// Mean rating tendency τ_R (probability of rating a watched video).
    pub rate_tendency: f64,
    /// How many recent watches a request carries as history.
    pub history_length: u32,
}

/// Population shares of the four devices the world simulates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceMix {
    pub phone: f64,
    pub tablet: f64,
    pub tv: f64,
    pub desktop: f64,
}

/// The response model: examination, click, watch and satisfaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// κ ∈ [0, 1]: how strongly engagement and satisfaction conflict. It
    /// scales every clickbait weight; at 0 clickbait has no effect and clicks,
    /// watch time and satisfaction all rise together with topic match and
    /// quality; at 1 clickbait buys clicks at the price of watch time and
    /// satisfaction.
    pub conflict: f64,
    /// Position bias by device.
    pub examination: ExaminationConfig,
    /// Click probability given examination, `r(u,v)`.
    pub click: Logit,
    /// Expected watched fraction, `f(u,v)`.
    pub watch: Logit,
    /// Satisfaction, `s(u,v)`.
    pub satisfaction: Logit,
    /// δ: scale of dismissals of examined, unclicked videos.
    pub dismiss_unclicked: f64,
}

/// One examination curve, `e(p) = (1 + (p−1)/scale)^(−power)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// Positions over which examination falls by a factor `2^power`.
    pub scale: f64,
    /// Steepness.
    pub power: f64,
}

/// Examination curves by device (an unknown device uses `phone`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExaminationConfig {
    pub phone: Curve,
    pub tablet: Curve,
    pub tv: Curve,
    pub desktop: Curve,
}

/// The weights of one logistic response:
/// `σ(bias + topic_match·m + popularity·ℓ + quality·(q − ½) + κ·clickbait·c)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logit {
    pub bias: f64,
    /// Weight of the user-video topic match m ∈ [0, 1].
    pub topic_match: f64,
    /// Weight of the popularity level ℓ ∈ [0, 1].
    pub popularity: f64,
    /// Weight of the centred quality q − ½.
    pub quality: f64,
    /// Weight of the clickbait propensity c (multiplied by κ); positive for
    /// clicks, negative for watch time and satisfaction.
    pub clickbait: f64,
}

/// How sessions unfold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Base probability of going on after clicking.
    pub continue_prob: f64,
    /// ω: how much dissatisfaction shortens sessions; after a click the
    /// session goes on with probability `continue_prob·(1 − ω·(1 − s))`.
    pub satisfaction_weight: f64,
    /// Given the session goes on after a click, the probability that the user
    /// picks an organic video instead of the one they clicked.
    pub organic_after_click: f64,
    /// Probability that the user picks an organic video (and goes on) when
    /// nothing in the list was clicked; otherwise the session ends.
    pub organic_after_no_click: f64,
    /// Share of organic picks drawn from the user's interests (topic ∝
    /// interest, then video ∝ popularity within it); the rest ∝ popularity.
    pub organic_interest_share: f64,
    /// The most lists one session shows.
    pub max_steps: u32,
}

impl Default for WorldConfig {
    /// The `default` preset: what the demo uses (20k videos, 5k users, 14
    /// days; fast on two cores).
    fn default() -> Self {
        Self {
            seed: 42,
            videos: 20_000,
            topics: 60,
            users: 5_000,
            days: 14,
            epoch_ms: DEFAULT_EPOCH_MS,
            list_size: 10,
            catalog: CatalogConfig::default(),
            population: PopulationConfig::default(),
            response: ResponseConfig::default(),
            session: SessionConfig::default(),
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            popularity_exponent: 1.0,
            topic_exponent: 0.7,
            topics_per_video: [0.5, 0.35, 0.15],
            duration_median_seconds: 480.0,
            duration_sigma: 0.8,
            quality_mean: 0.0,
            quality_sigma: 1.0,
            clickbait_fraction: 0.1,
            uploaded_during_fraction: 0.2,
            upload_history_days: 365,
        }
    }
}

impl Default for PopulationConfig {
    fn default() -> Self {
        Self {
            sessions_per_day_median: 1.0,
            sessions_per_day_sigma: 1.0,
            interest_topics_mean: 2.5,
            interest_floor_max: 0.1,
            device_mix: DeviceMix::default(),
            device_loyalty: 0.7,
            like_tendency: 0.3,
            dismiss_tendency: 0.2,
            rate_tendency: 0.1,
            history_length: 20,
        }
    }
}

impl Default for DeviceMix {
    fn default() -> Self {
        Self { phone: 0.5, tablet: 0.1, tv: 0.15, desktop: 0.25 }
    }
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            conflict: 0.5,
            examination: ExaminationConfig::default(),
            click: Logit { bias: -4.0, topic_match: 3.0, popularity: 1.5, quality: 0.5, clickbait: 3.0 },
            watch: Logit { bias: -0.5, topic_match: 1.5, popularity: 0.0, quality: 2.0, clickbait: -3.0 },
            satisfaction: Logit { bias: -1.0, topic_match: 2.5, popularity: 0.0, quality: 3.0, clickbait: -4.0 },
            dismiss_unclicked: 0.1,
        }
    }
}

impl Default for ExaminationConfig {
    fn default() -> Self {
        Self {
            phone: Curve { scale: 2.0, power: 1.0 },
            tablet: Curve { scale: 2.5, power: 0.9 },
            tv: Curve { scale: 1.0, power: 1.6 },
            desktop: Curve { scale: 4.0, power: 0.7 },
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            continue_prob: 0.85,
            satisfaction_weight: 0.5,
            organic_after_click: 0.1,
            organic_after_no_click: 0.5,
            organic_interest_share: 0.8,
            max_steps: 30,
        }
    }
}

fn check(ok: bool, field: &str, problem: impl FnOnce() -> String) -> Result<(), WorldError> {
    if ok { Ok(()) } else { Err(WorldError::config(field, problem())) }
}

fn prob(field: &str, v: f64) -> Result<(), WorldError> {
    check((0.0..=1.0).contains(&v), field, || format!("is {v}; must be within 0..=1"))
}

fn positive(field: &str, v: f64) -> Result<(), WorldError> {
    check(v.is_finite() && v > 0.0, field, || format!("is {v}; must be a finite number > 0"))
}

fn non_negative(field: &str, v: f64) -> Result<(), WorldError> {
    check(v.is_finite() && v >= 0.0, field, || format!("is {v}; must be a finite number >= 0"))
}

fn finite(field: &str, v: f64) -> Result<(), WorldError> {
    check(v.is_finite(), field, || format!("is {v}; must be a finite number"))
}

fn logit(field: &str, l: &Logit) -> Result<(), WorldError> {
    finite(&format!("{field}.bias"), l.bias)?;
    finite(&format!("{field}.topic_match"), l.topic_match)?;
    finite(&format!("{field}.popularity"), l.popularity)?;
    finite(&format!("{field}.quality"), l.quality)?;
    finite(&format!("{field}.clickbait"), l.clickbait)
}

impl WorldConfig {
    /// The `toy` preset: 1,000 videos, 500 users, 7 days (tests).
    pub fn toy() -> Self {
        Self { seed: 7, videos: 1_000, topics: 20, users: 500, days: 7, ..Self::default() }
    }

    /// The `large` preset: 1M videos, 100k users, 30 days.
    pub fn large() -> Self {
        Self { seed: 1_000_003, videos: 1_000_000, topics: 1_000, users: 100_000, days: 30, ..Self::default() }
    }

    /// A preset by name: `toy`, `default` or `large`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "toy" => Some(Self::toy()),
            "default" => Some(Self::default()),
            "large" => Some(Self::large()),
            _ => None,
        }
    }

    /// The same world with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), WorldError> {
        let k = self.list_size;
        check(self.list_size >= 1 && self.list_size <= 100, "list_size", || format!("is {k}; must be within 1..=100"))?;
        check(self.videos > 2 * k, "videos", || {
            format!("is {}; must be more than twice list_size ({k})", self.videos)
        })?;
        check((1..=MAX_TOPICS).contains(&self.topics), "topics", || {
            format!("is {}; must be within 1..={MAX_TOPICS}", self.topics)
        })?;
        check(self.users >= 1, "users", || "is 0; must be at least 1".into())?;
        check((1..=3650).contains(&self.days), "days", || format!("is {}; must be within 1..=3650", self.days))?;
        check(self.epoch_ms >= 0, "epoch_ms", || format!("is {}; must be >= 0 (Unix milliseconds)", self.epoch_ms))?;

        let c = &self.catalog;
        non_negative("catalog.popularity_exponent", c.popularity_exponent)?;
        non_negative("catalog.topic_exponent", c.topic_exponent)?;
        for (i, &p) in c.topics_per_video.iter().enumerate() {
            non_negative(&format!("catalog.topics_per_video[{i}]"), p)?;
        }
        let sum: f64 = c.topics_per_video.iter().sum();
        check(sum > 0.0, "catalog.topics_per_video", || "must not be all zero".into())?;
        positive("catalog.duration_median_seconds", c.duration_median_seconds)?;
        non_negative("catalog.duration_sigma", c.duration_sigma)?;
        finite("catalog.quality_mean", c.quality_mean)?;
        non_negative("catalog.quality_sigma", c.quality_sigma)?;
        prob("catalog.clickbait_fraction", c.clickbait_fraction)?;
        prob("catalog.uploaded_during_fraction", c.uploaded_during_fraction)?;
        check(c.upload_history_days <= 36_500, "catalog.upload_history_days", || {
            format!("is {}; must be at most 36500", c.upload_history_days)
        })?;

        let p = &self.population;
        positive("population.sessions_per_day_median", p.sessions_per_day_median)?;
        check(p.sessions_per_day_median <= 100.0, "population.sessions_per_day_median", || {
            format!("is {}; must be at most 100", p.sessions_per_day_median)
        })?;
        non_negative("population.sessions_per_day_sigma", p.sessions_per_day_sigma)?;
        check(p.sessions_per_day_sigma <= 3.0, "population.sessions_per_day_sigma", || {
            format!("is {}; must be at most 3", p.sessions_per_day_sigma)
        })?;
        check(
            p.interest_topics_mean.is_finite() && (1.0..=8.0).contains(&p.interest_topics_mean),
            "population.interest_topics_mean",
            || format!("is {}; must be within 1..=8", p.interest_topics_mean),
        )?;
        prob("population.interest_floor_max", p.interest_floor_max)?;
        let m = &p.device_mix;
        for (name, v) in [("phone", m.phone), ("tablet", m.tablet), ("tv", m.tv), ("desktop", m.desktop)] {
            non_negative(&format!("population.device_mix.{name}"), v)?;
        }
        check(m.phone + m.tablet + m.tv + m.desktop > 0.0, "population.device_mix", || "must not be all zero".into())?;
        prob("population.device_loyalty", p.device_loyalty)?;
        prob("population.like_tendency", p.like_tendency)?;
        prob("population.dismiss_tendency", p.dismiss_tendency)?;
        prob("population.rate_tendency", p.rate_tendency)?;
        check(p.history_length <= 1_000, "population.history_length", || {
            format!("is {}; must be at most 1000", p.history_length)
        })?;

        let r = &self.response;
        prob("response.conflict", r.conflict)?;
        let e = &r.examination;
        for (name, curve) in [("phone", e.phone), ("tablet", e.tablet), ("tv", e.tv), ("desktop", e.desktop)] {
            positive(&format!("response.examination.{name}.scale"), curve.scale)?;
            non_negative(&format!("response.examination.{name}.power"), curve.power)?;
        }
        logit("response.click", &r.click)?;
        logit("response.watch", &r.watch)?;
        logit("response.satisfaction", &r.satisfaction)?;
        prob("response.dismiss_unclicked", r.dismiss_unclicked)?;

        let s = &self.session;
        prob("session.continue_prob", s.continue_prob)?;
        prob("session.satisfaction_weight", s.satisfaction_weight)?;
        prob("session.organic_after_click", s.organic_after_click)?;
        prob("session.organic_after_no_click", s.organic_after_no_click)?;
        prob("session.organic_interest_share", s.organic_interest_share)?;
        check((1..=1_000).contains(&s.max_steps), "session.max_steps", || {
            format!("is {}; must be within 1..=1000", s.max_steps)
        })?;
        Ok(())
    }

    /// Parses and validates a JSON configuration (missing fields take the
    /// `default` preset's values).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers and arrays always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads and validates a configuration file.
    pub fn read(path: &Path) -> Result<Self, WorldError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| WorldError::Io { path: path.to_path_buf(), source })?;
        let config = Self::from_json(&text).map_err(|source| WorldError::Json { path: path.to_path_buf(), source })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration crash-safely.
    pub fn write(&self, path: &Path) -> Result<(), WorldError> {
        let mut text = self.to_json();
        text.push('\n');
        watchnext_core::fsutil::write_atomic(path, text.as_bytes())
            .map_err(|source| WorldError::Io { path: path.to_path_buf(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_json() {
        for name in ["toy", "default", "large"] {
            let config = WorldConfig::preset(name).unwrap();
            config.validate().unwrap();
            assert_eq!(WorldConfig::from_json(&config.to_json()).unwrap(), config, "{name}");
        }
        assert!(WorldConfig::preset("huge").is_none());
    }

    #[test]
    fn partial_json_takes_defaults_and_unknown_fields_are_rejected() {
        let config = WorldConfig::from_json(r#"{"videos": 5000, "response": {"conflict": 0.9}}"#).unwrap();
        assert_eq!(config.videos, 5000);
        assert_eq!(config.response.conflict, 0.9);
        assert_eq!(config.response.click, ResponseConfig::default().click);
        let err = WorldConfig::from_json(r#"{"response": {"confict": 0.9}}"#).unwrap_err();
        assert!(err.to_string().contains("confict"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        type Mutation = fn(&mut WorldConfig);
        let cases: [(&str, Mutation); 10] = [
            ("videos", |c| c.videos = 15),
            ("users", |c| c.users = 0),
            ("topics", |c| c.topics = 0),
            ("list_size", |c| c.list_size = 0),
            ("catalog.clickbait_fraction", |c| c.catalog.clickbait_fraction = 1.5),
            ("catalog.topics_per_video[1]", |c| c.catalog.topics_per_video[1] = -1.0),
            ("population.device_mix", |c| c.population.device_mix = DeviceMix { phone: 0.0, ..DeviceMix::zero() }),
            ("response.conflict", |c| c.response.conflict = f64::NAN),
            ("response.examination.tv.scale", |c| c.response.examination.tv.scale = 0.0),
            ("session.max_steps", |c| c.session.max_steps = 0),
        ];
        for (field, mutate) in cases {
            let mut config = WorldConfig::toy();
            mutate(&mut config);
            match config.validate() {
                Err(WorldError::Config { field: got, problem }) => assert_eq!(got, field, "{problem}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WORLD_CONFIG_FILE);
        let config = WorldConfig::toy().with_seed(99);
        config.write(&path).unwrap();
        assert_eq!(WorldConfig::read(&path).unwrap(), config);
        std::fs::write(&path, r#"{"users": 0}"#).unwrap();
        assert!(matches!(WorldConfig::read(&path), Err(WorldError::Config { .. })));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(WorldConfig::read(&path), Err(WorldError::Json { .. })));
    }

    impl DeviceMix {
        fn zero() -> Self {
            Self { phone: 0.0, tablet: 0.0, tv: 0.0, desktop: 0.0 }
        }
    }
}
