//! Training examples from a point-in-time replay of the serving pipeline.
//!
//! The ranker orders the few hundred candidates the generators propose, each
//! carrying its provenance (which generators proposed it, with their
//! scores). It should learn from exactly that: the candidates the pipeline
//! would have had at each moment of the log, with the features it would
//! have computed, labelled by what the user did next. Examples built from the
//! logged impressions alone teach something else — every provenance feature
//! is 0 in a log the pipeline did not serve, and the negatives of an import
//! are random videos, not plausible candidates.
//!
//! # The replay
//! One pass over the log in time order (any log: the synthetic world,
//! MovieLens, Open Bandit, a platform's own; no per-data-set rule):
//! - **State** ([`PointInTime`]): the serving pipeline's generators and its
//!   recent-watch store (`watchnext_core::history`, the same rule at serving
//!   and here) observe every event *before* each moment, nothing after it.
//!   Generators that publish on a wall-clock cadence are synced every
//!   `replay.sync_interval_ms` of event time, as the server does in wall time.
//! - **Moments**: each logged request (its run of impressions), or — for a
//!   log without requests — each watch, as a "what next" moment whose query
//!   video is the user's previous watch. Only moments after the warm-up
//!   (`replay.warmup_fraction` of the events, which also train the replay's
//!   own sequence model: see [`warmup_end_ms`]) give examples: at most
//!   `replay.max_moments_per_user` per user in expectation and
//!   `replay.max_moments` in all (a seeded sample). The cap per user keeps
//!   the few heaviest users (thousands of moments each) from deciding alone
//!   what the model learns about everyone.
//! - **Candidates**: the same generator calls and the same merge
//!   (`watchnext_core::candidates::merge`) as a Recommend request, with the
//!   recommender's `per_generator`, `max_candidates` and `history_len`.
//! - **Labels**: the first `replay.next_videos` distinct videos the user
//!   watched or clicked after the moment, within `replay.attribution_minutes`,
//!   are its positives (click = 1, with the watch time, like, dismissal and
//!   rating the user gave them in the window). Videos the user watched
//!   later in the same window are neither: they were wanted, only not
//!   first, and as negatives they would teach the model to push down
//!   exactly the candidates a user goes on to watch (on MovieLens a user
//!   rates dozens of movies in one sitting). The negatives are
//!   `replay.negatives_per_moment` videos sampled uniformly from the moment's
//!   other candidates (`replay.hard_negatives` of them from its first
//!   `replay.hard_negative_depth` in fused order, where a list's top is
//!   decided; `negatives = "candidates"`, positives outside the
//!   candidates left out: the ranker never sees them at serving) or from the
//!   catalogue (`"random"`, every positive kept).
//! - **Features**: the shared schema (`watchnext_core::features`) at the
//!   moment's time, with the replayed history and provenance. Rows carry no
//!   position (0 = missing, as at serving).
//!
//! # How logged impressions mix in
//! - Impressions that carry the features the server used (this schema) are
//!   **always** rows, with those exact features and their join labels: they
//!   are what the pipeline really served, the first choice wherever present.
//! - Other logged impressions (imports, another policy's log) are rows at the
//!   sampled moments when `replay.logged_impressions` is on, labelled by the
//!   join, with features computed at their time and provenance from the
//!   logged sources or else the replayed candidates; they carry positions,
//!   which the shallow tower learns position bias from.
//! - A video shown in the moment's list is not added again as a candidate row.
//!
//! Rows of one moment share its request id (a replayed watch moment gets
//! `replay-<event index>`), so a list-wise loss can group them.

use std::{collections::HashMap, sync::Arc};

use rand::{RngExt, SeedableRng, seq::index::sample};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use watchnext_core::{
    RequestContext, RequestId,
    candidates::{self, Merged, SourceList},
    catalog::Catalog,
    event::{Event, EventKind, FeatureVector, Vote},
    features::{DENSE_LEN, FeatureSchema, RequestFeatures, RequestInput, SPARSE_LEN, stable_hash},
    generator::Generator,
    history::RecentWatches,
    ids::VideoId,
    request::{History, Query},
};
use watchnext_feedback::{JoinOptions, Joiner, TrainingRow};

use crate::{
    config::{Negatives, ReplayConfig, TrainerConfig},
    dataset::{Builder, DatasetError, DatasetSummary, Examples, progress_bar, usable},
};

/// The serving pipeline a replay runs: the generators (fresh, fed by the
/// replay) and the recommender's candidate settings.
#[derive(Debug, Clone)]
pub struct Serving {
    pub generators: Vec<Arc<dyn Generator>>,
    /// Candidates asked of each generator (`recommender.fanout.per_generator`).
    pub per_generator: usize,
    /// Merged candidates kept (`recommender.max_candidates`).
    pub max_candidates: usize,
    /// Recent watches kept per user (`recommender.fanout.history_len`).
    pub history_len: usize,
}

/// The candidates of one moment.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// Each generator's answer, in the order of [`Serving::generators`]
    /// (not-ready generators left out, as Recommend does).
    pub lists: Vec<SourceList>,
    /// The merge, best fused first.
    pub merged: Vec<Merged>,
}

/// The online part of the serving pipeline, advanced through a log: what
/// the generators and the recent-watch store knew at each moment.
#[derive(Debug)]
pub struct PointInTime<'a> {
    serving: &'a Serving,
    history: Arc<RecentWatches>,
    /// Events `..observed` have been observed.
    observed: usize,
    sync_interval_ms: i64,
    last_sync_ms: Option<i64>,
    dirty: bool,
}

impl<'a> PointInTime<'a> {
    /// Starts before the first event; `history` is the store requests read
    /// (share the recommender's to replay through it).
    pub fn new(serving: &'a Serving, history: Arc<RecentWatches>, sync_interval_ms: i64) -> Self {
        Self { serving, history, observed: 0, sync_interval_ms, last_sync_ms: None, dirty: false }
    }

    /// The recent-watch store.
    pub fn history(&self) -> &Arc<RecentWatches> {
        &self.history
    }

    /// Events observed so far (an index into the log).
    pub fn observed(&self) -> usize {
        self.observed
    }

    /// Observes `events[observed..to]` (a prefix of the same log every call),
    /// in chunks as the log tailer delivers them, then syncs the generators
    /// if `sync_interval_ms` of event time passed since the last sync.
    pub fn advance(&mut self, events: &[Event], to: usize) {
        let to = to.min(events.len());
        if to <= self.observed {
            return;
        }
        for chunk in events[self.observed..to].chunks(4_096) {
            for g in &self.serving.generators {
                g.observe(chunk);
            }
            self.history.observe(chunk);
        }
        self.observed = to;
        self.dirty = true;
        let now = events[to - 1].timestamp_ms;
        if self.last_sync_ms.is_none_or(|last| now.saturating_sub(last) >= self.sync_interval_ms) {
            self.sync(now);
        }
    }

    /// Makes everything observed visible now.
    pub fn sync_now(&mut self, events: &[Event]) {
        if self.dirty && self.observed > 0 {
            self.sync(events[self.observed - 1].timestamp_ms);
        }
    }

    fn sync(&mut self, now: i64) {
        for g in &self.serving.generators {
            g.sync();
        }
        self.last_sync_ms = Some(now);
        self.dirty = false;
    }

    /// What Recommend's fan-out and merge would give for `query` now.
    pub fn candidates(&self, query: &Query, catalog: &Catalog) -> Candidates {
        let s = self.serving;
        let mut lists = Vec::with_capacity(s.generators.len());
        for g in &s.generators {
            if g.precondition().is_err() {
                continue;
            }
            let generated = g.generate(query, s.per_generator);
            lists.push((g.source(), generated.candidates.into_iter().map(|c| (c.video, c.score)).collect()));
        }
        let merged = candidates::merge(
            &lists,
            &candidates::excluded(query),
            Some(catalog),
            query.context.time_ms,
            s.max_candidates,
        );
        Candidates { lists, merged }
    }
}

/// The time before which the log only warms the replay up (and trains its
/// sequence model): that of the event at `fraction` of the log (0 = none).
pub fn warmup_end_ms(events: &[Event], fraction: f64) -> i64 {
    if events.is_empty() || fraction <= 0.0 {
        return i64::MIN;
    }
    let at = ((events.len() as f64 * fraction) as usize).min(events.len() - 1);
    events[at].timestamp_ms
}

/// What the replay did; part of the data set's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Start of the examples (end of the warm-up), Unix ms.
    pub from_ms: i64,
    /// Moments are the logged requests (else each watch).
    pub request_moments: bool,
    /// Moments after the warm-up.
    pub eligible_moments: u64,
    /// Of those, sampled and replayed.
    pub replayed_moments: u64,
    /// Replayed moments skipped: no query video (a user's first watch).
    pub without_query: u64,
    /// Replayed moments with at least one positive.
    pub with_positive: u64,
    /// Of those, moments whose first positive was among the candidates (the
    /// union's recall at `max_candidates`).
    pub first_positive_in_candidates: u64,
    /// Mean merged candidates per replayed moment.
    pub mean_candidates: f64,
    /// Candidate rows written: positives and negatives.
    pub candidate_positives: u64,
    pub candidate_negatives: u64,
    /// Rows of logged impressions: with the server's features, and computed.
    pub served_rows: u64,
    pub logged_rows: u64,
    /// Served rows whose features the training path recomputed (from the
    /// replayed history, the request's time and the logged provenance), and
    /// how many of those differ from what the ranker logged: training /
    /// serving skew, which should be 0.
    pub served_verified: u64,
    pub served_mismatches: u64,
    /// The first difference found, for the note.
    pub first_mismatch: Option<String>,
    pub seconds: f64,
}

/// What a user did after a moment with one video.
#[derive(Debug, Clone, Default)]
struct Outcome {
    click: bool,
    watch_seconds: f32,
    duration: f32,
    like: bool,
    dismiss: bool,
    rating: Option<f32>,
}

/// The moment starting at event `i`: the end of its list of impressions (a
/// request moment) or `None` (a watch moment), if `i` starts one.
fn moment_at(events: &[Event], i: usize, requests: bool) -> Option<Option<usize>> {
    let e = &events[i];
    if requests {
        let EventKind::Impression(_) = e.kind else { return None };
        if e.request_id.is_empty() {
            return None;
        }
        let same =
            |o: &Event| matches!(o.kind, EventKind::Impression(_)) && o.request_id == e.request_id && o.user == e.user;
        if i > 0 && same(&events[i - 1]) {
            return None;
        }
        let end = events[i..].iter().position(|o| !same(o)).map_or(events.len(), |n| i + n);
        Some(Some(end))
    } else {
        matches!(e.kind, EventKind::Watch { .. }).then_some(None)
    }
}

/// Whether the moment starting at event `i` is in the sample.
fn sampled(seed: u64, i: usize, keep: f64) -> bool {
    if keep >= 1.0 {
        return true;
    }
    let h = stable_hash(stable_hash(watchnext_core::features::FNV_OFFSET, &seed.to_le_bytes()), &i.to_le_bytes());
    ((h >> 11) as f64 / (1u64 << 53) as f64) < keep
}

/// Which of a moment's `pool` other candidates (best fused first) become
/// its negatives: `hard_negatives` of the first `hard_negative_depth`, then
/// the rest of `negatives_per_moment` uniformly from the others.
fn candidate_negatives(rng: &mut ChaCha8Rng, pool: usize, r: &ReplayConfig) -> Vec<usize> {
    let n = r.negatives_per_moment.min(pool);
    if r.hard_negatives == 0 {
        return sample(rng, pool, n).into_vec();
    }
    let depth = r.hard_negative_depth.min(pool);
    let hard = r.hard_negatives.min(n).min(depth);
    let mut picked = sample(rng, depth, hard).into_vec();
    let mut chosen = vec![false; pool];
    picked.iter().for_each(|&k| chosen[k] = true);
    let others: Vec<usize> = (0..pool).filter(|&k| !chosen[k]).collect();
    picked.extend(sample(rng, others.len(), n - hard).into_iter().map(|k| others[k]));
    picked
}

/// Per user, the log indices of their outcome events (watch, click, like,
/// dismiss, rating), in order.
fn outcome_index(events: &[Event]) -> HashMap<&str, Vec<u32>> {
    let mut index: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if !matches!(e.kind, EventKind::Impression(_)) {
            index.entry(e.user.as_str()).or_default().push(i as u32);
        }
    }
    index
}

/// The first `n` distinct videos `user` watched or clicked at log index
/// `from` or later within `until_ms`, other than the query video and the
/// history (`excluded`: what was being watched when the list was shown, whose
/// own watch a log may record after the list, and re-watches, which the
/// pipeline never proposes), with everything they did with each in that
/// window; and every further video watched or clicked in the window, which
/// is then neither a positive nor a negative.
fn next_videos<'e>(
    events: &'e [Event],
    outcomes: &[u32],
    from: usize,
    until_ms: i64,
    n: usize,
    excluded: &std::collections::HashSet<&VideoId, watchnext_core::catalog::FastHash>,
) -> (Vec<(&'e VideoId, Outcome)>, std::collections::HashSet<&'e VideoId>) {
    let start = outcomes.partition_point(|&i| (i as usize) < from);
    let mut found: Vec<(&VideoId, Outcome)> = Vec::new();
    let mut later: std::collections::HashSet<&VideoId> = std::collections::HashSet::new();
    let window = outcomes[start..].iter().map(|&i| &events[i as usize]).take_while(|e| e.timestamp_ms <= until_ms);
    for e in window.filter(|e| !excluded.contains(&e.video)) {
        let slot = found.iter().position(|(v, _)| **v == e.video);
        let engaged = matches!(e.kind, EventKind::Watch { .. } | EventKind::Click);
        let k = match slot {
            Some(k) => k,
            None if engaged && found.len() < n => {
                found.push((&e.video, Outcome::default()));
                found.len() - 1
            }
            None => {
                if engaged {
                    later.insert(&e.video);
                }
                continue;
            }
        };
        let o = &mut found[k].1;
        match e.kind {
            EventKind::Click => o.click = true,
            EventKind::Watch { seconds_watched, video_duration_seconds } => {
                o.click = true;
                o.watch_seconds += seconds_watched.max(0.0);
                if video_duration_seconds > 0.0 {
                    o.duration = video_duration_seconds;
                }
            }
            EventKind::Like => o.like = true,
            EventKind::Dismiss => o.dismiss = true,
            EventKind::Rating { value } => o.rating = Some(value),
            EventKind::Impression(_) => {}
        }
    }
    (found, later)
}

/// Builds the examples of `events` (time ordered) by replaying `serving`
/// over them; see the module documentation. `from_ms` is the end of the
/// warm-up ([`warmup_end_ms`]); the caller has trained the sequence
/// generator's model (if any) on the events before it.
pub fn examples(
    events: &[Event],
    catalog: &Catalog,
    serving: &Serving,
    config: &TrainerConfig,
    from_ms: i64,
    source: String,
    progress: bool,
) -> Result<(Examples, DatasetSummary), DatasetError> {
    let started = std::time::Instant::now();
    let schema = FeatureSchema::new(config.features).map_err(DatasetError::Config)?;
    let r = &config.replay;
    let requests = events.iter().any(|e| matches!(e.kind, EventKind::Impression(_)) && !e.request_id.is_empty());
    // Moments after the warm-up, per user: a user with many moments keeps
    // each with probability `max_moments_per_user / n`, so that heavy users
    // do not decide alone what the model learns about everyone; then all
    // are thinned to `max_moments`.
    let mut per_user: HashMap<&str, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.timestamp_ms >= from_ms && moment_at(events, i, requests).is_some() {
            *per_user.entry(e.user.as_str()).or_default() += 1;
        }
    }
    let eligible: u64 = per_user.values().sum();
    let user_keep = |user: &str| -> f64 {
        let n = per_user.get(user).copied().unwrap_or(0);
        if r.max_moments_per_user == 0 || n <= r.max_moments_per_user as u64 {
            1.0
        } else {
            r.max_moments_per_user as f64 / n as f64
        }
    };
    let expected: f64 = per_user.keys().map(|u| user_keep(u) * per_user[u] as f64).sum();
    let keep = if expected <= 0.0 { 1.0 } else { (r.max_moments as f64 / expected).min(1.0) };
    let outcomes = outcome_index(events);
    let window_ms = i64::try_from(r.attribution_minutes).unwrap_or(i64::MAX / 60_000).saturating_mul(60_000);
    let mut pit = PointInTime::new(serving, Arc::new(RecentWatches::new(serving.history_len)), r.sync_interval_ms);
    let mut joiner = Joiner::new(JoinOptions { attribution_window_ms: window_ms, ..JoinOptions::default() });
    let mut builder = Builder::new(&schema, catalog, &config.tasks);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7265_706c_6179);
    let mut summary =
        ReplaySummary { from_ms, request_moments: requests, eligible_moments: eligible, ..Default::default() };
    let mut candidate_total = 0u64;
    let bar = progress_bar(
        progress,
        Some(events.len() as u64),
        "{elapsed_precise} replay [{wide_bar}] {pos}/{len} events ({per_sec}) {msg}",
    );

    let mut i = 0;
    let mut emit = |row: TrainingRow| {
        builder.push(row);
        Ok::<(), std::convert::Infallible>(())
    };
    let mut candidate_rows: Vec<TrainingRow> = Vec::new();
    while i < events.len() {
        if i % 8_192 == 0 {
            bar.set_position(i as u64);
            bar.set_message(format!("{} moments", summary.replayed_moments));
        }
        let e = &events[i];
        let moment = moment_at(events, i, requests);
        let Some(list_end) = moment else {
            // Not a moment: an outcome (to the join) or an impression of a
            // request that starts earlier (handled with its moment).
            if !matches!(e.kind, EventKind::Impression(_)) || e.request_id.is_empty() {
                let Ok(()) = joiner.push(e.clone(), &mut emit);
            }
            i += 1;
            continue;
        };
        let shown = i..list_end.unwrap_or(i);
        let replay = e.timestamp_ms >= from_ms && sampled(config.seed, i, keep * user_keep(e.user.as_str()));
        let served: Vec<bool> = events[shown.clone()]
            .iter()
            .map(|s| matches!(&s.kind, EventKind::Impression(imp) if imp.features.as_ref().is_some_and(|f| usable(f, &schema))))
            .collect();
        let any_served = served.iter().any(|s| *s);
        if !replay && !any_served {
            i = shown.end.max(i + 1);
            continue;
        }
        pit.advance(events, i);
        summary.replayed_moments += u64::from(replay);
        let history = pit.history().entries(&e.user);
        let query_video = match &e.kind {
            EventKind::Impression(imp) => imp.query_video.clone(),
            _ => None,
        }
        .or_else(|| history.last().map(|h| h.video.clone()));
        let moment_id = if requests { e.request_id.clone() } else { format!("replay-{i}") };
        let Some(query_video) = query_video else {
            summary.without_query += u64::from(replay);
            for (k, s) in events[shown.clone()].iter().enumerate() {
                if served[k] {
                    summary.served_rows += 1;
                    let Ok(()) = joiner.push(s.clone(), &mut emit);
                }
            }
            i = shown.end.max(i + 1);
            continue;
        };
        let request_id = RequestId::parse("request_id", &moment_id)
            .or_else(|_| RequestId::parse("request_id", &format!("replay-{i}")))
            .map_err(|e| DatasetError::Mismatch(format!("replay request id: {e}")))?;
        let query = Query {
            request_id,
            user: e.user.clone(),
            query_video,
            device: e.device,
            history: History(history),
            context: RequestContext { time_ms: e.timestamp_ms, ..RequestContext::default() },
        };
        let request = RequestFeatures::new(
            &schema,
            catalog,
            &RequestInput {
                user: query.user.as_str(),
                query_video: query.query_video.as_str(),
                device: query.device,
                time_ms: query.context.time_ms,
                utc_offset_minutes: 0,
                history: &query.history.0,
            },
        );
        let features_of = |video: &str, sources: &[Vote]| {
            let mut f = FeatureVector {
                schema_hash: schema.hash().to_owned(),
                dense: vec![0.0; DENSE_LEN],
                sparse: vec![0; SPARSE_LEN],
            };
            request.candidate(catalog, video, sources, &mut f.dense, &mut f.sparse);
            f
        };

        // Served rows are kept as served; the training path recomputes each
        // one to check that it reproduces what the ranker saw.
        let mut listed: Vec<&VideoId> = Vec::new();
        for (k, s) in events[shown.clone()].iter().enumerate() {
            let EventKind::Impression(imp) = &s.kind else { continue };
            if !served[k] {
                continue;
            }
            summary.served_rows += 1;
            listed.push(&s.video);
            let again = features_of(s.video.as_str(), &imp.sources);
            if let Some(logged) = &imp.features {
                summary.served_verified += 1;
                if let Some(problem) = feature_difference(logged, &again) {
                    summary.served_mismatches += 1;
                    if summary.first_mismatch.is_none() {
                        summary.first_mismatch =
                            Some(format!("request {}, video {}: {problem}", s.request_id, s.video));
                    }
                }
            }
            let Ok(()) = joiner.push(s.clone(), &mut emit);
        }
        if !replay {
            i = shown.end.max(i + 1);
            continue;
        }
        let found = pit.candidates(&query, catalog);
        candidate_total += found.merged.len() as u64;
        let provenance: HashMap<&VideoId, &[Vote]> =
            found.merged.iter().map(|m| (&m.video, m.sources.as_slice())).collect();

        // The logged list (other policies' impressions), computed now.
        for (k, s) in events[shown.clone()].iter().enumerate() {
            let EventKind::Impression(imp) = &s.kind else { continue };
            if served[k] || !r.logged_impressions {
                continue;
            }
            summary.logged_rows += 1;
            listed.push(&s.video);
            let sources: &[Vote] =
                if imp.sources.is_empty() { provenance.get(&s.video).copied().unwrap_or(&[]) } else { &imp.sources };
            let mut imp = imp.clone();
            imp.sources = sources.to_vec();
            imp.features = Some(features_of(s.video.as_str(), sources));
            let Ok(()) = joiner.push(Event { kind: EventKind::Impression(imp), ..s.clone() }, &mut emit);
        }

        // What the user went on to watch.
        let after = shown.end.max(i);
        let user_outcomes = outcomes.get(e.user.as_str()).map_or(&[][..], Vec::as_slice);
        let (positives, watched_later) = next_videos(
            events,
            user_outcomes,
            after,
            e.timestamp_ms.saturating_add(window_ms),
            r.next_videos,
            &candidates::excluded(&query),
        );
        if !positives.is_empty() {
            summary.with_positive += 1;
            summary.first_positive_in_candidates += u64::from(provenance.contains_key(positives[0].0));
        }
        let row = |video: &VideoId, sources: Vec<Vote>, features: FeatureVector, o: &Outcome| {
            let duration = if o.duration > 0.0 {
                o.duration
            } else {
                catalog.get(video.as_str()).map_or(0.0, |v| v.duration_seconds)
            };
            TrainingRow {
                timestamp_ms: query.context.time_ms,
                request_id: moment_id.clone(),
                user_id: query.user.as_str().to_owned(),
                video_id: video.as_str().to_owned(),
                query_video_id: Some(query.query_video.as_str().to_owned()),
                device: query.device,
                position: 0,
                sources,
                features: Some(features),
                model_version: String::new(),
                experiment_arm: String::new(),
                propensity: 0.0,
                click: o.click,
                watch_seconds: o.watch_seconds,
                video_duration_seconds: duration,
                watch_fraction: if duration > 0.0 { (o.watch_seconds / duration).clamp(0.0, 1.0) } else { 0.0 },
                like: o.like,
                dismiss: o.dismiss,
                rating: o.rating,
            }
        };
        candidate_rows.clear();
        // Neither the positives nor what the user watched after them in the
        // window can be a negative: they were wanted, only not first.
        let is_positive = |v: &VideoId| positives.iter().any(|(p, _)| *p == v) || watched_later.contains(v);
        for (video, outcome) in &positives {
            if listed.contains(video) {
                continue;
            }
            let sources = provenance.get(video).map(|s| s.to_vec());
            if sources.is_none() && r.negatives == Negatives::Candidates {
                continue;
            }
            let sources = sources.unwrap_or_default();
            let f = features_of(video.as_str(), &sources);
            candidate_rows.push(row(video, sources, f, outcome));
            summary.candidate_positives += 1;
        }
        let negative = Outcome::default();
        match r.negatives {
            Negatives::Candidates => {
                let pool: Vec<&Merged> =
                    found.merged.iter().filter(|m| !is_positive(&m.video) && !listed.contains(&&m.video)).collect();
                let picked = candidate_negatives(&mut rng, pool.len(), r);
                for k in picked {
                    let m = pool[k];
                    let f = features_of(m.video.as_str(), &m.sources);
                    candidate_rows.push(row(&m.video, m.sources.clone(), f, &negative));
                    summary.candidate_negatives += 1;
                }
            }
            Negatives::Random => {
                let videos = catalog.videos();
                let mut tries = 0;
                let mut picked: Vec<usize> = Vec::new();
                while picked.len() < r.negatives_per_moment
                    && tries < 4 * r.negatives_per_moment + 16
                    && !videos.is_empty()
                {
                    tries += 1;
                    let k = rng.random_range(0..videos.len());
                    let id = videos[k].id.as_str();
                    if picked.contains(&k)
                        || id == query.query_video.as_str()
                        || query.history.0.iter().any(|h| h.video.as_str() == id)
                        || positives.iter().any(|(p, _)| p.as_str() == id)
                        || listed.iter().any(|l| l.as_str() == id)
                    {
                        continue;
                    }
                    picked.push(k);
                    let Ok(video) = VideoId::parse("video", id) else { continue };
                    let sources = provenance.get(&video).map(|s| s.to_vec()).unwrap_or_default();
                    let f = features_of(id, &sources);
                    candidate_rows.push(row(&video, sources, f, &negative));
                    summary.candidate_negatives += 1;
                }
            }
        }
        for row in candidate_rows.drain(..) {
            let Ok(()) = emit(row);
        }
        i = shown.end.max(i + 1);
    }
    let Ok(join) = joiner.finish(&mut emit);
    bar.finish_and_clear();
    builder.join = Some(join);
    let computed = summary.logged_rows + summary.candidate_positives + summary.candidate_negatives;
    let (ex, mut data) = builder.finish(source);
    data.logged_features = summary.served_rows;
    data.computed_features = computed;
    data.stale_logged_features = 0;
    data.rows_without_history = 0;
    summary.mean_candidates =
        if summary.replayed_moments > 0 { candidate_total as f64 / summary.replayed_moments as f64 } else { 0.0 };
    summary.seconds = started.elapsed().as_secs_f64();
    if summary.without_query > 0 {
        data.notes.push(format!(
            "{} replayed moments had no query video (a user's first watch) and gave no candidate rows",
            summary.without_query
        ));
    }
    if summary.served_mismatches > 0 {
        data.notes.push(format!(
            "training/serving skew: {} of {} served rows recomputed by the training path differ from the features \
             the ranker logged (first: {}); they are trained on as served",
            summary.served_mismatches,
            summary.served_verified,
            summary.first_mismatch.as_deref().unwrap_or("?")
        ));
    }
    data.replay = Some(summary);
    if data.rows == 0 {
        return Err(DatasetError::Empty {
            path: source_path(&data.source),
            what: format!(
                "{} events but no moment after the warm-up gave a row (too short a log, or no generator answered)",
                events.len()
            ),
        });
    }
    Ok((ex, data))
}

/// How `got` differs from `logged` (bit for bit), `None` when identical.
fn feature_difference(logged: &FeatureVector, got: &FeatureVector) -> Option<String> {
    if logged.schema_hash != got.schema_hash {
        return Some(format!("schema {} logged, {} here", logged.schema_hash, got.schema_hash));
    }
    for (j, (a, b)) in logged.dense.iter().zip(&got.dense).enumerate() {
        if a.to_bits() != b.to_bits() {
            let name = watchnext_core::features::DENSE.get(j).copied().unwrap_or("?");
            return Some(format!("dense `{name}` is {a} logged, {b} recomputed"));
        }
    }
    for (j, (a, b)) in logged.sparse.iter().zip(&got.sparse).enumerate() {
        if a != b {
            let name = watchnext_core::features::SPARSE.get(j).copied().unwrap_or("?");
            return Some(format!("sparse `{name}` is {a} logged, {b} recomputed"));
        }
    }
    (logged.dense.len() != got.dense.len() || logged.sparse.len() != got.sparse.len())
        .then(|| "the widths differ".to_owned())
}

fn source_path(source: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(source)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use watchnext_core::{
        Device, UserId,
        catalog::Video,
        event::{Impression, Source},
        features::DENSE,
        generator::{Candidate, Generated},
        request::HistoryEntry,
    };

    use super::*;

    /// Proposes a fixed list per query video and records, at every call,
    /// how many events it had observed.
    #[derive(Debug, Default)]
    struct Scripted {
        lists: HashMap<String, Vec<(String, f32)>>,
        observed: Mutex<usize>,
        calls: Mutex<Vec<(String, usize)>>,
    }

    impl Generator for Scripted {
        fn source(&self) -> Source {
            Source::Cowatch
        }
        fn generate(&self, query: &Query, max: usize) -> watchnext_core::generator::Generated {
            let seen = *self.observed.lock().unwrap();
            self.calls.lock().unwrap().push((query.query_video.as_str().to_owned(), seen));
            let list = self.lists.get(query.query_video.as_str()).cloned().unwrap_or_default();
            Generated {
                candidates: list
                    .into_iter()
                    .take(max)
                    .map(|(v, score)| Candidate { video: VideoId::parse("v", &v).unwrap(), score })
                    .collect(),
                ..Generated::default()
            }
        }
        fn observe(&self, events: &[Event]) {
            *self.observed.lock().unwrap() += events.len();
        }
    }

    fn catalog() -> Catalog {
        let video = |id: &str, topic: &str| Video {
            id: id.into(),
            title: String::new(),
            topics: vec![topic.into()],
            duration_seconds: 100.0,
            upload_ms: 0,
        };
        Catalog::new(
            ["a", "b", "c", "d", "e", "f", "x", "y"]
                .iter()
                .map(|v| video(v, if *v < "d" { "t1" } else { "t2" }))
                .collect(),
        )
        .unwrap()
    }

    fn event(t: i64, user: &str, video: &str, request: &str, kind: EventKind) -> Event {
        Event {
            timestamp_ms: t,
            request_id: request.into(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Tv,
            kind,
        }
    }

    fn watch(t: i64, user: &str, video: &str) -> Event {
        event(t, user, video, "", EventKind::Watch { seconds_watched: 50.0, video_duration_seconds: 100.0 })
    }

    fn scripted(lists: &[(&str, &[(&str, f32)])]) -> Arc<Scripted> {
        Arc::new(Scripted {
            lists: lists
                .iter()
                .map(|(q, l)| ((*q).to_owned(), l.iter().map(|(v, s)| ((*v).to_owned(), *s)).collect()))
                .collect(),
            ..Scripted::default()
        })
    }

    fn serving(g: &Arc<Scripted>) -> Serving {
        Serving {
            generators: vec![g.clone() as Arc<dyn Generator>],
            per_generator: 10,
            max_candidates: 10,
            history_len: 50,
        }
    }

    fn config(replay: ReplayConfig) -> TrainerConfig {
        TrainerConfig { replay, ..TrainerConfig::default() }
    }

    fn rows_of(ex: &Examples, request: &str) -> Vec<(String, f32)> {
        (0..ex.len)
            .filter(|&i| ex.requests[ex.request[i] as usize] == request)
            .map(|i| (ex.videos[ex.video[i] as usize].clone(), ex.label_row(i)[0]))
            .collect()
    }

    #[test]
    fn watch_moments_see_only_the_past_and_learn_what_came_next() {
        let g = scripted(&[("a", &[("b", 0.9), ("c", 0.8), ("e", 0.7)]), ("b", &[("c", 0.5), ("d", 0.4), ("e", 0.3)])]);
        let events = vec![
            watch(1_000, "u1", "a"),
            watch(2_000, "u1", "b"),
            watch(3_000, "u1", "c"),
            watch(4_000, "u2", "a"),
            watch(5_000, "u2", "e"),
            watch(9_000_000_000, "u1", "d"), // long after c
        ];
        let catalog = catalog();
        let c = config(ReplayConfig { warmup_fraction: 0.0, negatives_per_moment: 10, ..ReplayConfig::default() });
        let (ex, summary) = examples(&events, &catalog, &serving(&g), &c, i64::MIN, "test".into(), false).unwrap();
        let r = summary.replay.clone().unwrap();
        assert!(!r.request_moments);
        // Six watches are six moments; the first watch of u1 and of u2 have no query video.
        assert_eq!((r.eligible_moments, r.replayed_moments, r.without_query), (6, 6, 2));
        // Each call saw exactly the events before its moment (indices 1, 2, 4, 5).
        let calls = g.calls.lock().unwrap().clone();
        assert_eq!(calls, [("a".into(), 1), ("b".into(), 2), ("a".into(), 4), ("c".into(), 5)]);
        // u1 at b (moment before c): c was watched next and is a candidate → positive; d, e negatives.
        let mut at_c = rows_of(&ex, "replay-2");
        at_c.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(at_c, [("c".into(), 1.0), ("d".into(), 0.0), ("e".into(), 0.0)]);
        // u1 at a (before b): b positive, e negative; c, watched after b in
        // the window, is neither (wanted, only not first).
        let mut at_b = rows_of(&ex, "replay-1");
        at_b.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(at_b, [("b".into(), 1.0), ("e".into(), 0.0)]);
        // u1's last moment (before d, long after c): d is its positive, but the query c has no list.
        assert!(rows_of(&ex, "replay-5").is_empty());
        assert_eq!(r.with_positive, 4);
        assert_eq!(r.first_positive_in_candidates, 3);
        assert_eq!((r.candidate_positives, r.candidate_negatives), (3, 5));

        // Features: the shared schema at the moment's time, with the history by the serving rule.
        let i = (0..ex.len)
            .find(|&i| ex.requests[ex.request[i] as usize] == "replay-2" && ex.videos[ex.video[i] as usize] == "c")
            .unwrap();
        let schema = FeatureSchema::default();
        let history = [
            HistoryEntry { video: VideoId::parse("v", "a").unwrap(), watched_at_ms: 1_000, seconds_watched: 50.0 },
            HistoryEntry { video: VideoId::parse("v", "b").unwrap(), watched_at_ms: 2_000, seconds_watched: 50.0 },
        ];
        let input = RequestInput {
            user: "u1",
            query_video: "b",
            device: Device::Tv,
            time_ms: 3_000,
            utc_offset_minutes: 0,
            history: &history,
        };
        let (mut d, mut s) = (vec![0.0; DENSE_LEN], vec![0; SPARSE_LEN]);
        RequestFeatures::new(&schema, &catalog, &input).candidate(
            &catalog,
            "c",
            &[Vote::new(Source::Cowatch, 0.5, 1)],
            &mut d,
            &mut s,
        );
        assert_eq!(ex.dense_row(i), d.as_slice());
        assert_eq!(ex.sparse_row(i), s.as_slice());
        let source = DENSE.iter().position(|n| *n == "score_cowatch").unwrap();
        assert_eq!(ex.dense_row(i)[source], 0.5);
        assert_eq!(ex.position[i], 0, "replayed candidates were never shown");
    }

    #[test]
    fn the_warm_up_and_the_moment_cap_bound_the_examples() {
        let g = scripted(&[("a", &[("b", 1.0), ("c", 0.5)])]);
        let mut events = Vec::new();
        for u in 0..40 {
            let user = format!("u{u}");
            events.push(watch(u * 10, &user, "a"));
            events.push(watch(u * 10 + 1, &user, "b"));
        }
        let catalog = catalog();
        let from = warmup_end_ms(&events, 0.5);
        assert_eq!(from, 200);
        let c = config(ReplayConfig { max_moments: 5, ..ReplayConfig::default() });
        let (ex, summary) = examples(&events, &catalog, &serving(&g), &c, from, "test".into(), false).unwrap();
        let r = summary.replay.unwrap();
        assert_eq!(r.eligible_moments, 40, "the second half's watches");
        assert!(r.replayed_moments >= 1 && r.replayed_moments <= 15, "{r:?}");
        assert!(ex.timestamp_ms.iter().all(|&t| t >= from), "no row from the warm-up");
        // The generator still observed the warm-up before the first replayed moment.
        let calls = g.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|(_, seen)| *seen >= 40), "{calls:?}");
    }

    #[test]
    fn served_impressions_are_kept_as_served_and_checked_against_the_training_path() {
        let g = scripted(&[("a", &[("x", 0.9), ("y", 0.8), ("c", 0.7)])]);
        let catalog = catalog();
        let schema = FeatureSchema::default();
        let served = |t: i64, video: &str, position: u32, features: Option<FeatureVector>| {
            event(
                t,
                "u1",
                video,
                "r1",
                EventKind::Impression(Impression {
                    position,
                    query_video: Some(VideoId::parse("v", "a").unwrap()),
                    sources: vec![Vote::new(Source::Cowatch, 0.9, 1)],
                    features,
                    model_version: "m1".into(),
                    ..Impression::default()
                }),
            )
        };
        // What the server computed for x at t = 2000 after u1 watched a at t = 1000.
        let history =
            [HistoryEntry { video: VideoId::parse("v", "a").unwrap(), watched_at_ms: 1_000, seconds_watched: 50.0 }];
        let input = RequestInput {
            user: "u1",
            query_video: "a",
            device: Device::Tv,
            time_ms: 2_000,
            utc_offset_minutes: 0,
            history: &history,
        };
        let mut good = FeatureVector {
            schema_hash: schema.hash().into(),
            dense: vec![0.0; DENSE_LEN],
            sparse: vec![0; SPARSE_LEN],
        };
        RequestFeatures::new(&schema, &catalog, &input).candidate(
            &catalog,
            "x",
            &[Vote::new(Source::Cowatch, 0.9, 1)],
            &mut good.dense,
            &mut good.sparse,
        );
        let mut bad = good.clone();
        bad.dense[DENSE.iter().position(|n| *n == "history_log_len").unwrap()] += 1.0;
        let events = vec![
            watch(1_000, "u1", "a"),
            served(2_000, "x", 1, Some(good.clone())),
            served(2_000, "y", 2, Some(bad.clone())),
            event(2_500, "u1", "y", "r1", EventKind::Click),
            event(2_600, "u1", "y", "r1", EventKind::Watch { seconds_watched: 80.0, video_duration_seconds: 100.0 }),
        ];
        let c = config(ReplayConfig { warmup_fraction: 0.0, ..ReplayConfig::default() });
        let (ex, summary) = examples(&events, &catalog, &serving(&g), &c, i64::MIN, "test".into(), false).unwrap();
        let r = summary.replay.clone().unwrap();
        assert_eq!((r.served_rows, r.served_verified, r.served_mismatches), (2, 2, 1));
        assert!(r.first_mismatch.as_deref().unwrap().contains("history_log_len"), "{r:?}");
        assert!(summary.notes.iter().any(|n| n.contains("training/serving skew")), "{:?}", summary.notes);
        // Served rows keep the logged features and positions, with the join's labels;
        // the shown videos are not candidate rows again: only c is.
        let mut rows = rows_of(&ex, "r1");
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(rows, [("c".into(), 0.0), ("x".into(), 0.0), ("y".into(), 1.0)]);
        let x = (0..ex.len).find(|&i| ex.videos[ex.video[i] as usize] == "x").unwrap();
        assert_eq!((ex.dense_row(x), ex.position[x]), (good.dense.as_slice(), 1));
        let y = (0..ex.len).find(|&i| ex.videos[ex.video[i] as usize] == "y").unwrap();
        assert_eq!((ex.dense_row(y), ex.position[y]), (bad.dense.as_slice(), 2));
    }

    #[test]
    fn logged_impressions_of_another_policy_are_rows_only_when_asked() {
        let g = scripted(&[("a", &[("c", 0.9), ("x", 0.5)])]);
        let catalog = catalog();
        let shown = |video: &str, position: u32| {
            event(
                2_000,
                "u1",
                video,
                "r1",
                EventKind::Impression(Impression {
                    position,
                    query_video: Some(VideoId::parse("v", "a").unwrap()),
                    ..Impression::default()
                }),
            )
        };
        let events = vec![
            watch(1_000, "u1", "a"),
            shown("x", 1),
            shown("y", 2),
            event(2_100, "u1", "x", "r1", EventKind::Watch { seconds_watched: 10.0, video_duration_seconds: 100.0 }),
        ];
        for logged in [false, true] {
            let c =
                config(ReplayConfig { warmup_fraction: 0.0, logged_impressions: logged, ..ReplayConfig::default() });
            let (ex, summary) = examples(&events, &catalog, &serving(&g), &c, i64::MIN, "test".into(), false).unwrap();
            let mut rows = rows_of(&ex, "r1");
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let r = summary.replay.unwrap();
            if logged {
                // x and y as shown (positions, join labels); c as a candidate.
                assert_eq!(rows, [("c".into(), 0.0), ("x".into(), 1.0), ("y".into(), 0.0)]);
                assert_eq!(r.logged_rows, 2);
                let x = (0..ex.len).find(|&i| ex.videos[ex.video[i] as usize] == "x").unwrap();
                assert_eq!(ex.position[x], 1);
                // Provenance of a logged impression without its own: the replayed candidate's.
                let src = DENSE.iter().position(|n| *n == "score_cowatch").unwrap();
                assert_eq!(ex.dense_row(x)[src], 0.5);
            } else {
                // Only candidates: x (watched next) and c; y was never a candidate.
                assert_eq!(rows, [("c".into(), 0.0), ("x".into(), 1.0)]);
                assert_eq!(r.logged_rows, 0);
                assert!(ex.position.iter().all(|&p| p == 0));
            }
        }
    }

    #[test]
    fn hard_negatives_come_from_the_top_of_the_fused_order_and_the_rest_from_all() {
        let r = |hard, depth| ReplayConfig {
            negatives_per_moment: 20,
            hard_negatives: hard,
            hard_negative_depth: depth,
            ..ReplayConfig::default()
        };
        // Without hard negatives the draw is the plain uniform sample, as before the option existed.
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(candidate_negatives(&mut a, 500, &r(0, 50)), sample(&mut b, 500, 20).into_vec());
        let mut top_share = 0usize;
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let picked = candidate_negatives(&mut rng, 500, &r(10, 30));
            assert_eq!(picked.len(), 20);
            let mut distinct = picked.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 20, "a candidate drawn twice: {picked:?}");
            assert!(picked.iter().all(|&k| k < 500));
            assert!(picked[..10].iter().all(|&k| k < 30), "hard ones outside the top 30: {picked:?}");
            top_share += picked[10..].iter().filter(|&&k| k < 30).count();
        }
        // The other ten are uniform over the 490 left: about 20 of 50 × 10 land in the top 30, not all.
        assert!(top_share < 100, "the uniform part favours the top: {top_share}");
        // A pool smaller than asked: every candidate once.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut all = candidate_negatives(&mut rng, 12, &r(10, 30));
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }
}
