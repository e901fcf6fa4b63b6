//! The feature schema: the one piece of code that turns a request and a
//! candidate into the numbers a ranking model reads. The trainer builds its
//! training examples with it and the ranker builds its serving tensors with
//! it, so the two cannot drift apart (training/serving skew).
//!
//! # Layout
//! Every candidate becomes two rows of fixed width:
//! - `dense` — [`DENSE`] float32 values, named in [`DENSE`] (topic overlap with
//!   the query video and with the user's recent history, candidate and query
//!   durations and ages, generator sources, their scores and the candidate's
//!   place in each generator's list (`1 / log2(1 + rank)`: 1 for a
//!   generator's first, 0 when it did not propose the video or its rank is
//!   not known; a generator's raw score is comparable only within one
//!   request, its rank across all of them), device one-hot,
//!   local time of day and week as sine/cosine, history length);
//! - `sparse` — one int64 bucket per field of [`SPARSE`] (user, candidate,
//!   query video, their primary topics, device, local hour), each hashed into
//!   `0..buckets` with the stable [`stable_hash`] (FNV-1a 64) so that every
//!   producer, in any language, can reproduce it; a model embeds each field
//!   with a table of that many rows.
//!
//! Position is **not** part of the schema: it is a selection-bias feature the
//! trainer's shallow tower reads during training only (the serving graph
//! treats it as missing, as in the paper).
//!
//! # Versioning
//! [`FeatureSchema::hash`] digests the schema version, every feature name in
//! order, the hash function and the bucket counts. A model manifest records
//! it, and the ranker refuses a model whose hash differs from its own.
//!
//! # Cost
//! [`RequestFeatures::new`] does the per-request work once (the user's topic
//! profile from the history, the query video, the clock); each candidate is
//! then a catalogue lookup, a read of the video's flat feature keys
//! ([`crate::catalog::FeatureKeys`]: its field hashes and topic hashes,
//! computed once per catalogue) and a few topic comparisons; only a video
//! the catalogue does not know has its id hashed per row.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    catalog::{Catalog, Video},
    event::Vote,
    registry,
    request::{Device, HistoryEntry, Query},
};

/// Bumped whenever the meaning or order of a feature changes.
pub const SCHEMA_VERSION: u32 = 2;

macro_rules! dense_features {
    ($($variant:ident => $name:literal,)*) => {
        /// Names of the dense features, in tensor order: the request and
        /// candidate features, then for every generator of the registry
        /// (in its order) `source_<name>` (proposed it), `score_<name>` (its
        /// score), `rank_<name>` (`1 / log2(1 + place)` in its list), then
        /// `source_count` (the share of generators that proposed it).
        pub const DENSE: &[&str] = &[
            "cand_in_catalog",
            "cand_log_duration_min",
            "cand_duration_known",
            "cand_log_age_days",
            "cand_age_known",
            "query_in_catalog",
            "query_log_duration_min",
            "topic_jaccard_query",
            "topic_shares_query",
            "same_primary_topic",
            "user_topic_affinity_max",
            "user_topic_affinity_sum",
            "cand_in_history",
            "history_log_len",
            "history_mean_watch_fraction",
            "history_log_minutes_since_last",
            "device_unknown",
            "device_phone",
            "device_tablet",
            "device_tv",
            "device_desktop",
            "hour_sin",
            "hour_cos",
            "weekday_sin",
            "weekday_cos",
            $(concat!("source_", $name),)*
            $(concat!("score_", $name),)*
            $(concat!("rank_", $name),)*
            "source_count",
        ];
    };
}
crate::for_each_generator!(dense_features);

/// Width of a dense row.
pub const DENSE_LEN: usize = DENSE.len();

/// The sparse (embedded) fields, in tensor order.
pub const SPARSE: &[&str] = &["user", "cand_video", "query_video", "cand_topic", "query_topic", "device", "hour"];

/// Width of a sparse row.
pub const SPARSE_LEN: usize = SPARSE.len();

/// Name of the dense input tensor of a model (`[batch, DENSE_LEN]`, float32).
pub const DENSE_INPUT: &str = "dense";
/// Name of the sparse input tensor of a model (`[batch, SPARSE_LEN]`, int64).
pub const SPARSE_INPUT: &str = "sparse";

/// How many dense features come before the generators' provenance features.
const FIXED_DENSE: usize = DENSE_LEN - 3 * registry::COUNT - 1;

/// Bucket counts of the hashed sparse fields (a model's embedding table sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    pub user_buckets: u32,
    pub video_buckets: u32,
    pub topic_buckets: u32,
    /// How many of the most recent history entries shape the user's topic
    /// profile and history features.
    pub history_window: u32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self { user_buckets: 50_000, video_buckets: 100_000, topic_buckets: 1_024, history_window: 50 }
    }
}

impl FeatureConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("user_buckets", self.user_buckets),
            ("video_buckets", self.video_buckets),
            ("topic_buckets", self.topic_buckets),
        ] {
            if !(1..=(1 << 26)).contains(&value) {
                return Err(format!("features.{name} = {value}: must be within 1..=67108864"));
            }
        }
        if !(1..=1_000).contains(&self.history_window) {
            return Err(format!("features.history_window = {}: must be within 1..=1000", self.history_window));
        }
        Ok(())
    }
}

/// FNV-1a 64 of `bytes`, continuing from `state` (start from [`FNV_OFFSET`]).
/// Stable across platforms and releases: bucket assignment depends on it.
pub fn stable_hash(state: u64, bytes: &[u8]) -> u64 {
    let mut h = state;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a 64's offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of `value` in field `field` (the field name salts the hash, so
/// one id lands in unrelated buckets of different tables).
pub fn field_hash(field: &str, value: &str) -> u64 {
    stable_hash(stable_hash(stable_hash(FNV_OFFSET, field.as_bytes()), &[0]), value.as_bytes())
}

/// The bucket of `value` in field `field`: [`field_hash`] modulo `buckets`.
pub fn bucket(field: &str, value: &str, buckets: u32) -> i64 {
    bucket_of(field_hash(field, value), buckets)
}

fn bucket_of(hash: u64, buckets: u32) -> i64 {
    (hash % u64::from(buckets.max(1))) as i64
}

/// The [`field_hash`]es of a catalogue video's sparse fields: its id in
/// `video`, its first topic (`""` when it has none) in `topic`.
pub(crate) fn video_field_hashes(video: &Video) -> (u64, u64) {
    (field_hash("video", &video.id), field_hash("topic", primary_topic(Some(video))))
}

/// A validated schema: the layout plus the bucket counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSchema {
    config: FeatureConfig,
    hash: String,
}

impl Default for FeatureSchema {
    fn default() -> Self {
        Self::new(FeatureConfig::default()).unwrap_or_else(|_| unreachable!("the default feature config is valid"))
    }
}

impl FeatureSchema {
    pub fn new(config: FeatureConfig) -> Result<Self, String> {
        config.validate()?;
        let mut text = format!("watchnext-features v{SCHEMA_VERSION}; hash fnv1a64; dense");
        for name in DENSE {
            text.push(' ');
            text.push_str(name);
        }
        text.push_str("; sparse");
        for (name, buckets) in SPARSE.iter().zip(Self::buckets_of(&config)) {
            text.push_str(&format!(" {name}:{buckets}"));
        }
        text.push_str(&format!("; history_window {}", config.history_window));
        let hash = format!("{:016x}", stable_hash(FNV_OFFSET, text.as_bytes()));
        Ok(Self { config, hash })
    }

    fn buckets_of(c: &FeatureConfig) -> [u32; SPARSE_LEN] {
        [c.user_buckets, c.video_buckets, c.video_buckets, c.topic_buckets, c.topic_buckets, 5, 24]
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The schema's identity (16 hex digits), recorded in every model manifest.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Number of buckets of each sparse field, in [`SPARSE`] order.
    pub fn sparse_buckets(&self) -> [u32; SPARSE_LEN] {
        Self::buckets_of(&self.config)
    }

    /// A JSON description of the layout (for manifests and documentation).
    pub fn describe(&self) -> SchemaDescription {
        SchemaDescription {
            version: SCHEMA_VERSION,
            hash: self.hash.clone(),
            dense: DENSE.iter().map(|s| (*s).to_owned()).collect(),
            sparse: SPARSE
                .iter()
                .zip(self.sparse_buckets())
                .map(|(name, buckets)| SparseField { name: (*name).to_owned(), buckets })
                .collect(),
        }
    }
}

/// The schema as data: what a model manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDescription {
    pub version: u32,
    pub hash: String,
    pub dense: Vec<String>,
    pub sparse: Vec<SparseField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseField {
    pub name: String,
    pub buckets: u32,
}

/// What is known about the request, independent of the candidate.
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    pub user: &'a str,
    pub query_video: &'a str,
    pub device: Device,
    /// When the list is shown (Unix epoch milliseconds).
    pub time_ms: i64,
    /// The client's offset from UTC, for local time of day.
    pub utc_offset_minutes: i32,
    /// The user's recent watches, oldest first (only the last
    /// `history_window` count).
    pub history: &'a [HistoryEntry],
}

impl<'a> RequestInput<'a> {
    /// The input of a validated request (its own history, time and offset).
    pub fn of(query: &'a Query) -> Self {
        Self {
            user: query.user.as_str(),
            query_video: query.query_video.as_str(),
            device: query.device,
            time_ms: query.context.time_ms,
            utc_offset_minutes: query.context.utc_offset_minutes,
            history: &query.history.0,
        }
    }
}

/// The per-request part of the features, computed once per request.
#[derive(Debug, Clone)]
pub struct RequestFeatures<'s> {
    schema: &'s FeatureSchema,
    /// Sorted, distinct topic hashes of the query video.
    query_topics: Vec<u64>,
    query_primary: Option<u64>,
    /// Topic hash → share of the user's recent history (sums to 1 when non-empty).
    user_topics: BTreeMap<u64, f32>,
    /// Sorted catalogue indices of the recent history.
    history_videos: Vec<u32>,
    time_ms: i64,
    query_in_catalog: f32,
    query_log_duration: f32,
    history_log_len: f32,
    history_mean_fraction: f32,
    history_since_last: f32,
    device: [f32; 5],
    clock: [f32; 4],
    /// Sparse fields, with the candidate's two left 0.
    sparse: [i64; SPARSE_LEN],
}

const MINUTE_MS: f64 = 60_000.0;
const DAY_MS: i64 = 86_400_000;

/// ln(1 + minutes), 0 for unknown (≤ 0) durations.
fn log_minutes(seconds: f32) -> f32 {
    (1.0 + f64::from(seconds.max(0.0)) / 60.0).ln() as f32
}

/// `1 / log2(1 + rank)` for a 1-based rank (1 → 1, 3 → 0.5, 1,023 → 0.1);
/// 0 for an unknown rank (0).
fn rank_discount(rank: u32) -> f32 {
    if rank == 0 { 0.0 } else { (1.0 / (1.0 + f64::from(rank)).log2()) as f32 }
}

fn topic_hash(topic: &str) -> u64 {
    stable_hash(FNV_OFFSET, topic.as_bytes())
}

/// `topics` as [`crate::catalog::FeatureKeys`] hold them: the first topic's
/// hash, and the distinct hashes sorted.
pub(crate) fn topic_keys(topics: &[String]) -> (Option<u64>, Vec<u64>) {
    let mut sorted: Vec<u64> = topics.iter().map(|t| topic_hash(t)).collect();
    let primary = sorted.first().copied();
    sorted.sort_unstable();
    sorted.dedup();
    (primary, sorted)
}

fn primary_topic(video: Option<&Video>) -> &str {
    video.and_then(|v| v.topics.first()).map_or("", String::as_str)
}

impl<'s> RequestFeatures<'s> {
    pub fn new(schema: &'s FeatureSchema, catalog: &Catalog, input: &RequestInput<'_>) -> Self {
        let query = catalog.get(input.query_video);
        let (query_primary, query_topics) = query.map(|q| topic_keys(&q.topics)).unwrap_or_default();

        let window = schema.config.history_window as usize;
        let recent = &input.history[input.history.len().saturating_sub(window)..];
        // Ordered, so that the normalising sum is the same on every run.
        let mut user_topics: BTreeMap<u64, f32> = BTreeMap::new();
        let mut history_videos = Vec::with_capacity(recent.len());
        let (mut fraction_sum, mut fraction_n) = (0.0f64, 0u32);
        for entry in recent {
            let Some(index) = catalog.index_of(entry.video.as_str()) else { continue };
            history_videos.push(index);
            let video = &catalog.videos()[index as usize];
            if !video.topics.is_empty() {
                let share = 1.0 / video.topics.len() as f32;
                for t in &video.topics {
                    *user_topics.entry(topic_hash(t)).or_default() += share;
                }
            }
            if video.duration_seconds > 0.0 {
                fraction_sum += f64::from((entry.seconds_watched / video.duration_seconds).clamp(0.0, 1.0));
                fraction_n += 1;
            }
        }
        let total: f32 = user_topics.values().sum();
        if total > 0.0 {
            user_topics.values_mut().for_each(|v| *v /= total);
        }
        history_videos.sort_unstable();
        history_videos.dedup();

        let local_ms = input.time_ms.saturating_add(i64::from(input.utc_offset_minutes) * 60_000);
        let day_fraction = local_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        // 1970-01-01 was a Thursday; weekday 0 = Monday.
        let weekday = (local_ms.div_euclid(DAY_MS) + 3).rem_euclid(7) as f64;
        let hour = ((day_fraction * 24.0).floor() as i64).clamp(0, 23);
        let tau = std::f64::consts::TAU;
        let since_last = input.history.last().map_or(0.0, |e| {
            (1.0 + input.time_ms.saturating_sub(e.watched_at_ms).max(0) as f64 / MINUTE_MS).ln() as f32
        });
        let mut device = [0.0f32; 5];
        device[input.device.index()] = 1.0;
        let [users, videos, _, topics, _, _, _] = schema.sparse_buckets();
        let sparse = [
            bucket("user", input.user, users),
            0,
            bucket("video", input.query_video, videos),
            0,
            bucket("topic", primary_topic(query), topics),
            input.device.index() as i64,
            hour,
        ];
        Self {
            schema,
            query_topics,
            query_primary,
            user_topics,
            history_videos,
            time_ms: input.time_ms,
            query_in_catalog: f32::from(u8::from(query.is_some())),
            query_log_duration: query.map_or(0.0, |q| log_minutes(q.duration_seconds)),
            history_log_len: (1.0 + recent.len() as f64).ln() as f32,
            history_mean_fraction: if fraction_n > 0 { (fraction_sum / f64::from(fraction_n)) as f32 } else { 0.0 },
            history_since_last: since_last,
            device,
            clock: [
                (tau * day_fraction).sin() as f32,
                (tau * day_fraction).cos() as f32,
                (tau * weekday / 7.0).sin() as f32,
                (tau * weekday / 7.0).cos() as f32,
            ],
            sparse,
        }
    }

    /// Writes the features of one candidate into `dense` ([`DENSE_LEN`]
    /// values) and `sparse` ([`SPARSE_LEN`] values).
    ///
    /// # Panics
    /// If either slice has the wrong length (a caller's bug, not bad input).
    pub fn candidate(&self, catalog: &Catalog, video: &str, sources: &[Vote], dense: &mut [f32], sparse: &mut [i64]) {
        assert_eq!(dense.len(), DENSE_LEN, "dense row width");
        assert_eq!(sparse.len(), SPARSE_LEN, "sparse row width");
        let index = catalog.index_of(video);
        let cand = index.and_then(|i| catalog.feature_keys(i));
        let (mut shared, mut distinct, mut affinity_max, mut affinity_sum) = (0usize, 0usize, 0.0f32, 0.0f32);
        let cand_topics: &[u64] = cand.map_or(&[], |k| k.sorted);
        let cand_primary = cand.and_then(|k| k.primary);
        for t in cand_topics {
            if self.query_topics.binary_search(t).is_ok() {
                shared += 1;
            }
            let a = self.user_topics.get(t).copied().unwrap_or(0.0);
            affinity_max = affinity_max.max(a);
            affinity_sum += a;
        }
        distinct += cand_topics.len() + self.query_topics.len() - shared;
        let jaccard = if distinct > 0 { shared as f32 / distinct as f32 } else { 0.0 };
        let age = cand
            .filter(|c| c.upload_ms > 0)
            .map(|c| (1.0 + self.time_ms.saturating_sub(c.upload_ms).max(0) as f64 / DAY_MS as f64).ln() as f32);
        let duration_known = cand.is_some_and(|c| c.duration_seconds > 0.0);
        let in_history = index.is_some_and(|i| self.history_videos.binary_search(&i).is_ok());

        let mut present = [0.0f32; registry::COUNT];
        let mut scores = [0.0f32; registry::COUNT];
        let mut ranks = [0.0f32; registry::COUNT];
        for vote in sources {
            if let Some(k) = registry::index(vote.source) {
                present[k] = 1.0;
                let score = if vote.score.is_finite() { vote.score } else { 0.0 };
                scores[k] = scores[k].max(score);
                ranks[k] = ranks[k].max(rank_discount(vote.rank));
            }
        }
        let flag = |b: bool| f32::from(u8::from(b));
        let values = [
            flag(cand.is_some()),
            cand.map_or(0.0, |c| log_minutes(c.duration_seconds)),
            flag(duration_known),
            age.unwrap_or(0.0),
            flag(age.is_some()),
            self.query_in_catalog,
            self.query_log_duration,
            jaccard,
            flag(shared > 0),
            flag(cand_primary.is_some() && cand_primary == self.query_primary),
            affinity_max,
            affinity_sum,
            flag(in_history),
            self.history_log_len,
            self.history_mean_fraction,
            self.history_since_last,
            self.device[0],
            self.device[1],
            self.device[2],
            self.device[3],
            self.device[4],
            self.clock[0],
            self.clock[1],
            self.clock[2],
            self.clock[3],
        ];
        let (fixed, provenance) = dense.split_at_mut(FIXED_DENSE);
        fixed.copy_from_slice(&values);
        let (p, rest) = provenance.split_at_mut(registry::COUNT);
        let (s, rest) = rest.split_at_mut(registry::COUNT);
        let (r, count) = rest.split_at_mut(registry::COUNT);
        p.copy_from_slice(&present);
        s.copy_from_slice(&scores);
        r.copy_from_slice(&ranks);
        count[0] = present.iter().sum::<f32>() / registry::COUNT as f32;
        let [_, videos, _, topics, _, _, _] = self.schema.sparse_buckets();
        sparse.copy_from_slice(&self.sparse);
        (sparse[1], sparse[3]) = match cand {
            Some(k) => (bucket_of(k.id_hash, videos), bucket_of(k.primary_topic_hash, topics)),
            None => (bucket("video", video, videos), bucket("topic", "", topics)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Source, ids::VideoId};

    fn video(id: &str, topics: &[&str], duration: f32, upload_ms: i64) -> Video {
        Video {
            id: id.into(),
            title: String::new(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            duration_seconds: duration,
            upload_ms,
        }
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![
            video("q", &["music", "live"], 600.0, 1_000),
            video("a", &["music"], 120.0, 1_000),
            video("b", &["cooking", "live"], 0.0, 0),
            video("h1", &["music"], 100.0, 1_000),
            video("h2", &["sports"], 100.0, 1_000),
        ])
        .unwrap()
    }

    fn entry(video: &str, at: i64, seconds: f32) -> HistoryEntry {
        HistoryEntry { video: VideoId::parse("v", video).unwrap(), watched_at_ms: at, seconds_watched: seconds }
    }

    fn row(req: &RequestFeatures<'_>, catalog: &Catalog, video: &str, sources: &[Vote]) -> (Vec<f32>, Vec<i64>) {
        let (mut d, mut s) = (vec![0.0; DENSE_LEN], vec![0; SPARSE_LEN]);
        req.candidate(catalog, video, sources, &mut d, &mut s);
        (d, s)
    }

    fn at(name: &str) -> usize {
        DENSE.iter().position(|n| *n == name).unwrap()
    }

    #[test]
    fn features_follow_their_definitions() {
        let schema = FeatureSchema::default();
        let catalog = catalog();
        let history = [entry("h1", 0, 50.0), entry("h2", 0, 100.0), entry("h1", 0, 100.0), entry("gone", 0, 5.0)];
        // Thursday 1970-01-08 06:00 UTC, +60 min offset → 07:00 local.
        let time_ms = 7 * DAY_MS + 6 * 3_600_000;
        let input = RequestInput {
            user: "u1",
            query_video: "q",
            device: Device::Tv,
            time_ms,
            utc_offset_minutes: 60,
            history: &history,
        };
        let req = RequestFeatures::new(&schema, &catalog, &input);
        let votes =
            [Vote::new(Source::Topic, 0.5, 7), Vote::new(Source::Cowatch, 0.25, 0), Vote::new(Source::Topic, 0.75, 3)];
        let (d, s) = row(&req, &catalog, "a", &votes);
        assert_eq!(d[at("cand_in_catalog")], 1.0);
        assert!((d[at("cand_log_duration_min")] - 3.0f32.ln()).abs() < 1e-6);
        assert!((d[at("cand_log_age_days")] - (1.0 + (time_ms - 1_000) as f32 / DAY_MS as f32).ln()).abs() < 1e-6);
        // {music} vs {music, live}: 1 shared of 2 distinct.
        assert_eq!(d[at("topic_jaccard_query")], 0.5);
        assert_eq!(d[at("topic_shares_query")], 1.0);
        assert_eq!(d[at("same_primary_topic")], 1.0);
        // History topics: music 2 of 3 known watches, sports 1 of 3.
        assert!((d[at("user_topic_affinity_max")] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(d[at("cand_in_history")], 0.0);
        assert!((d[at("history_log_len")] - 5.0f32.ln()).abs() < 1e-6);
        assert!((d[at("history_mean_watch_fraction")] - (0.5 + 1.0 + 1.0) / 3.0).abs() < 1e-6);
        assert_eq!(d[at("device_tv")], 1.0);
        assert_eq!(d[at("device_phone")], 0.0);
        assert!((d[at("hour_sin")] - (std::f32::consts::TAU * 7.0 / 24.0).sin()).abs() < 1e-5);
        assert!((d[at("weekday_sin")] - (std::f32::consts::TAU * 3.0 / 7.0).sin()).abs() < 1e-5);
        assert_eq!((d[at("source_topic")], d[at("score_topic")]), (1.0, 0.75));
        assert_eq!((d[at("source_cowatch")], d[at("score_cowatch")]), (1.0, 0.25));
        assert_eq!(d[at("source_count")], 0.5);
        // Topic's best rank (3 → 1 / log2 4); co-watch's rank is unknown; sequence did not vote.
        assert_eq!((d[at("rank_topic")], d[at("rank_cowatch")], d[at("rank_sequence")]), (0.5, 0.0, 0.0));
        let (d, _) = row(&req, &catalog, "a", &[Vote::new(Source::Sequence, 1.0, 1)]);
        assert_eq!((d[at("rank_sequence")], d[at("source_sequence")], d[at("rank_topic")]), (1.0, 1.0, 0.0));
        assert_eq!(s[5], Device::Tv.index() as i64);
        assert_eq!(s[6], 7);
        assert_eq!(s[0], bucket("user", "u1", schema.config().user_buckets));
        assert_eq!(s[1], bucket("video", "a", schema.config().video_buckets));
        // The catalogue's precomputed hashes give the buckets the strings give.
        assert_eq!(s[3], bucket("topic", "music", schema.config().topic_buckets));
        assert_eq!(s[4], bucket("topic", "music", schema.config().topic_buckets), "the query's first topic");

        let (d, _) = row(&req, &catalog, "h1", &[]);
        assert_eq!(d[at("cand_in_history")], 1.0);
        let (d, _) = row(&req, &catalog, "b", &[]);
        assert_eq!((d[at("cand_duration_known")], d[at("cand_age_known")]), (0.0, 0.0));
        assert_eq!(d[at("same_primary_topic")], 0.0);
        assert!((d[at("topic_jaccard_query")] - 1.0 / 3.0).abs() < 1e-6);
        let (d, s) = row(&req, &catalog, "not-in-catalogue", &[Vote::new(Source::Context, f32::NAN, u32::MAX)]);
        assert_eq!(d[at("cand_in_catalog")], 0.0);
        assert!(d.iter().all(|v| v.is_finite()));
        assert!(s.iter().zip(schema.sparse_buckets()).all(|(v, b)| (0..i64::from(b)).contains(v)));
        assert_eq!(s[1], bucket("video", "not-in-catalogue", schema.config().video_buckets));
        assert_eq!(s[3], bucket("topic", "", schema.config().topic_buckets));
        let (_, s) = row(&req, &catalog, "b", &[]);
        assert_eq!(
            (s[1], s[3]),
            (
                bucket("video", "b", schema.config().video_buckets),
                bucket("topic", "cooking", schema.config().topic_buckets)
            )
        );
    }

    #[test]
    fn an_empty_request_gives_finite_features() {
        let schema = FeatureSchema::default();
        let catalog = Catalog::default();
        let input = RequestInput {
            user: "u",
            query_video: "q",
            device: Device::Unknown,
            time_ms: -5,
            utc_offset_minutes: -720,
            history: &[],
        };
        let req = RequestFeatures::new(&schema, &catalog, &input);
        let (d, s) = row(&req, &catalog, "x", &[]);
        assert!(d.iter().all(|v| v.is_finite()));
        assert!((0..24).contains(&s[6]));
    }

    #[test]
    fn the_hash_is_stable_and_follows_the_buckets() {
        assert_eq!(stable_hash(FNV_OFFSET, b""), FNV_OFFSET);
        // FNV-1a 64 reference value for "a".
        assert_eq!(stable_hash(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        let a = FeatureSchema::default();
        assert_eq!(a.hash(), FeatureSchema::default().hash());
        let b = FeatureSchema::new(FeatureConfig { topic_buckets: 9, ..FeatureConfig::default() }).unwrap();
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.describe().dense.len(), DENSE_LEN);
        let err = FeatureSchema::new(FeatureConfig { user_buckets: 0, ..FeatureConfig::default() }).unwrap_err();
        assert!(err.contains("features.user_buckets"), "{err}");
    }
}
