//! Training examples: labelled impressions as columnar, in-memory arrays,
//! in impression time order, with their features built by the shared schema
//! (`watchnext_core::features`) exactly as the ranker will build them.
//!
//! # From a data folder ([`from_data_dir`])
//! One streaming pass over the feedback log, in log (= time) order:
//! - every `Watch` event (organic or answering a list) is appended to its
//!   user's recent history, a ring of the last `features.history_window`
//!   watches (what the schema reads: older ones never matter);
//! - every impression with a request id gets its features: the ones the
//!   live ranker logged with it when their schema hash and widths are this
//!   schema's (the exact serving values, so no training/serving skew);
//!   otherwise they are computed by the schema from the request (user, query
//!   video, device, time) and the user's history **as of that event** —
//!   watches logged later, including the watch the impression itself led
//!   to, are not seen (point-in-time correctness). The per-request part is
//!   computed once per request (a request's impressions are consecutive);
//! - the event goes through the data layer's [`Joiner`] (default
//!   [`JoinOptions`], as `watchnext export training-rows`), whose rows carry
//!   the features and the labels; rows leave it in impression order.
//!
//! Events carry no UTC offset, so time-of-day features are computed in UTC
//! (offset 0) — as the synthetic world, which simulates UTC clocks, asks.
//!
//! # From exported training rows ([`from_parquet`], [`Examples::from_rows`])
//! Logged features are kept when they match; other rows get features
//! computed with an **empty history** (a training-row file carries none), and
//! the summary says how many.
//!
//! # Labels
//! One column per task, from [`TaskConfig::label`] through its
//! [`Transform`]. `mask` is 1 where the label is observed: always, except
//! for `rating` (only rated rows) and non-finite values. A task whose
//! observed label never varies over the whole data (watch time on a data set
//! without watch times, a task with no observation at all) has nothing to
//! learn: its mask is all zero and the summary has a note saying so.
//!
//! # Order and splits
//! Rows are in time order. Should the source not be (client clocks), rows
//! are sorted by their request's first timestamp, keeping the rows of one
//! request together and in their original order; the summary notes it.
//! [`split_by_time`] cuts train / validation / test in that order.

use std::{
    collections::HashMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use watchnext_core::{
    catalog::{Catalog, CatalogError},
    datadir::DataDir,
    event::{EventKind, FeatureVector, SOURCES},
    features::{DENSE_LEN, FeatureSchema, RequestFeatures, RequestInput, SPARSE_LEN},
    history::RecentWatches,
    model::TaskKind,
};
use watchnext_feedback::{
    ExportError, JoinOptions, JoinSummary, Joiner, LogError, LogReader, TrainingRow,
    parquet::{READ_BATCH_ROWS, TrainingRowReader},
};

use crate::config::{Label, TaskConfig, TrainerConfig};

/// Columnar examples, `len` rows, time ordered.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    pub len: usize,
    /// Task names, in `labels`/`mask` column order.
    pub tasks: Vec<String>,
    /// `len × DENSE_LEN`, row-major.
    pub dense: Vec<f32>,
    /// `len × SPARSE_LEN`, row-major.
    pub sparse: Vec<i64>,
    /// `len × tasks`: the (transformed) label of each task.
    pub labels: Vec<f32>,
    /// `len × tasks`: 1 where the label is observed, 0 where it is not
    /// (e.g. no rating given).
    pub mask: Vec<f32>,
    /// 1-based position the impression was shown at.
    pub position: Vec<u32>,
    /// `Device::index()` of the request.
    pub device: Vec<u8>,
    /// Index into `watchnext_core::event::SOURCES` of the first generator
    /// that proposed the candidate (0 = unspecified).
    pub source: Vec<u8>,
    /// Impression time (Unix epoch ms).
    pub timestamp_ms: Vec<i64>,
    /// Index into `users` / `videos` (for evaluation against ground truth and
    /// per-request metrics).
    pub user: Vec<u32>,
    pub video: Vec<u32>,
    /// Index into `requests` (rows of one shown list share it).
    pub request: Vec<u32>,
    pub users: Vec<String>,
    pub videos: Vec<String>,
    pub requests: Vec<String>,
}

impl Examples {
    /// No rows, with these task columns.
    pub fn new(tasks: Vec<String>) -> Self {
        Self { tasks, ..Self::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn dense_row(&self, i: usize) -> &[f32] {
        &self.dense[i * DENSE_LEN..(i + 1) * DENSE_LEN]
    }

    pub fn sparse_row(&self, i: usize) -> &[i64] {
        &self.sparse[i * SPARSE_LEN..(i + 1) * SPARSE_LEN]
    }

    /// The labels of row `i`, one per task.
    pub fn label_row(&self, i: usize) -> &[f32] {
        let t = self.tasks.len();
        &self.labels[i * t..(i + 1) * t]
    }

    /// The mask of row `i`, one per task.
    pub fn mask_row(&self, i: usize) -> &[f32] {
        let t = self.tasks.len();
        &self.mask[i * t..(i + 1) * t]
    }

    /// Rows `range` (in order) as examples of their own. The `users`,
    /// `videos` and `requests` tables are copied whole, so indices keep
    /// their meaning.
    ///
    /// # Panics
    /// If `range` is not within `0..len` (as slicing does).
    pub fn subset(&self, range: Range<usize>) -> Examples {
        let t = self.tasks.len();
        let Range { start, end } = range;
        Examples {
            len: end - start,
            tasks: self.tasks.clone(),
            dense: self.dense[start * DENSE_LEN..end * DENSE_LEN].to_vec(),
            sparse: self.sparse[start * SPARSE_LEN..end * SPARSE_LEN].to_vec(),
            labels: self.labels[start * t..end * t].to_vec(),
            mask: self.mask[start * t..end * t].to_vec(),
            position: self.position[start..end].to_vec(),
            device: self.device[start..end].to_vec(),
            source: self.source[start..end].to_vec(),
            timestamp_ms: self.timestamp_ms[start..end].to_vec(),
            user: self.user[start..end].to_vec(),
            video: self.video[start..end].to_vec(),
            request: self.request[start..end].to_vec(),
            users: self.users.clone(),
            videos: self.videos.clone(),
            requests: self.requests.clone(),
        }
    }

    /// The rows at `rows`, in that order (a permutation, a sample, a batch).
    /// Tables are copied whole, as in [`Examples::subset`].
    ///
    /// # Panics
    /// If an index is `>= len`.
    pub fn select(&self, rows: &[usize]) -> Examples {
        let t = self.tasks.len();
        let mut out = Examples {
            len: rows.len(),
            tasks: self.tasks.clone(),
            dense: Vec::with_capacity(rows.len() * DENSE_LEN),
            sparse: Vec::with_capacity(rows.len() * SPARSE_LEN),
            labels: Vec::with_capacity(rows.len() * t),
            mask: Vec::with_capacity(rows.len() * t),
            users: self.users.clone(),
            videos: self.videos.clone(),
            requests: self.requests.clone(),
            ..Examples::default()
        };
        for &i in rows {
            out.dense.extend_from_slice(self.dense_row(i));
            out.sparse.extend_from_slice(self.sparse_row(i));
            out.labels.extend_from_slice(self.label_row(i));
            out.mask.extend_from_slice(self.mask_row(i));
        }
        out.position = rows.iter().map(|&i| self.position[i]).collect();
        out.device = rows.iter().map(|&i| self.device[i]).collect();
        out.source = rows.iter().map(|&i| self.source[i]).collect();
        out.timestamp_ms = rows.iter().map(|&i| self.timestamp_ms[i]).collect();
        out.user = rows.iter().map(|&i| self.user[i]).collect();
        out.video = rows.iter().map(|&i| self.video[i]).collect();
        out.request = rows.iter().map(|&i| self.request[i]).collect();
        out
    }

    /// Appends `other`'s rows after this one's, re-indexing its users,
    /// videos and requests into this one's tables. The task columns must be
    /// the same. (The result is in time order only if `other` starts after
    /// `self` ends.)
    pub fn append(&mut self, other: &Examples) -> Result<(), DatasetError> {
        if self.tasks != other.tasks {
            return Err(DatasetError::Mismatch(format!(
                "the task columns differ ({:?} vs {:?})",
                self.tasks, other.tasks
            )));
        }
        let remap = |table: &mut Vec<String>, theirs: &[String]| -> Result<Vec<u32>, DatasetError> {
            let mut index: HashMap<&str, u32> = HashMap::with_capacity(table.len());
            for (i, s) in table.iter().enumerate() {
                index.insert(s.as_str(), i as u32);
            }
            let mut added = Vec::new();
            let mut map = Vec::with_capacity(theirs.len());
            let mut next = table.len();
            for s in theirs {
                let i = match index.get(s.as_str()) {
                    Some(&i) => i,
                    None => {
                        let i = u32::try_from(next)
                            .map_err(|_| DatasetError::Mismatch("more than 4 billion distinct ids".into()))?;
                        index.insert(s.as_str(), i);
                        added.push(s.clone());
                        next += 1;
                        i
                    }
                };
                map.push(i);
            }
            drop(index);
            table.extend(added);
            Ok(map)
        };
        let users = remap(&mut self.users, &other.users)?;
        let videos = remap(&mut self.videos, &other.videos)?;
        let requests = remap(&mut self.requests, &other.requests)?;
        self.len += other.len;
        self.dense.extend_from_slice(&other.dense);
        self.sparse.extend_from_slice(&other.sparse);
        self.labels.extend_from_slice(&other.labels);
        self.mask.extend_from_slice(&other.mask);
        self.position.extend_from_slice(&other.position);
        self.device.extend_from_slice(&other.device);
        self.source.extend_from_slice(&other.source);
        self.timestamp_ms.extend_from_slice(&other.timestamp_ms);
        self.user.extend(other.user.iter().map(|&u| users[u as usize]));
        self.video.extend(other.video.iter().map(|&v| videos[v as usize]));
        self.request.extend(other.request.iter().map(|&r| requests[r as usize]));
        Ok(())
    }

    /// Examples from training rows in memory (tests, other producers): as
    /// [`from_parquet`] does for a file — logged features when they match the
    /// schema, otherwise computed with an empty history.
    pub fn from_rows(
        rows: impl IntoIterator<Item = TrainingRow>,
        catalog: &Catalog,
        config: &TrainerConfig,
    ) -> Result<(Examples, DatasetSummary), DatasetError> {
        let schema = FeatureSchema::new(config.features).map_err(DatasetError::Config)?;
        let mut builder = Builder::new(&schema, catalog, &config.tasks);
        for row in rows {
            builder.push(row);
        }
        let (ex, mut summary) = builder.finish("training rows in memory".into());
        parquet_notes(&mut summary);
        Ok((ex, summary))
    }
}

/// What a loaded data set holds; serialisable for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DatasetSummary {
    /// What was read (the data folder or the file).
    pub source: String,
    pub rows: usize,
    /// Time of the first and last row (Unix epoch ms); `None` without rows.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub users: usize,
    pub videos: usize,
    pub requests: usize,
    pub tasks: Vec<TaskSummary>,
    /// Rows whose features are the ones logged with the impression.
    pub logged_features: u64,
    /// Rows whose features were computed by the schema.
    pub computed_features: u64,
    /// Of the computed ones: rows that carried logged features of another
    /// schema (hash or widths differ, or values out of range).
    pub stale_logged_features: u64,
    /// Of the computed ones: rows computed with an empty user history.
    pub rows_without_history: u64,
    /// The join's counts (data folders only).
    pub join: Option<JoinSummary>,
    /// Damaged parts of the log the reader skipped.
    pub log_problems: usize,
    /// The source was not in time order and rows were sorted.
    pub reordered: bool,
    /// What the point-in-time replay did (replayed examples only).
    pub replay: Option<crate::replay::ReplaySummary>,
    /// What a reader should know (masked tasks, skipped data…).
    pub notes: Vec<String>,
}

/// One task's column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    pub name: String,
    pub label: &'static str,
    pub kind: TaskKind,
    /// Rows where the label is observed (before masking a constant task).
    pub observed: u64,
    /// Binary tasks: observed rows with label 1.
    pub positives: Option<u64>,
    /// Mean observed (transformed) label; the positive rate of a binary task.
    pub mean: Option<f64>,
    /// False when the label never varies: the mask is then all zero.
    pub trainable: bool,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} rows ({} users, {} videos, {} requests)",
            self.source, self.rows, self.users, self.videos, self.requests
        )?;
        if let (Some(first), Some(last)) = (self.first_ms, self.last_ms) {
            write!(f, ", impressions from {first} to {last} ms ({:.1} days)", (last - first) as f64 / 86_400_000.0)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "features: {} logged, {} computed ({} replacing another schema's, {} without history)",
            self.logged_features, self.computed_features, self.stale_logged_features, self.rows_without_history
        )?;
        if let Some(j) = &self.join {
            writeln!(
                f,
                "join: {} events, {} impressions, {} outcomes matched, {} unmatched, {} organic, {} evicted",
                j.events, j.impressions, j.matched_outcomes, j.unmatched_outcomes, j.organic_events, j.evicted
            )?;
        }
        if let Some(r) = &self.replay {
            writeln!(
                f,
                "replay: {} of {} moments after the warm-up replayed ({} by request), {:.0} candidates each, first \
                 positive among them in {} of {} moments; rows: {} candidate positives, {} candidate negatives, {} \
                 served, {} logged ({:.1}s)",
                r.replayed_moments,
                r.eligible_moments,
                if r.request_moments { "moments are requests" } else { "moments are watches" },
                r.mean_candidates,
                r.first_positive_in_candidates,
                r.with_positive,
                r.candidate_positives,
                r.candidate_negatives,
                r.served_rows,
                r.logged_rows,
                r.seconds
            )?;
        }
        for t in &self.tasks {
            write!(f, "task {} ({}): {} observed", t.name, t.label, t.observed)?;
            if let Some(p) = t.positives {
                write!(f, ", {p} positive")?;
            }
            if let Some(m) = t.mean {
                write!(f, ", mean {m:.4}")?;
            }
            writeln!(f, "{}", if t.trainable { "" } else { " (masked out)" })?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// Why examples could not be loaded; every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("trainer.features: {0}")]
    Config(String),

    #[error(
        "data folder {path} does not exist or is not a folder; fill it first (`watchnext world generate` or \
         `watchnext import ...`) or give the right --data-dir"
    )]
    NoDataDir { path: PathBuf },

    #[error("{path}: the data folder has no feedback log; generate or import data first")]
    NoFeedbackLog { path: PathBuf },

    #[error("reading the catalogue: {0}")]
    Catalog(#[from] CatalogError),

    #[error("reading the feedback log {path}: {source}")]
    Log { path: PathBuf, source: LogError },

    #[error("reading training rows: {0}")]
    TrainingRows(#[from] ExportError),

    #[error("{path}: {what}; there is nothing to learn from")]
    Empty { path: PathBuf, what: String },

    #[error("examples do not fit together: {0}")]
    Mismatch(String),
}

/// Loads every labelled impression of a data folder's feedback log (see the
/// module documentation). With `progress`, a progress line is drawn on
/// stderr when it is a terminal.
pub fn from_data_dir(
    dir: &Path,
    config: &TrainerConfig,
    history_len: usize,
    progress: bool,
) -> Result<(Examples, DatasetSummary), DatasetError> {
    let schema = FeatureSchema::new(config.features).map_err(DatasetError::Config)?;
    if !dir.is_dir() {
        return Err(DatasetError::NoDataDir { path: dir.to_path_buf() });
    }
    let data = DataDir::new(dir);
    let catalog = Catalog::read(&data.catalog())?;
    let log_dir = data.feedback_log();
    if !log_dir.is_dir() {
        return Err(DatasetError::NoFeedbackLog { path: log_dir });
    }
    let log_error = |source| DatasetError::Log { path: log_dir.clone(), source };
    let mut reader = LogReader::open(&log_dir, 1).map_err(log_error)?;

    let bar = progress_bar(progress, None, "{elapsed_precise} {spinner} {human_pos} events read, {msg} ({per_sec})");
    // Histories are rebuilt by the serving store's own rule (re-watches move
    // to the end), `history_len` deep as the recommender keeps them.
    let histories = RecentWatches::new(history_len.max(1));
    let mut joiner = Joiner::new(JoinOptions::default());
    let mut builder = Builder::new(&schema, &catalog, &config.tasks);
    let mut cache: Option<RequestCache<'_>> = None;
    let (mut logged, mut computed, mut stale, mut no_history) = (0u64, 0u64, 0u64, 0u64);
    let mut events = 0u64;
    let join = {
        let mut emit = |row: TrainingRow| {
            builder.push(row);
            Ok::<(), std::convert::Infallible>(())
        };
        for item in reader.by_ref() {
            let (_, mut event) = item.map_err(log_error)?;
            events += 1;
            if events.is_multiple_of(1 << 16) {
                bar.set_position(events);
                bar.set_message(format!("{} rows", logged + computed));
            }
            match &mut event.kind {
                EventKind::Watch { .. } => histories.observe(std::slice::from_ref(&event)),
                // Organic impressions answer no request: the join skips them.
                EventKind::Impression(imp) if !event.request_id.is_empty() => match &imp.features {
                    Some(f) if usable(f, &schema) => logged += 1,
                    other => {
                        stale += u64::from(other.is_some());
                        computed += 1;
                        no_history += u64::from(histories.count(&event.user) == 0);
                        let user = event.user.as_str();
                        let request = RequestCache::get(&mut cache, &event.request_id, user, || {
                            let history = histories.entries(&event.user);
                            let input = RequestInput {
                                user,
                                query_video: imp.query_video.as_ref().map_or("", |v| v.as_str()),
                                device: event.device,
                                time_ms: event.timestamp_ms,
                                utc_offset_minutes: 0,
                                history: &history,
                            };
                            RequestFeatures::new(&schema, &catalog, &input)
                        });
                        let mut features = FeatureVector {
                            schema_hash: schema.hash().to_owned(),
                            dense: vec![0.0; DENSE_LEN],
                            sparse: vec![0; SPARSE_LEN],
                        };
                        request.candidate(
                            &catalog,
                            event.video.as_str(),
                            &imp.sources,
                            &mut features.dense,
                            &mut features.sparse,
                        );
                        imp.features = Some(features);
                    }
                },
                _ => {}
            }
            let Ok(()) = joiner.push(event, &mut emit);
        }
        let Ok(join) = joiner.finish(&mut emit);
        join
    };
    bar.finish_and_clear();
    builder.join = Some(join);

    let problems = reader.problems();
    let (ex, mut summary) = builder.finish(data.root().display().to_string());
    summary.logged_features = logged;
    summary.computed_features = computed;
    summary.stale_logged_features = stale;
    summary.rows_without_history = no_history;
    summary.log_problems = problems.len();
    if let Some(first) = problems.first() {
        summary.notes.push(format!(
            "the log reader skipped {} damaged part(s) of the log; the first: {} at byte {}: {}",
            problems.len(),
            first.segment.display(),
            first.offset,
            first.problem
        ));
    }
    if let Some(j) = summary.join
        && j.evicted > 0
    {
        summary.notes.push(format!(
            "{} rows left the join before their attribution window closed (pending cap); their labels may be \
             incomplete",
            j.evicted
        ));
    }
    if summary.rows == 0 {
        return Err(DatasetError::Empty {
            path: log_dir.clone(),
            what: format!("{events} events but no impression with a request id"),
        });
    }
    tracing::info!(rows = summary.rows, logged, computed, "loaded training examples from {}", dir.display());
    Ok((ex, summary))
}

/// Loads a training-row file written by `watchnext export training-rows`
/// (`watchnext_feedback::parquet`); see the module documentation.
pub fn from_parquet(
    path: &Path,
    catalog: &Catalog,
    config: &TrainerConfig,
) -> Result<(Examples, DatasetSummary), DatasetError> {
    let schema = FeatureSchema::new(config.features).map_err(DatasetError::Config)?;
    let reader = TrainingRowReader::open(path, READ_BATCH_ROWS)?;
    let mut builder = Builder::new(&schema, catalog, &config.tasks);
    builder.reserve(usize::try_from(reader.num_rows()).unwrap_or(0));
    for batch in reader {
        for row in batch? {
            builder.push(row);
        }
    }
    let (ex, mut summary) = builder.finish(path.display().to_string());
    if ex.is_empty() {
        return Err(DatasetError::Empty { path: path.to_path_buf(), what: "the file holds no rows".into() });
    }
    parquet_notes(&mut summary);
    Ok((ex, summary))
}

fn parquet_notes(summary: &mut DatasetSummary) {
    if summary.rows_without_history > 0 {
        summary.notes.push(format!(
            "features of {} rows were computed with an empty user history (training rows carry none): their \
             history features are those of a new user",
            summary.rows_without_history
        ));
    }
}

/// Cuts `ex` (time ordered) into train / validation / test, in that order.
///
/// The last `test_fraction` of the rows is the test set and the
/// `validation_fraction` before it the validation set (fractions of rows,
/// rounded; clamped to `0..=1`). Each cut is then moved **forward** (later)
/// to the first row boundary that no request crosses — every request whose
/// rows start before the cut also ends before it — so the rows of one shown
/// list are always in one part (per-request metrics need whole lists, and a
/// list must not leak into training). Parts may therefore be a little
/// smaller than asked for the later sets; any of them may be empty.
pub fn split_by_time(ex: &Examples, validation_fraction: f64, test_fraction: f64) -> (Examples, Examples, Examples) {
    let n = ex.len;
    let frac = |f: f64| if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.0 };
    let rows_of = |f: f64| ((n as f64 * frac(f)).round() as usize).min(n);
    let test_start = n - rows_of(test_fraction);
    let val_start = test_start.saturating_sub(rows_of(validation_fraction));
    let safe = safe_cuts(ex);
    let forward = |c: usize| (c..=n).find(|&c| safe[c]).unwrap_or(n);
    let val_start = forward(val_start);
    let test_start = forward(test_start.max(val_start));
    (ex.subset(0..val_start), ex.subset(val_start..test_start), ex.subset(test_start..n))
}

/// `safe[c]` (for `c` in `0..=len`): no request has rows both before and at
/// or after `c`.
fn safe_cuts(ex: &Examples) -> Vec<bool> {
    let mut last = vec![0usize; ex.requests.len()];
    for (i, &r) in ex.request.iter().enumerate() {
        last[r as usize] = i;
    }
    let mut safe = Vec::with_capacity(ex.len + 1);
    safe.push(true);
    let mut reach = 0usize;
    for (i, &r) in ex.request.iter().enumerate() {
        reach = reach.max(last[r as usize]);
        safe.push(reach <= i);
    }
    safe
}

pub(crate) fn progress_bar(progress: bool, len: Option<u64>, template: &str) -> ProgressBar {
    let bar =
        if progress { ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Logged features this schema can use as they are.
pub(crate) fn usable(f: &FeatureVector, schema: &FeatureSchema) -> bool {
    f.schema_hash == schema.hash()
        && f.dense.len() == DENSE_LEN
        && f.sparse.len() == SPARSE_LEN
        && f.dense.iter().all(|v| v.is_finite())
        && f.sparse.iter().zip(schema.sparse_buckets()).all(|(&v, b)| (0..i64::from(b)).contains(&v))
}

/// The per-request features of the request being processed.
pub(crate) struct RequestCache<'s> {
    request: String,
    user: String,
    features: RequestFeatures<'s>,
}

impl<'s> RequestCache<'s> {
    /// The cached features when `slot` holds this request, else `build`'s.
    pub(crate) fn get<'c>(
        slot: &'c mut Option<Self>,
        request: &str,
        user: &str,
        build: impl FnOnce() -> RequestFeatures<'s>,
    ) -> &'c RequestFeatures<'s> {
        let hit = slot.as_ref().is_some_and(|c| c.request == request && c.user == user);
        if !hit {
            *slot = None;
        }
        let cached =
            slot.get_or_insert_with(|| Self { request: request.to_owned(), user: user.to_owned(), features: build() });
        &cached.features
    }
}

#[derive(Debug, Clone, Copy)]
struct TaskStats {
    observed: u64,
    positives: u64,
    sum: f64,
    min: f32,
    max: f32,
}

/// The raw label of a row, `None` when unobserved.
fn raw_label(row: &TrainingRow, label: Label) -> Option<f32> {
    let flag = |b: bool| Some(f32::from(u8::from(b)));
    match label {
        Label::Click => flag(row.click),
        Label::WatchSeconds => Some(row.watch_seconds),
        Label::WatchFraction => Some(row.watch_fraction),
        Label::Like => flag(row.like),
        Label::Dismiss => flag(row.dismiss),
        Label::Rating => row.rating,
    }
}

/// Interns a string, moving it into the table only when it is new.
fn intern(index: &mut HashMap<String, u32>, table: &mut Vec<String>, value: String) -> u32 {
    if let Some(&i) = index.get(value.as_str()) {
        return i;
    }
    let i = table.len() as u32;
    index.insert(value.clone(), i);
    table.push(value);
    i
}

/// Appends rows to columns.
pub(crate) struct Builder<'s> {
    schema: &'s FeatureSchema,
    catalog: &'s Catalog,
    tasks: Vec<TaskConfig>,
    ex: Examples,
    user_index: HashMap<String, u32>,
    video_index: HashMap<String, u32>,
    request_index: HashMap<String, u32>,
    stats: Vec<TaskStats>,
    /// Rows whose features were taken from the row.
    kept: u64,
    /// Rows whose features were computed here (with an empty history).
    computed: u64,
    /// Of those, rows that carried unusable features.
    stale: u64,
    /// Labels that were not finite (treated as unobserved).
    bad_labels: u64,
    cache: Option<RequestCache<'s>>,
    pub(crate) join: Option<JoinSummary>,
}

impl<'s> Builder<'s> {
    pub(crate) fn new(schema: &'s FeatureSchema, catalog: &'s Catalog, tasks: &[TaskConfig]) -> Self {
        let stats = TaskStats { observed: 0, positives: 0, sum: 0.0, min: f32::INFINITY, max: f32::NEG_INFINITY };
        Self {
            schema,
            catalog,
            tasks: tasks.to_vec(),
            ex: Examples::new(tasks.iter().map(|t| t.name.clone()).collect()),
            user_index: HashMap::new(),
            video_index: HashMap::new(),
            request_index: HashMap::new(),
            stats: vec![stats; tasks.len()],
            kept: 0,
            computed: 0,
            stale: 0,
            bad_labels: 0,
            cache: None,
            join: None,
        }
    }

    fn reserve(&mut self, rows: usize) {
        let ex = &mut self.ex;
        let t = self.tasks.len();
        ex.dense.reserve(rows * DENSE_LEN);
        ex.sparse.reserve(rows * SPARSE_LEN);
        ex.labels.reserve(rows * t);
        ex.mask.reserve(rows * t);
    }

    pub(crate) fn push(&mut self, row: TrainingRow) {
        let ex = &mut self.ex;
        match row.features.as_ref().filter(|f| usable(f, self.schema)) {
            Some(f) => {
                ex.dense.extend_from_slice(&f.dense);
                ex.sparse.extend_from_slice(&f.sparse);
                self.kept += 1;
            }
            None => {
                self.stale += u64::from(row.features.is_some());
                self.computed += 1;
                let (schema, catalog) = (self.schema, self.catalog);
                let request = RequestCache::get(&mut self.cache, &row.request_id, &row.user_id, || {
                    let input = RequestInput {
                        user: &row.user_id,
                        query_video: row.query_video_id.as_deref().unwrap_or(""),
                        device: row.device,
                        time_ms: row.timestamp_ms,
                        utc_offset_minutes: 0,
                        history: &[],
                    };
                    RequestFeatures::new(schema, catalog, &input)
                });
                let (d, s) = (ex.dense.len(), ex.sparse.len());
                ex.dense.resize(d + DENSE_LEN, 0.0);
                ex.sparse.resize(s + SPARSE_LEN, 0);
                request.candidate(catalog, &row.video_id, &row.sources, &mut ex.dense[d..], &mut ex.sparse[s..]);
            }
        }
        for (task, stats) in self.tasks.iter().zip(&mut self.stats) {
            let raw = raw_label(&row, task.label);
            let value = raw.map(|v| task.transform.apply(v)).filter(|v| v.is_finite());
            self.bad_labels += u64::from(raw.is_some() && value.is_none());
            match value {
                Some(v) => {
                    ex.labels.push(v);
                    ex.mask.push(1.0);
                    stats.observed += 1;
                    stats.positives += u64::from(v > 0.5);
                    stats.sum += f64::from(v);
                    stats.min = stats.min.min(v);
                    stats.max = stats.max.max(v);
                }
                None => {
                    ex.labels.push(0.0);
                    ex.mask.push(0.0);
                }
            }
        }
        ex.position.push(row.position);
        ex.device.push(row.device.index() as u8);
        let source = row.sources.first().and_then(|v| SOURCES.iter().position(|x| *x == v.source)).unwrap_or(0);
        ex.source.push(source as u8);
        ex.timestamp_ms.push(row.timestamp_ms);
        ex.user.push(intern(&mut self.user_index, &mut ex.users, row.user_id));
        ex.video.push(intern(&mut self.video_index, &mut ex.videos, row.video_id));
        ex.request.push(intern(&mut self.request_index, &mut ex.requests, row.request_id));
        ex.len += 1;
    }

    pub(crate) fn finish(self, source: String) -> (Examples, DatasetSummary) {
        let Builder { tasks, mut ex, stats, kept, computed, stale, bad_labels, join, .. } = self;
        let mut notes = Vec::new();
        let reordered = sort_by_time(&mut ex);
        if reordered {
            notes.push(
                "rows were not in time order (client clocks?); they were sorted by their request's first timestamp"
                    .to_owned(),
            );
        }
        if bad_labels > 0 {
            notes.push(format!("{bad_labels} labels were not finite numbers and count as unobserved"));
        }
        let t = tasks.len();
        let mut summaries = Vec::with_capacity(t);
        for (k, (task, s)) in tasks.iter().zip(&stats).enumerate() {
            let trainable = s.observed > 0 && s.min < s.max;
            if !trainable {
                ex.mask.iter_mut().skip(k).step_by(t.max(1)).for_each(|m| *m = 0.0);
                notes.push(if s.observed == 0 {
                    format!(
                        "task `{}`: no row has its label ({}) observed; its mask is all zero, it does not train",
                        task.name,
                        task.label.name()
                    )
                } else {
                    format!(
                        "task `{}`: its label ({}) is {} on every one of the {} rows where it is observed, so there \
                         is nothing to learn; its mask is all zero, it does not train",
                        task.name,
                        task.label.name(),
                        s.min,
                        s.observed
                    )
                });
            }
            summaries.push(TaskSummary {
                name: task.name.clone(),
                label: task.label.name(),
                kind: task.kind,
                observed: s.observed,
                positives: (task.kind == TaskKind::Binary).then_some(s.positives),
                mean: (s.observed > 0).then(|| s.sum / s.observed as f64),
                trainable,
            });
        }
        let summary = DatasetSummary {
            source,
            rows: ex.len,
            first_ms: ex.timestamp_ms.first().copied(),
            last_ms: ex.timestamp_ms.last().copied(),
            users: ex.users.len(),
            videos: ex.videos.len(),
            requests: ex.requests.len(),
            tasks: summaries,
            logged_features: kept,
            computed_features: computed,
            stale_logged_features: stale,
            rows_without_history: computed,
            join,
            log_problems: 0,
            reordered,
            replay: None,
            notes,
        };
        (ex, summary)
    }
}

/// Puts rows in time order if they are not: stable, by (first timestamp of
/// the row's request, request), so one request's rows stay together and in
/// order. Returns whether anything moved.
fn sort_by_time(ex: &mut Examples) -> bool {
    if ex.timestamp_ms.windows(2).all(|w| w[0] <= w[1]) {
        return false;
    }
    let mut first = vec![i64::MAX; ex.requests.len()];
    for (&r, &t) in ex.request.iter().zip(&ex.timestamp_ms) {
        let f = &mut first[r as usize];
        *f = (*f).min(t);
    }
    let mut order: Vec<usize> = (0..ex.len).collect();
    order.sort_by_key(|&i| (first[ex.request[i] as usize], ex.request[i]));
    *ex = ex.select(&order);
    true
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use watchnext_core::{
        Device, UserId, VideoId,
        catalog::Video,
        event::{Event, Impression, Source, Vote},
        features::DENSE,
    };
    use watchnext_feedback::{FeedbackLog, LogOptions, join_events, parquet::write_training_set};
    use watchnext_world::{LoggingPolicy, World, WorldConfig};

    use watchnext_core::request::HistoryEntry;

    use super::*;

    /// Events of the toy world's log: ~2-3k labelled impressions, well under a second.
    const TOY_EVENTS: u64 = 20_000;

    /// A data folder with the toy world and its log, as `watchnext world
    /// generate --preset toy` writes it (the steps of `watchnext_testkit::
    /// prepare_world`, which the trainer cannot depend on: testkit pulls in
    /// the server).
    fn toy_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let config = WorldConfig::toy().with_seed(11);
        let world = World::build(&config).unwrap();
        config.write(&data.world_config()).unwrap();
        world.catalog().write(&data.catalog()).unwrap();
        let (log, _) = FeedbackLog::open(data.feedback_log(), LogOptions::default()).unwrap();
        let mut sink = log.bulk_writer();
        watchnext_world::generate_logs(&world, LoggingPolicy::default(), TOY_EVENTS, &mut sink, false).unwrap();
        sink.finish().unwrap();
        dir
    }

    fn log_events(dir: &Path) -> Vec<Event> {
        LogReader::open(DataDir::new(dir).feedback_log(), 1).unwrap().map(|r| r.unwrap().1).collect()
    }

    fn joined(events: &[Event]) -> Vec<TrainingRow> {
        let mut rows = Vec::new();
        join_events(events.iter().cloned(), JoinOptions::default(), |r| {
            rows.push(r);
            Ok::<_, Infallible>(())
        })
        .unwrap();
        rows
    }

    /// Indices (into `events`) of the impressions that become rows, in row order.
    fn impression_events(events: &[Event]) -> Vec<usize> {
        (0..events.len())
            .filter(|&k| matches!(events[k].kind, EventKind::Impression(_)) && !events[k].request_id.is_empty())
            .collect()
    }

    /// The watches of the user of event `k` logged before event `k`, oldest first.
    fn history_before(events: &[Event], k: usize) -> Vec<HistoryEntry> {
        watches_of(events, &events[k].user, k)
    }

    /// The recent watches of `user` among `events[..end]`, oldest first, by
    /// the serving store's rule written out here: a re-watch moves to the
    /// end, at most 50 kept.
    fn watches_of(events: &[Event], user: &UserId, end: usize) -> Vec<HistoryEntry> {
        let mut out: Vec<HistoryEntry> = Vec::new();
        for w in &events[..end] {
            if let EventKind::Watch { seconds_watched, .. } = w.kind
                && w.user == *user
            {
                out.retain(|h| h.video != w.video);
                out.push(HistoryEntry { video: w.video.clone(), watched_at_ms: w.timestamp_ms, seconds_watched });
                if out.len() > 50 {
                    out.remove(0);
                }
            }
        }
        out
    }

    /// The schema's features of impression event `e` given `history`, built by hand.
    fn features_by_hand(
        schema: &FeatureSchema,
        catalog: &Catalog,
        e: &Event,
        history: &[HistoryEntry],
    ) -> (Vec<f32>, Vec<i64>) {
        let EventKind::Impression(imp) = &e.kind else { panic!("not an impression") };
        let input = RequestInput {
            user: e.user.as_str(),
            query_video: imp.query_video.as_ref().map_or("", VideoId::as_str),
            device: e.device,
            time_ms: e.timestamp_ms,
            utc_offset_minutes: 0,
            history,
        };
        let request = RequestFeatures::new(schema, catalog, &input);
        let (mut d, mut s) = (vec![0.0; DENSE_LEN], vec![0; SPARSE_LEN]);
        request.candidate(catalog, e.video.as_str(), &imp.sources, &mut d, &mut s);
        (d, s)
    }

    /// Equal up to float summation order: `RequestFeatures::new` normalises
    /// the user's topic shares by a sum taken in `HashMap` order, which
    /// differs between two calls by an ulp or so.
    fn assert_same_features(got: &[f32], want: &[f32], row: usize) {
        let close = got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1.0));
        assert!(close && got.len() == want.len(), "row {row}: {got:?} != {want:?}");
    }

    fn dense_at(name: &str) -> usize {
        DENSE.iter().position(|n| *n == name).unwrap()
    }

    fn task_at(ex: &Examples, name: &str) -> usize {
        ex.tasks.iter().position(|t| t == name).unwrap()
    }

    #[test]
    fn rows_are_the_joined_impressions_with_their_labels() {
        let dir = toy_folder();
        let (ex, summary) = from_data_dir(dir.path(), &TrainerConfig::default(), 50, false).unwrap();
        let events = log_events(dir.path());
        let impressions = impression_events(&events).len();
        assert!(impressions > 1_000, "{impressions} impressions");
        assert_eq!(ex.len, impressions);
        assert_eq!(summary.rows, impressions);
        assert_eq!(summary.join.unwrap().impressions, impressions as u64);
        assert_eq!(summary.join.unwrap().events, events.len() as u64);
        assert_eq!((summary.logged_features, summary.computed_features), (0, impressions as u64));
        assert!(!summary.reordered);
        assert!(ex.timestamp_ms.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            (summary.first_ms, summary.last_ms),
            (ex.timestamp_ms.first().copied(), ex.timestamp_ms.last().copied())
        );
        for column in [ex.position.len(), ex.device.len(), ex.source.len(), ex.user.len(), ex.video.len()] {
            assert_eq!(column, ex.len);
        }
        assert_eq!((ex.dense.len(), ex.sparse.len()), (ex.len * DENSE_LEN, ex.len * SPARSE_LEN));
        assert_eq!((ex.labels.len(), ex.mask.len()), (ex.len * 5, ex.len * 5));

        let rows = joined(&events);
        assert_eq!(rows.len(), ex.len);
        let [click, watch, like, dismiss, rating] =
            ["click", "watch", "like", "dismiss", "rating"].map(|name| task_at(&ex, name));
        let flag = |b: bool| f32::from(u8::from(b));
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(ex.requests[ex.request[i] as usize], r.request_id);
            assert_eq!(ex.users[ex.user[i] as usize], r.user_id);
            assert_eq!(ex.videos[ex.video[i] as usize], r.video_id);
            assert_eq!((ex.timestamp_ms[i], ex.position[i]), (r.timestamp_ms, r.position));
            assert_eq!(ex.device[i] as usize, r.device.index());
            // The world's logging policy proposes everything as `context`.
            assert_eq!(SOURCES[ex.source[i] as usize], Source::Context);
            let (labels, mask) = (ex.label_row(i), ex.mask_row(i));
            assert_eq!(labels[click], flag(r.click));
            assert_eq!(labels[watch], r.watch_seconds.ln_1p());
            assert_eq!((labels[like], labels[dismiss]), (flag(r.like), flag(r.dismiss)));
            assert_eq!(labels[rating], r.rating.unwrap_or(0.0));
            assert_eq!(mask[rating], flag(r.rating.is_some()), "rating is observed only where rated");
            assert_eq!(mask[..4], [1.0; 4]);
        }
        for t in &summary.tasks {
            assert!(t.trainable, "{t:?}");
        }
        let rated = rows.iter().filter(|r| r.rating.is_some()).count() as u64;
        assert!(rated > 0 && rated < ex.len as u64);
        assert_eq!(summary.tasks[rating].observed, rated);
        assert_eq!(summary.tasks[click].positives, Some(rows.iter().filter(|r| r.click).count() as u64));
        assert!(summary.notes.is_empty(), "{:?}", summary.notes);
        serde_json::to_string(&summary).unwrap();
    }

    #[test]
    fn features_are_the_schemas_given_the_watches_before_the_impression() {
        let dir = toy_folder();
        // A short window, so that the history ring drops watches.
        let mut config = TrainerConfig::default();
        config.features.history_window = 3;
        let (ex, _) = from_data_dir(dir.path(), &config, 50, false).unwrap();
        let events = log_events(dir.path());
        let schema = FeatureSchema::new(config.features).unwrap();
        let catalog = Catalog::read(&DataDir::new(dir.path()).catalog()).unwrap();
        let (mut checked, mut with_history) = (0, 0);
        for (row, &k) in impression_events(&events).iter().enumerate().step_by(29) {
            let history = history_before(&events, k);
            let (d, s) = features_by_hand(&schema, &catalog, &events[k], &history);
            assert_same_features(ex.dense_row(row), &d, row);
            assert_eq!(ex.sparse_row(row), &s[..], "row {row}");
            checked += 1;
            with_history += usize::from(!history.is_empty());
        }
        assert!(checked > 30 && with_history > 10, "{checked} rows checked, {with_history} with a history");
        // Some users have more watches than the window: the ring keeps the right ones.
        let mut watches: HashMap<&str, usize> = HashMap::new();
        for e in events.iter().filter(|e| matches!(e.kind, EventKind::Watch { .. })) {
            *watches.entry(e.user.as_str()).or_default() += 1;
        }
        let longest = watches.values().copied().max().unwrap();
        assert!(longest > config.features.history_window as usize, "longest history {longest}");
    }

    #[test]
    fn a_later_watch_is_not_in_an_earlier_impressions_history() {
        let dir = toy_folder();
        let (ex, _) = from_data_dir(dir.path(), &TrainerConfig::default(), 50, false).unwrap();
        let events = log_events(dir.path());
        let rows = joined(&events);
        let schema = FeatureSchema::default();
        let catalog = Catalog::read(&DataDir::new(dir.path()).catalog()).unwrap();
        let in_history = dense_at("cand_in_history");
        let mut found = 0;
        for (row, &k) in impression_events(&events).iter().enumerate() {
            let e = &events[k];
            // Impressions the user then clicked and watched, of videos not watched before.
            if rows[row].watch_seconds <= 0.0 || history_before(&events, k).iter().any(|h| h.video == e.video) {
                continue;
            }
            assert_eq!(ex.dense_row(row)[in_history], 0.0, "row {row}: a later watch leaked into the features");
            // With the log up to the watch itself, the candidate would be in the history.
            let watched = (k..events.len())
                .find(|&j| {
                    events[j].user == e.user
                        && events[j].video == e.video
                        && matches!(events[j].kind, EventKind::Watch { .. })
                })
                .unwrap();
            let (leaky, _) = features_by_hand(&schema, &catalog, e, &watches_of(&events, &e.user, watched + 1));
            assert_eq!(leaky[in_history], 1.0);
            assert_ne!(ex.dense_row(row), &leaky[..]);
            found += 1;
            if found == 40 {
                break;
            }
        }
        assert_eq!(found, 40, "watched impressions");
    }

    fn video(id: &str, topics: &[&str], duration: f32) -> Video {
        Video {
            id: id.into(),
            title: String::new(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            duration_seconds: duration,
            upload_ms: 1,
        }
    }

    fn event(t: i64, request: &str, user: &str, video: &str, kind: EventKind) -> Event {
        Event {
            timestamp_ms: t,
            request_id: request.into(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Tv,
            kind,
        }
    }

    fn impression(
        t: i64,
        request: &str,
        user: &str,
        video: &str,
        position: u32,
        sources: Vec<Vote>,
        features: Option<FeatureVector>,
    ) -> Event {
        let kind = EventKind::Impression(Impression {
            position,
            query_video: Some(VideoId::parse("q", "q").unwrap()),
            sources,
            features,
            ..Impression::default()
        });
        event(t, request, user, video, kind)
    }

    /// A hand-written data folder: a catalogue of four videos and `events`.
    fn folder_with(events: Vec<Event>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let catalog = Catalog::new(vec![
            video("q", &["music", "live"], 600.0),
            video("a", &["music"], 120.0),
            video("b", &["cooking"], 300.0),
            video("c", &["music", "cooking"], 60.0),
        ])
        .unwrap();
        catalog.write(&data.catalog()).unwrap();
        let (log, _) = FeedbackLog::open(data.feedback_log(), LogOptions::default()).unwrap();
        log.append_blocking(events).unwrap();
        dir
    }

    /// Row 0 logs this schema's features, row 1 another schema's, row 2 the
    /// right hash with the wrong width, row 3 none; u1 watched `a` before.
    fn mixed_events(schema: &FeatureSchema) -> Vec<Event> {
        let logged = |hash: &str, dense: usize| {
            Some(FeatureVector { schema_hash: hash.into(), dense: vec![0.25; dense], sparse: vec![1; SPARSE_LEN] })
        };
        let watch = EventKind::Watch { seconds_watched: 30.0, video_duration_seconds: 120.0 };
        vec![
            event(1_000, "", "u1", "a", watch),
            impression(
                2_000,
                "r1",
                "u1",
                "b",
                1,
                vec![Vote::new(Source::Topic, 0.5, 1)],
                logged(schema.hash(), DENSE_LEN),
            ),
            impression(2_000, "r1", "u1", "c", 2, vec![], logged("0123456789abcdef", DENSE_LEN)),
            impression(2_000, "r1", "u1", "a", 3, vec![], logged(schema.hash(), 3)),
            impression(
                2_000,
                "r2",
                "u2",
                "b",
                1,
                vec![Vote::new(Source::Cowatch, 0.2, 2), Vote::new(Source::Topic, 0.1, 3)],
                None,
            ),
            event(3_000, "r1", "u1", "b", EventKind::Click),
            event(4_000, "r1", "u1", "b", EventKind::Rating { value: 4.0 }),
            event(5_000, "r2", "u2", "b", EventKind::Rating { value: 2.0 }),
        ]
    }

    #[test]
    fn logged_features_are_kept_only_when_the_schema_matches() {
        let config = TrainerConfig::default();
        let schema = FeatureSchema::new(config.features).unwrap();
        let events = mixed_events(&schema);
        let dir = folder_with(events.clone());
        let (ex, summary) = from_data_dir(dir.path(), &config, 50, false).unwrap();
        assert_eq!(ex.len, 4);
        assert_eq!(ex.dense_row(0), &[0.25; DENSE_LEN][..], "this schema's logged features are used verbatim");
        assert_eq!(ex.sparse_row(0), &[1; SPARSE_LEN][..]);
        let catalog = Catalog::read(&DataDir::new(dir.path()).catalog()).unwrap();
        for (row, k) in [(1, 2), (2, 3), (3, 4)] {
            let (d, s) = features_by_hand(&schema, &catalog, &events[k], &history_before(&events, k));
            assert_eq!((ex.dense_row(row), ex.sparse_row(row)), (&d[..], &s[..]), "row {row} is recomputed");
        }
        assert_eq!(ex.dense_row(2)[dense_at("cand_in_history")], 1.0, "u1 watched `a` before");
        assert_eq!(ex.dense_row(3)[dense_at("history_log_len")], 0.0, "u2 has no history");
        assert_eq!((summary.logged_features, summary.computed_features, summary.stale_logged_features), (1, 3, 2));
        assert_eq!(summary.rows_without_history, 1);
        assert_eq!(ex.source, [1, 0, 0, 2], "index in SOURCES of the first source");
        assert_eq!(ex.device, [Device::Tv.index() as u8; 4]);
        assert_eq!(ex.position, [1, 2, 3, 1]);
        assert_eq!(ex.requests, ["r1", "r2"]);
        assert_eq!(ex.request, [0, 0, 0, 1]);

        // Rating: observed on the two rated rows only.
        let rating = task_at(&ex, "rating");
        let column = |v: &[f32], t: usize| (0..ex.len).map(|i| v[i * ex.tasks.len() + t]).collect::<Vec<_>>();
        assert_eq!(column(&ex.mask, rating), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(column(&ex.labels, rating), [4.0, 0.0, 0.0, 2.0]);
        let click = task_at(&ex, "click");
        assert_eq!(column(&ex.labels, click), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(column(&ex.mask, click), [1.0; 4]);
        // No watch, like or dismiss anywhere: those tasks cannot learn and are masked out.
        for name in ["watch", "like", "dismiss"] {
            let t = task_at(&ex, name);
            assert_eq!(column(&ex.mask, t), [0.0; 4], "{name}");
            assert!(!summary.tasks[t].trainable);
            assert_eq!(summary.tasks[t].observed, 4);
            assert!(summary.notes.iter().any(|n| n.contains(&format!("`{name}`"))), "{:?}", summary.notes);
        }
        assert!(summary.tasks[click].trainable && summary.tasks[rating].trainable);
        assert_eq!(summary.tasks[rating].mean, Some(3.0));
        assert_eq!(summary.tasks[click].positives, Some(1));
        let j = summary.join.unwrap();
        assert_eq!((j.organic_events, j.matched_outcomes, j.rows), (1, 3, 4));
    }

    #[test]
    fn training_rows_from_parquet_keep_matching_features_and_otherwise_have_no_history() {
        let config = TrainerConfig::default();
        let schema = FeatureSchema::new(config.features).unwrap();
        let events = mixed_events(&schema);
        let dir = folder_with(events.clone());
        let path = dir.path().join("rows.parquet");
        let log = LogReader::open(DataDir::new(dir.path()).feedback_log(), 1).unwrap();
        write_training_set(log, &path, JoinOptions::default()).unwrap();
        let catalog = Catalog::read(&DataDir::new(dir.path()).catalog()).unwrap();
        let (ex, summary) = from_parquet(&path, &catalog, &config).unwrap();
        let (from_log, _) = from_data_dir(dir.path(), &config, 50, false).unwrap();
        assert_eq!(ex.len, 4);
        assert_eq!(ex.dense_row(0), &[0.25; DENSE_LEN][..]);
        for row in 1..4 {
            let k = row + 1;
            let (d, s) = features_by_hand(&schema, &catalog, &events[k], &[]);
            assert_eq!((ex.dense_row(row), ex.sparse_row(row)), (&d[..], &s[..]), "row {row}: empty history");
        }
        assert_eq!(ex.dense_row(2)[dense_at("cand_in_history")], 0.0);
        assert_eq!(ex.dense_row(3), from_log.dense_row(3), "u2 had no history anyway");
        assert_eq!((ex.labels.clone(), ex.mask.clone()), (from_log.labels.clone(), from_log.mask.clone()));
        assert_eq!((summary.logged_features, summary.computed_features, summary.stale_logged_features), (1, 3, 2));
        assert_eq!(summary.rows_without_history, 3);
        assert!(summary.notes.iter().any(|n| n.contains("empty user history")), "{:?}", summary.notes);
        assert!(summary.join.is_none());
    }

    #[test]
    fn training_rows_of_the_toy_world_from_parquet_match_the_log_but_the_history() {
        let dir = toy_folder();
        let config = TrainerConfig::default();
        let path = dir.path().join("rows.parquet");
        let log = LogReader::open(DataDir::new(dir.path()).feedback_log(), 1).unwrap();
        write_training_set(log, &path, JoinOptions::default()).unwrap();
        let catalog = Catalog::read(&DataDir::new(dir.path()).catalog()).unwrap();
        let (ex, summary) = from_parquet(&path, &catalog, &config).unwrap();
        let (from_log, _) = from_data_dir(dir.path(), &config, 50, false).unwrap();
        assert_eq!(ex.len, from_log.len);
        assert_eq!(summary.rows_without_history, ex.len as u64);
        assert_eq!(
            (&ex.labels, &ex.mask, &ex.timestamp_ms),
            (&from_log.labels, &from_log.mask, &from_log.timestamp_ms)
        );
        assert_eq!((&ex.requests, &ex.request), (&from_log.requests, &from_log.request));
        let len = dense_at("history_log_len");
        let mut cold = 0;
        for i in 0..ex.len {
            assert_eq!(ex.dense_row(i)[len], 0.0);
            if from_log.dense_row(i)[len] == 0.0 {
                assert_eq!(ex.dense_row(i), from_log.dense_row(i), "row {i}");
                cold += 1;
            }
        }
        assert!(cold > 0 && cold < ex.len);
    }

    /// `n` rows of `per` impressions each, request `r` at time `1000·r`.
    fn rows_of_requests(requests: usize, per: usize) -> Vec<TrainingRow> {
        let mut rows = Vec::new();
        for r in 0..requests {
            for p in 0..per {
                rows.push(TrainingRow {
                    timestamp_ms: 1_000 * r as i64,
                    request_id: format!("r{r}"),
                    user_id: format!("u{}", r % 3),
                    video_id: format!("v{p}"),
                    query_video_id: None,
                    device: Device::Phone,
                    position: p as u32 + 1,
                    sources: vec![],
                    features: None,
                    model_version: String::new(),
                    experiment_arm: String::new(),
                    propensity: 0.0,
                    click: p % 2 == 0,
                    watch_seconds: p as f32,
                    video_duration_seconds: 10.0,
                    watch_fraction: 0.1,
                    like: p == 1,
                    dismiss: p == 2,
                    rating: (p == 3).then_some(r as f32),
                });
            }
        }
        rows
    }

    #[test]
    fn the_split_is_in_time_order_and_keeps_requests_whole() {
        let config = TrainerConfig::default();
        let (ex, _) = Examples::from_rows(rows_of_requests(10, 7), &Catalog::default(), &config).unwrap();
        assert_eq!(ex.len, 70);
        // Asked: test ≈ 10.5 rows → cut at 59 or 60, inside r8 (56..63) → moved to 63;
        // validation 7 rows before that → inside r7 (49..56) → moved to 56.
        let (train, val, test) = split_by_time(&ex, 0.1, 0.15);
        assert_eq!((train.len, val.len, test.len), (56, 7, 7));
        assert_eq!(test.request, [9; 7]);
        let (train, val, test) = split_by_time(&ex, 0.1, 0.0);
        assert_eq!((train.len, val.len, test.len), (63, 7, 0));

        let dir = toy_folder();
        let (ex, _) = from_data_dir(dir.path(), &config, 50, false).unwrap();
        let (train, val, test) = split_by_time(&ex, config.validation_fraction, config.test_fraction);
        assert_eq!(train.len + val.len + test.len, ex.len);
        let expect = |f: f64| (ex.len as f64 * f).round() as usize;
        assert!(test.len <= expect(config.test_fraction) && test.len + 20 >= expect(config.test_fraction));
        assert!(val.len + 20 >= expect(config.validation_fraction));
        let (t_end, v_start, v_end, s_start) =
            (train.timestamp_ms.last(), val.timestamp_ms.first(), val.timestamp_ms.last(), test.timestamp_ms.first());
        assert!(t_end <= v_start && v_end <= s_start, "parts follow each other in time");
        let requests = |part: &Examples| {
            part.request.iter().map(|&r| part.requests[r as usize].clone()).collect::<std::collections::HashSet<_>>()
        };
        let (a, b, c) = (requests(&train), requests(&val), requests(&test));
        assert!(a.is_disjoint(&b) && b.is_disjoint(&c) && a.is_disjoint(&c), "no request straddles a cut");
        assert_eq!(val.dense_row(0), ex.dense_row(train.len));
        assert_eq!(val.label_row(0), ex.label_row(train.len));
    }

    #[test]
    fn rows_out_of_time_order_are_sorted_keeping_requests_together() {
        let config = TrainerConfig::default();
        let mut rows = rows_of_requests(3, 2);
        // r2's first row arrives first, r0's second row last.
        let r0_second = rows.remove(1);
        let r2_first = rows.remove(3);
        rows.insert(0, r2_first);
        rows.push(r0_second);
        let (ex, summary) = Examples::from_rows(rows, &Catalog::default(), &config).unwrap();
        assert!(summary.reordered);
        assert!(summary.notes.iter().any(|n| n.contains("time order")));
        let order: Vec<(&str, u32)> =
            (0..ex.len).map(|i| (ex.requests[ex.request[i] as usize].as_str(), ex.position[i])).collect();
        assert_eq!(order, [("r0", 1), ("r0", 2), ("r1", 1), ("r1", 2), ("r2", 1), ("r2", 2)]);
        assert!(ex.timestamp_ms.windows(2).all(|w| w[0] <= w[1]));
        // Labels moved with their rows.
        let click = task_at(&ex, "click");
        assert!((0..ex.len).all(|i| ex.label_row(i)[click] == f32::from(u8::from(ex.position[i] == 1))));
    }

    #[test]
    fn subset_and_append_give_back_the_whole() {
        let config = TrainerConfig::default();
        let (ex, _) = Examples::from_rows(rows_of_requests(6, 4), &Catalog::default(), &config).unwrap();
        let mut head = ex.subset(0..9);
        let tail = ex.subset(9..ex.len);
        assert_eq!((head.len, tail.len), (9, 15));
        assert_eq!(tail.dense_row(0), ex.dense_row(9));
        // The tail with tables of its own, as a separately loaded set has.
        let (tail_alone, _) =
            Examples::from_rows(rows_of_requests(6, 4).split_off(9), &Catalog::default(), &config).unwrap();
        head.append(&tail_alone).unwrap();
        assert_eq!(head.len, ex.len);
        assert_eq!(
            (&head.dense, &head.sparse, &head.labels, &head.mask),
            (&ex.dense, &ex.sparse, &ex.labels, &ex.mask)
        );
        let ids = |e: &Examples| {
            (0..e.len)
                .map(|i| {
                    let (u, v, r) = (e.user[i] as usize, e.video[i] as usize, e.request[i] as usize);
                    (e.users[u].clone(), e.videos[v].clone(), e.requests[r].clone())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&head), ids(&ex));
        assert_eq!(head.requests.len(), 6, "shared ids are not repeated");
        let other = Examples::new(vec!["click".into()]);
        assert!(matches!(head.append(&other), Err(DatasetError::Mismatch(_))));
    }

    #[test]
    fn a_missing_or_bad_folder_is_an_error_naming_the_path() {
        let config = TrainerConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let err = from_data_dir(&missing, &config, 50, false).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let data = DataDir::new(dir.path());
        let err = from_data_dir(dir.path(), &config, 50, false).unwrap_err().to_string();
        assert!(err.contains(&data.catalog().display().to_string()), "{err}");

        std::fs::write(data.catalog(), "{\"id\":\"a\"}\nnot json\n").unwrap();
        let err = from_data_dir(dir.path(), &config, 50, false).unwrap_err().to_string();
        assert!(err.contains(&format!("{}:2", data.catalog().display())), "{err}");

        std::fs::write(data.catalog(), "{\"id\":\"a\"}\n").unwrap();
        let err = from_data_dir(dir.path(), &config, 50, false).unwrap_err().to_string();
        assert!(err.contains(&data.feedback_log().display().to_string()), "{err}");

        std::fs::create_dir(data.feedback_log()).unwrap();
        let err = from_data_dir(dir.path(), &config, 50, false).unwrap_err();
        assert!(matches!(err, DatasetError::Empty { .. }), "{err}");

        let bad = dir.path().join("rows.parquet");
        std::fs::write(&bad, "not parquet").unwrap();
        let catalog = Catalog::default();
        let err = from_parquet(&bad, &catalog, &config).unwrap_err().to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        let err = from_parquet(&missing, &catalog, &config).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let bad_config = TrainerConfig {
            features: watchnext_core::features::FeatureConfig { history_window: 0, ..Default::default() },
            ..TrainerConfig::default()
        };
        let err = from_data_dir(dir.path(), &bad_config, 50, false).unwrap_err().to_string();
        assert!(err.contains("history_window"), "{err}");
    }
}
