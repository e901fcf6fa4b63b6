//! `watchnext eval pipeline`: the whole Recommend path, replayed in-process
//! on held-out data, against its own generators and against baselines.
//!
//! # Protocols
//! - **leave-last-out**: each user's last watch is held out; everything the
//!   user did from that watch's request on is removed from the log (for
//!   MovieLens: the last rating with its list). The query video is the
//!   user's last remaining watch and the request time the held-out watch's
//!   — what a new user sees who imports all but the last ratings, trains,
//!   serves and asks Recommend for every user.
//! - **time-split**: the last `--test-fraction` of the log (by events, in
//!   time order) is held out; every watch in it (after the user's first) is
//!   a case, asked at the moment of its request (or of the watch, for an
//!   organic one) with the query video the user's previous watch. The online
//!   generators and the recent-watch store keep learning from the log up to
//!   each case, as a live server would; the models are those trained before
//!   the split.
//!
//! For each protocol the models are trained on the training part exactly as
//! a user trains them: `train-sequence` on every training watch, and the
//! ranking model by `train` (a point-in-time replay of the pipeline with its
//! own warm-up sequence model, `crate::examples`). With `--compare`, several
//! ranking models (objective, negatives, provenance features, the logged
//! impressions alone) are trained on the same split and served side by side.
//!
//! # What is scored, per case
//! The generators' lists, the merged candidates and the final list all come
//! from one traced Recommend call of the in-process recommender
//! (`Recommender::recommend_traced`, the serving code), fed by fresh
//! generators and the recent-watch store that observed the training part:
//! - each generator alone (its own order);
//! - the merged candidates in fused (pre-ranking) order, and their recall
//!   over all of them (the union);
//! - the final list, and the final list under each `--weights` weighting;
//! - baselines asked at the same moment: popularity and the textbook item
//!   co-occurrence method (`watchnext_eval::cooccurrence`).
//!
//! Every list has the user's earlier watches removed (Recommend itself
//! drops only the `history_len` most recent), and the videos uploaded after
//! the case's time (Recommend's merge drops those too; a generator alone
//! does not), before it is cut to the largest K, so that every method is
//! judged on the same footing. HR@K, NDCG@K and MRR@K at each K with 95% bootstrap intervals,
//! catalogue coverage, paired ratios of the final list to the best single
//! generator and to popularity; on a synthetic world also NDCG against the
//! true click probability (`watchnext_eval::pipeline`). The report is
//! written as Markdown and JSON.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Serialize;
use watchnext_core::{
    Config, Device, History, Query, RequestContext, RequestId, UserId, VideoId,
    catalog::Catalog,
    datadir::DataDir,
    event::{Event, EventKind, source_name},
    features::{FeatureSchema, stable_hash},
    generator::Generator,
    history::RecentWatches,
};
use watchnext_eval::{
    cooccurrence::{CooccurrenceBaseline, CooccurrenceConfig},
    pipeline::{Interval, Metric, Scorer, Scores, markdown_table},
    popularity::Popularity,
};
use watchnext_ranker::{Ranker, RankerSettings};
use watchnext_recommender::{
    Recommender,
    clients::{GeneratorClient, LocalGenerator, LocalRanker, RankerClient},
};
use watchnext_trainer::{
    config::{BatchOrder, ClickLoss, ExampleSource, Negatives, TrainerConfig},
    dataset::{DatasetSummary, Examples},
    pipeline::{self, ExampleLoader, PipelineError, TrainRun},
    replay::{PointInTime, Serving},
};
use watchnext_world::{World, WorldConfig};

/// `watchnext eval pipeline` flags.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Protocols to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "leave-last-out,time-split")]
    pub protocol: Vec<Protocol>,
    /// Cut-offs K.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    pub k: Vec<usize>,
    /// At most this many cases per protocol (a seeded uniform sample).
    #[arg(long, default_value_t = 2_000)]
    pub cases: usize,
    /// Share of the log (events, in time order) the time split holds out.
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Further combiner weightings to score the final list with, each
    /// `task=weight,...` (e.g. `--weights click=1 --weights click=1,like=0.5`);
    /// tasks not named keep their configured weights.
    #[arg(long)]
    pub weights: Vec<String>,
    /// Train and serve every ranking-model variant side by side with the
    /// configured one (point-wise vs softmax click loss, candidate vs random
    /// negatives, with and without the provenance features, with the logged
    /// impressions, the logged impressions alone).
    #[arg(long)]
    pub compare: bool,
    /// Only these variants beside the configured model (see `--compare`):
    /// `<trainer setting>=<value>` (e.g. `replay.next_videos=3`),
    /// `without=<dense feature>[+…]` (or `user` / `video` embeddings),
    /// shuffled, time-order, softmax, pointwise, random-negatives, candidate-negatives,
    /// no-provenance, no-ranks, with-logged-impressions, logged-only.
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 1_000)]
    pub bootstrap: usize,
    /// At most this many cases are also scored against a synthetic world's
    /// ground truth (each scans the whole catalogue).
    #[arg(long, default_value_t = 300)]
    pub truth_cases: usize,
    /// trainer.max_epochs of every ranking model trained here.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed of the case sample and the bootstrap.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Report folder (default: <data>/reports/pipeline).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    LeaveLastOut,
    TimeSplit,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::LeaveLastOut => "leave-last-out",
            Protocol::TimeSplit => "time-split",
        }
    }
}

/// One held-out watch.
#[derive(Debug, Clone)]
struct Case {
    user: UserId,
    device: Device,
    query: VideoId,
    held_out: VideoId,
    time_ms: i64,
    /// Log position of the moment (time split: the state is advanced to it).
    at: usize,
    /// The user's watches before the moment (removed from every list).
    seen: HashSet<VideoId>,
}

/// Training events and cases of one protocol.
struct Split {
    train: Vec<Event>,
    cases: Vec<Case>,
    /// Users (or watches) that gave no case because the held-out video was
    /// watched before.
    rewatches: usize,
    candidates: usize,
}

/// Keeps at most `max` of `cases`, a seeded uniform sample in their order.
fn sample_cases(mut cases: Vec<Case>, max: usize, seed: u64) -> Vec<Case> {
    if cases.len() > max {
        let key = |c: &Case| {
            stable_hash(stable_hash(watchnext_core::features::FNV_OFFSET, &seed.to_le_bytes()), &c.at.to_le_bytes())
        };
        let mut keyed: Vec<(u64, Case)> = cases.into_iter().map(|c| (key(&c), c)).collect();
        keyed.sort_by_key(|(k, c)| (*k, c.at));
        keyed.truncate(max);
        cases = keyed.into_iter().map(|(_, c)| c).collect();
        cases.sort_by_key(|c| c.at);
    }
    cases
}

/// The first log position of each request (by request id).
fn request_starts(events: &[Event]) -> HashMap<&str, usize> {
    let mut starts = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if !e.request_id.is_empty() {
            starts.entry(e.request_id.as_str()).or_insert(i);
        }
    }
    starts
}

fn leave_last_out(events: &[Event], max: usize, seed: u64) -> Split {
    let mut watches: HashMap<&UserId, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if matches!(e.kind, EventKind::Watch { .. }) {
            watches.entry(&e.user).or_default().push(i);
        }
    }
    let starts = request_starts(events);
    let mut cut: HashMap<&UserId, usize> = HashMap::new();
    let mut cases = Vec::new();
    let mut rewatches = 0;
    for (user, w) in &watches {
        if w.len() < 2 {
            continue;
        }
        let (q, h) = (w[w.len() - 2], w[w.len() - 1]);
        let held = &events[h];
        let request_start = starts.get(held.request_id.as_str()).copied().filter(|_| !held.request_id.is_empty());
        let at = request_start.unwrap_or(h).min(h).max(q + 1);
        cut.insert(*user, at);
        let seen: HashSet<VideoId> = w.iter().filter(|&&i| i < at).map(|&i| events[i].video.clone()).collect();
        if seen.contains(&held.video) {
            rewatches += 1;
            continue;
        }
        cases.push(Case {
            user: (*user).clone(),
            device: held.device,
            query: events[q].video.clone(),
            held_out: held.video.clone(),
            time_ms: events[at].timestamp_ms,
            at,
            seen,
        });
    }
    let train: Vec<Event> = events
        .iter()
        .enumerate()
        .filter(|(i, e)| cut.get(&e.user).is_none_or(|&c| *i < c))
        .map(|(_, e)| e.clone())
        .collect();
    let candidates = cases.len();
    cases.sort_by(|a, b| a.user.cmp(&b.user));
    // Positions in the full log are unique per case: sample by them.
    let cases = sample_cases(cases, max, seed);
    Split { train, cases, rewatches, candidates }
}

fn time_split(events: &[Event], test_fraction: f64, max: usize, seed: u64) -> Split {
    let n = events.len();
    let first_test = ((n as f64 * (1.0 - test_fraction.clamp(0.0, 0.9))) as usize).min(n);
    let split_ms = events.get(first_test).map_or(i64::MAX, |e| e.timestamp_ms);
    let boundary = events.partition_point(|e| e.timestamp_ms < split_ms);
    let starts = request_starts(events);
    let mut seen: HashMap<&UserId, HashSet<VideoId>> = HashMap::new();
    let mut last: HashMap<&UserId, &VideoId> = HashMap::new();
    let mut cases = Vec::new();
    let mut rewatches = 0;
    for (i, e) in events.iter().enumerate() {
        if !matches!(e.kind, EventKind::Watch { .. }) {
            continue;
        }
        if i >= boundary {
            let at = starts.get(e.request_id.as_str()).copied().filter(|_| !e.request_id.is_empty()).unwrap_or(i);
            if at >= boundary
                && let Some(&query) = last.get(&e.user)
            {
                let mine = seen.get(&e.user);
                if mine.is_some_and(|s| s.contains(&e.video)) {
                    rewatches += 1;
                } else {
                    cases.push(Case {
                        user: e.user.clone(),
                        device: e.device,
                        query: query.clone(),
                        held_out: e.video.clone(),
                        time_ms: events[at].timestamp_ms,
                        at,
                        seen: mine.cloned().unwrap_or_default(),
                    });
                }
            }
        }
        seen.entry(&e.user).or_default().insert(e.video.clone());
        last.insert(&e.user, &e.video);
    }
    let candidates = cases.len();
    let cases = sample_cases(cases, max, seed);
    Split { train: events[..boundary].to_vec(), cases, rewatches, candidates }
}

/// A ranking-model variant.
#[derive(Debug, Clone)]
struct Variant {
    name: String,
    config: TrainerConfig,
}

/// Names of the variants `--variants` may list (`--compare`: all of them).
pub const VARIANTS: [&str; 10] = [
    "shuffled",
    "time-order",
    "softmax",
    "pointwise",
    "random-negatives",
    "candidate-negatives",
    "no-provenance",
    "no-ranks",
    "with-logged-impressions",
    "logged-only",
];

/// The variant named `name`: the configured model with one thing changed.
fn variant(base: &TrainerConfig, name: &str) -> anyhow::Result<Variant> {
    let mut c = base.clone();
    let label = match name {
        "shuffled" => {
            c.order = BatchOrder::Shuffled;
            "requests shuffled every epoch"
        }
        "time-order" => {
            c.order = BatchOrder::Time;
            "rows in time order"
        }
        "softmax" => {
            c.click_loss = ClickLoss::Softmax;
            "softmax click loss"
        }
        "pointwise" => {
            c.click_loss = ClickLoss::Pointwise;
            "point-wise click loss"
        }
        "random-negatives" => {
            c.replay.negatives = Negatives::Random;
            "random negatives"
        }
        "candidate-negatives" => {
            c.replay.negatives = Negatives::Candidates;
            "candidate negatives"
        }
        "no-provenance" => {
            ignore(
                &mut c,
                watchnext_core::features::DENSE
                    .iter()
                    .filter(|n| n.starts_with("source_") || n.starts_with("score_") || n.starts_with("rank_")),
            );
            "no provenance features"
        }
        "no-ranks" => {
            ignore(&mut c, watchnext_core::features::DENSE.iter().filter(|n| n.starts_with("rank_")));
            "without the generator-rank features"
        }
        "with-logged-impressions" => {
            c.replay.logged_impressions = true;
            "with the logged impressions"
        }
        "logged-only" => {
            c.examples = ExampleSource::Logged;
            "logged impressions only (no replay)"
        }
        other => match other.strip_prefix("without=") {
            Some(list) => return without(c, list),
            None if other.contains('=') => return setting(&c, other),
            None => anyhow::bail!(
                "--variants: unknown variant `{other}` (known: {}, without=<feature>[+<feature>…], \
                 <trainer setting>=<value>)",
                VARIANTS.join(", ")
            ),
        },
    };
    Ok(Variant { name: label.into(), config: c })
}

/// The configured model without some of its inputs: dense features by
/// their schema name (held at 0, as `trainer.ignore_features`), and the
/// `user` or `video` id embeddings (their tables cut to one shared row).
fn without(mut c: TrainerConfig, list: &str) -> anyhow::Result<Variant> {
    let names: Vec<&str> = list.split('+').map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        anyhow::bail!("--variants without=: name one or more features, joined by +");
    }
    for name in &names {
        match *name {
            "user" => c.features.user_buckets = 1,
            "video" => c.features.video_buckets = 1,
            dense if watchnext_core::features::DENSE.contains(&dense) => ignore(&mut c, [&dense]),
            other => anyhow::bail!(
                "--variants without={list}: `{other}` is neither a dense feature of the schema nor `user` / `video`"
            ),
        }
    }
    Ok(Variant { name: format!("without {}", names.join(", ")), config: c })
}

/// Adds dense features to the ones `c` holds at 0 (sorted, each once).
fn ignore<'n>(c: &mut TrainerConfig, names: impl IntoIterator<Item = &'n &'n str>) {
    c.ignore_features.extend(names.into_iter().map(|n| (*n).to_owned()));
    c.ignore_features.sort();
    c.ignore_features.dedup();
}

/// The configured model with one `[trainer]` setting changed, named by its
/// dotted path under `trainer` (`replay.next_videos=3`, `learning_rate=1e-3`;
/// several joined by `&`); each value is read as JSON (a number, `true`,
/// `"text"`), else as text.
fn setting(c: &TrainerConfig, assignments: &str) -> anyhow::Result<Variant> {
    let mut tree = serde_json::to_value(c)?;
    let mut names = Vec::new();
    for assignment in assignments.split('&') {
        let (path, raw) = assignment.split_once('=').unwrap_or((assignment, ""));
        let value: serde_json::Value =
            serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()));
        let mut node = &mut tree;
        for key in path.split('.') {
            node = node
                .get_mut(key)
                .with_context(|| format!("--variants {assignments}: `trainer.{path}` is not a trainer setting"))?;
        }
        *node = value;
        names.push(format!("trainer.{path} = {raw}"));
    }
    let changed: TrainerConfig =
        serde_json::from_value(tree).with_context(|| format!("--variants {assignments}: not a valid value"))?;
    changed.validate().map_err(|e| anyhow::anyhow!("--variants {assignments}: {e}"))?;
    Ok(Variant { name: names.join(", "), config: changed })
}

/// The configured model first, then the variants asked for; a variant the
/// configuration already is (softmax when it trains with softmax) is left out.
fn variants(base: &TrainerConfig, names: &[String]) -> anyhow::Result<Vec<Variant>> {
    let mut out = vec![Variant { name: "watchnext".into(), config: base.clone() }];
    for name in names {
        let v = variant(base, name)?;
        if out.iter().all(|o| o.config != v.config) {
            out.push(v);
        }
    }
    Ok(out)
}

/// Examples of in-memory events, cached by what decides them.
struct InMemory<'a> {
    config: &'a Config,
    catalog: &'a Arc<Catalog>,
    events: &'a [Event],
    cache: std::sync::Mutex<HashMap<String, (Examples, DatasetSummary)>>,
}

impl ExampleLoader for InMemory<'_> {
    fn load(
        &self,
        data_dir: &Path,
        trainer: &TrainerConfig,
        progress: bool,
    ) -> Result<(Examples, DatasetSummary), PipelineError> {
        let key = serde_json::json!([trainer.examples, trainer.replay, trainer.features, trainer.tasks, trainer.seed])
            .to_string();
        if let Some(hit) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Ok(hit.clone());
        }
        let wrap = |e: anyhow::Error| PipelineError::Examples(format!("{e:#}"));
        let built = match trainer.examples {
            ExampleSource::Replay => crate::examples::replay_examples(
                self.config,
                self.catalog,
                self.events,
                trainer,
                data_dir.display().to_string(),
                progress,
            )
            .map_err(wrap)?,
            ExampleSource::Logged => {
                // The logged path reads a data folder: write the events to a scratch one.
                let scratch = tempfile::tempdir().map_err(|e| wrap(e.into()))?;
                write_data_folder(scratch.path(), self.catalog, self.events).map_err(wrap)?;
                let history_len = crate::examples::settings(self.config).map_err(wrap)?.fanout.history_len;
                watchnext_trainer::dataset::from_data_dir(scratch.path(), trainer, history_len, progress)?
            }
        };
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, built.clone());
        Ok(built)
    }
}

fn write_data_folder(dir: &Path, catalog: &Catalog, events: &[Event]) -> anyhow::Result<()> {
    let data = DataDir::new(dir);
    catalog.write(&data.catalog())?;
    let (log, _) =
        watchnext_feedback::FeedbackLog::open(data.feedback_log(), watchnext_feedback::LogOptions::default())?;
    let mut sink = log.bulk_writer();
    for e in events {
        watchnext_core::event::EventSink::push(&mut sink, e.clone())?;
    }
    sink.finish()?;
    Ok(())
}

/// What one trained variant reported.
#[derive(Debug, Clone, Serialize)]
struct TrainedVariant {
    name: String,
    model_dir: PathBuf,
    rows: usize,
    seconds: f64,
    click_auc: Option<f64>,
    dataset: DatasetSummary,
    /// The variant's feature configuration (a variant may embed fewer ids).
    features: watchnext_core::features::FeatureConfig,
}

/// One protocol's results.
#[derive(Debug, Clone, Serialize)]
struct ProtocolReport {
    protocol: Protocol,
    training_events: usize,
    eligible_cases: usize,
    cases: usize,
    rewatch_cases_skipped: usize,
    /// Recall of all the merged candidates (≤ `recommender.max_candidates`).
    union_recall: f64,
    /// What each generator adds to the union.
    contributions: Vec<Contribution>,
    max_candidates: usize,
    variants: Vec<TrainedVariant>,
    scores: Scores,
    best_generator_by_hit: Option<String>,
    best_generator_by_ndcg: Option<String>,
    /// Ratios of the final list (the configured model) to the best single
    /// generator and to popularity, HR@10 and NDCG@10 (the smallest K).
    ratios: Vec<RatioLine>,
    seconds: f64,
}

/// One generator's share of the union's hits.
#[derive(Debug, Clone, Serialize)]
struct Contribution {
    generator: String,
    /// Share of cases whose held-out video this generator put in the
    /// merged candidates.
    in_union: f64,
    /// Share of cases where no other generator did: the union's recall
    /// without this generator would be that much lower.
    only_this: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RatioLine {
    numerator: String,
    denominator: String,
    metric: Metric,
    k: usize,
    ratio: Interval,
}

fn parse_weights(text: &str) -> anyhow::Result<BTreeMap<String, f32>> {
    let mut out = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (task, w) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--weights `{text}`: write task=weight pairs, e.g. click=1,like=0.5"))?;
        let w: f32 = w.trim().parse().with_context(|| format!("--weights `{text}`: `{w}` is not a number"))?;
        if !w.is_finite() || w < 0.0 {
            anyhow::bail!("--weights `{text}`: weights must be finite and >= 0");
        }
        out.insert(task.trim().to_owned(), w);
    }
    Ok(out)
}

const POPULARITY: &str = "popularity baseline";
const COOCCURRENCE: &str = "item co-occurrence baseline";
const MERGED: &str = "merged candidates (fused order)";

fn final_name(variant: &str, weights: Option<&str>) -> String {
    match (variant, weights) {
        ("watchnext", None) => "final list".into(),
        ("watchnext", Some(w)) => format!("final list, weights {w}"),
        (v, None) => format!("final list: {v}"),
        (v, Some(w)) => format!("final list: {v}, weights {w}"),
    }
}

/// `watchnext eval pipeline`.
pub async fn pipeline(config: &Config, args: PipelineArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    watchnext_onnx::OnnxRuntime::init(&config.onnx).context("loading ONNX Runtime (run scripts/setup.sh)")?;
    let data = DataDir::new(&config.data.dir);
    let out = args.out.clone().unwrap_or_else(|| data.root().join("reports").join("pipeline"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if args.k.is_empty() || args.k.contains(&0) {
        anyhow::bail!("--k: give cut-offs of at least 1, e.g. --k 10,50,100");
    }
    if !(0.0..0.9).contains(&args.test_fraction) || args.test_fraction == 0.0 {
        anyhow::bail!("--test-fraction {}: must be within (0, 0.9)", args.test_fraction);
    }
    let weightings: Vec<(String, BTreeMap<String, f32>)> =
        args.weights.iter().map(|w| parse_weights(w).map(|p| (w.clone(), p))).collect::<anyhow::Result<_>>()?;
    let catalog =
        Arc::new(Catalog::read(&data.catalog()).with_context(|| format!("reading {}", data.catalog().display()))?);
    let events = tokio::task::block_in_place(|| crate::examples::read_events(&data))?;
    let world = if data.world_config().is_file() {
        Some(World::build(&WorldConfig::read(&data.world_config())?)?)
    } else {
        None
    };
    let mut trainer = crate::training::trainer_config(config)?;
    if let Some(e) = args.epochs {
        trainer.max_epochs = e;
    }
    trainer.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let tasks: Vec<&str> = trainer.tasks.iter().map(|t| t.name.as_str()).collect();
    for (text, weights) in &weightings {
        if let Some(unknown) = weights.keys().find(|k| !tasks.contains(&k.as_str())) {
            anyhow::bail!(
                "--weights `{text}`: `{unknown}` is not a task of the ranking model; its tasks are {tasks:?}"
            );
        }
    }
    println!(
        "eval pipeline on {}: {} events, {} videos{}",
        data.root().display(),
        events.len(),
        catalog.len(),
        if world.is_some() { ", with the synthetic world's ground truth" } else { "" }
    );
    let mut reports = Vec::new();
    for &protocol in &args.protocol {
        let report =
            run_protocol(config, &args, protocol, &catalog, &events, world.as_ref(), &trainer, &weightings, &out)
                .await
                .with_context(|| format!("protocol {}", protocol.name()))?;
        reports.push(report);
    }
    let md = markdown(&data, &args, &reports, started.elapsed().as_secs_f64());
    let md_path = out.join("report.md");
    watchnext_core::fsutil::write_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("writing {}", md_path.display()))?;
    let json_path = out.join("report.json");
    watchnext_core::fsutil::write_atomic(&json_path, serde_json::to_string_pretty(&reports)?.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("{md}");
    println!("report: {} (+ report.json)", md_path.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_protocol(
    config: &Config,
    args: &PipelineArgs,
    protocol: Protocol,
    catalog: &Arc<Catalog>,
    events: &[Event],
    world: Option<&World>,
    trainer: &TrainerConfig,
    weightings: &[(String, BTreeMap<String, f32>)],
    out: &Path,
) -> anyhow::Result<ProtocolReport> {
    let started = Instant::now();
    let progress = !args.quiet;
    let split = match protocol {
        Protocol::LeaveLastOut => leave_last_out(events, args.cases, args.seed),
        Protocol::TimeSplit => time_split(events, args.test_fraction, args.cases, args.seed),
    };
    println!(
        "{}: {} training events, {} cases (of {}; {} re-watches skipped)",
        protocol.name(),
        split.train.len(),
        split.cases.len(),
        split.candidates,
        split.rewatches
    );
    if split.cases.is_empty() {
        anyhow::bail!("no case to evaluate: the log needs users with at least two watches");
    }
    let mut settings = crate::examples::settings(config)?;
    // The evaluation measures ordering, not latency: cases run one at a
    // time and no generator or ranker may be dropped for a serving deadline
    // (with the CPU pools they could be, on a busy machine, changing the
    // lists from run to run).
    settings.fanout.generator_timeout_ms = 30_000;
    settings.fanout.ranker_timeout_ms = 30_000;
    let dir = out.join(protocol.name());
    let models = dir.join("models");
    if models.exists() {
        std::fs::remove_dir_all(&models).with_context(|| format!("clearing {}", models.display()))?;
    }

    // The models, trained on the training part as a user trains them.
    let loader = InMemory { config, catalog, events: &split.train, cache: std::sync::Mutex::default() };
    let mut trained = Vec::new();
    let names: Vec<String> =
        if args.compare { VARIANTS.iter().map(|s| (*s).to_owned()).collect() } else { args.variants.clone() };
    for (i, variant) in variants(trainer, &names)?.into_iter().enumerate() {
        println!("{}: training the ranking model `{}`", protocol.name(), variant.name);
        let run = TrainRun {
            config: variant.config.clone(),
            data_dir: dir.join("training-split"),
            out_dir: models.join(format!("variant-{i}")),
            model_version: format!("eval-{}-{i}", protocol.name()),
            progress,
            checkpoint_dir: Some(dir.join("checkpoints").join(format!("variant-{i}"))),
            resume: false,
        };
        let outcome = tokio::task::block_in_place(|| pipeline::run_training(&run, &loader))
            .with_context(|| format!("training `{}`", variant.name))?;
        if let Some(r) = &outcome.dataset.replay {
            println!(
                "  replay: {} moments, {:.0} candidates each, first positive among them in {:.1}%; {} rows",
                r.replayed_moments,
                r.mean_candidates,
                100.0 * r.first_positive_in_candidates as f64 / r.with_positive.max(1) as f64,
                outcome.dataset.rows
            );
        }
        let click_auc = outcome.test_metrics.iter().find(|m| m.task == "click").and_then(|m| m.auc);
        println!(
            "  {} rows, best epoch {} of {}, test click AUC {}, {:.0}s",
            outcome.dataset.rows,
            outcome.report.best_epoch,
            outcome.report.epochs.len(),
            click_auc.map_or("–".into(), |a| format!("{a:.4}")),
            outcome.seconds
        );
        trained.push(TrainedVariant {
            name: variant.name,
            model_dir: outcome.model_dir.clone(),
            rows: outcome.dataset.rows,
            seconds: outcome.seconds,
            click_auc,
            dataset: outcome.dataset,
            features: variant.config.features,
        });
    }
    let _ = std::fs::remove_dir_all(dir.join("checkpoints"));
    drop(loader);

    // The serving pipeline: fresh generators with the training part's
    // sequence model, one recommender per variant sharing them.
    let hosted = crate::examples::fresh_generators(config, catalog)?;
    tokio::task::block_in_place(|| hosted.fit(&split.train, "serving", progress))?;
    let popularity: Arc<dyn Generator> = Arc::new(Popularity::new());
    let cooccurrence: Arc<dyn Generator> = Arc::new(CooccurrenceBaseline::new(CooccurrenceConfig::default()));
    let serving_generators: Vec<Arc<dyn Generator>> = hosted.all();
    let observed = Serving {
        generators: serving_generators.iter().cloned().chain([popularity.clone(), cooccurrence.clone()]).collect(),
        per_generator: settings.fanout.per_generator,
        max_candidates: config.recommender.max_candidates as usize,
        history_len: settings.fanout.history_len,
    };
    let history = Arc::new(RecentWatches::new(settings.fanout.history_len.max(1)));
    let mut pit = PointInTime::new(&observed, history.clone(), trainer.replay.sync_interval_ms);
    let runtime = watchnext_onnx::OnnxRuntime::init(&config.onnx)?;
    let mut recommenders = Vec::new();
    for v in &trained {
        let schema = FeatureSchema::new(v.features).map_err(|e| anyhow::anyhow!("trainer.features: {e}"))?;
        let ranker = Ranker::new(
            RankerSettings { sessions: 1, warmup_rows: 64, keep_versions: 2 },
            schema.clone(),
            runtime.clone(),
            watchnext_onnx::SessionOptions::from(&config.onnx),
        )?;
        ranker.update_catalog(catalog);
        ranker.load_dir(&v.model_dir).with_context(|| format!("loading {}", v.model_dir.display()))?;
        // A batch of cases, not live traffic: a queue deep enough never to refuse.
        let pools = watchnext_recommender::cpu::CpuPools::new(settings.fanout.cpu_threads, 1 << 16);
        let clients: Vec<Arc<dyn GeneratorClient>> = serving_generators
            .iter()
            .map(|g| Arc::new(LocalGenerator(g.clone(), pools.generators.clone())) as Arc<dyn GeneratorClient>)
            .collect();
        let ranker: Arc<dyn RankerClient> = Arc::new(LocalRanker(Arc::new(ranker), pools.ranker));
        let rec = Recommender::new(
            settings.clone(),
            config.recommender.max_candidates as usize,
            clients,
            Some(ranker),
            None,
            history.clone(),
        )?;
        rec.update_catalog(catalog);
        recommenders.push(rec);
    }

    // Methods, in report order.
    let present: Vec<&str> = watchnext_core::registry::NAMES
        .iter()
        .copied()
        .filter(|g| serving_generators.iter().any(|s| source_name(s.source()) == *g))
        .collect();
    let mut methods: Vec<String> = present.iter().map(|g| format!("{g} generator")).collect();
    methods.push(MERGED.into());
    for v in &trained {
        methods.push(final_name(&v.name, None));
        for (w, _) in weightings {
            methods.push(final_name(&v.name, Some(w)));
        }
    }
    methods.push(POPULARITY.into());
    methods.push(COOCCURRENCE.into());
    let ks = args.k.clone();
    let k_max = ks.iter().copied().max().unwrap_or(10);
    let mut scorer = Scorer::new(methods.clone(), ks.clone());
    let mut union_hits = 0usize;
    // Per generator: cases whose held-out video it proposed, and those where
    // no other generator did (what the union would lose without it).
    let mut proposed: BTreeMap<String, (usize, usize)> = present.iter().map(|g| (g.to_string(), (0, 0))).collect();
    // One JSON line per case: each method's rank of the held-out video.
    let mut per_case = String::new();

    let replay_events: &[Event] = match protocol {
        Protocol::LeaveLastOut => &split.train,
        Protocol::TimeSplit => events,
    };
    if protocol == Protocol::LeaveLastOut {
        tokio::task::block_in_place(|| pit.advance(replay_events, replay_events.len()));
        pit.sync_now(replay_events);
    }
    let bar = if progress {
        indicatif::ProgressBar::with_draw_target(
            Some(split.cases.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    for (n, case) in split.cases.iter().enumerate() {
        bar.set_position(n as u64);
        if protocol == Protocol::TimeSplit {
            tokio::task::block_in_place(|| pit.advance(replay_events, case.at));
            pit.sync_now(replay_events);
        }
        let query = Query {
            request_id: RequestId::parse("request_id", &format!("eval-{n}"))?,
            user: case.user.clone(),
            query_video: case.query.clone(),
            device: case.device,
            history: History::default(),
            context: RequestContext { time_ms: case.time_ms, ..RequestContext::default() },
        };
        let keep = |list: &mut Vec<VideoId>| {
            list.retain(|v| {
                !case.seen.contains(v)
                    && *v != case.query
                    && watchnext_core::candidates::released(Some(catalog), v, case.time_ms)
            });
            list.truncate(k_max);
        };
        let asked = (k_max + 100).min(config.recommender.max_candidates as usize);
        let mut lists: Vec<Vec<VideoId>> = Vec::with_capacity(methods.len());
        let mut traces = Vec::with_capacity(recommenders.len());
        for rec in &recommenders {
            let answer = rec.recommend_traced(query.clone(), asked, "", Some(Duration::from_secs(120))).await;
            traces.push(answer.ok());
        }
        let first = traces.first().and_then(|t| t.as_ref());
        for g in &present {
            let mut list: Vec<VideoId> = first
                .and_then(|(_, t)| t.lists.iter().find(|(s, _)| source_name(*s) == *g))
                .map(|(_, l)| l.iter().map(|(v, _)| v.clone()).collect())
                .unwrap_or_default();
            keep(&mut list);
            lists.push(list);
        }
        let mut merged: Vec<VideoId> =
            first.map(|(_, t)| t.candidates.iter().map(|c| c.video.clone()).collect()).unwrap_or_default();
        union_hits += usize::from(merged.contains(&case.held_out));
        if let Some(found) = first.and_then(|(_, t)| t.candidates.iter().find(|c| c.video == case.held_out)) {
            for vote in &found.sources {
                if let Some(cell) = proposed.get_mut(source_name(vote.source)) {
                    cell.0 += 1;
                    cell.1 += usize::from(found.sources.len() == 1);
                }
            }
        }
        keep(&mut merged);
        lists.push(merged);
        for (rec, answer) in recommenders.iter().zip(&traces) {
            let mut list: Vec<VideoId> =
                answer.as_ref().map(|(r, _)| r.items.iter().map(|i| i.video.clone()).collect()).unwrap_or_default();
            keep(&mut list);
            lists.push(list);
            for (_, w) in weightings {
                let mut list = answer.as_ref().and_then(|(r, t)| rec.reorder(t, &r.arm, w, asked)).unwrap_or_default();
                keep(&mut list);
                lists.push(list);
            }
        }
        let with_history = Query { history: History(history.entries(&case.user)), ..query.clone() };
        for baseline in [&popularity, &cooccurrence] {
            let mut list: Vec<VideoId> = baseline
                .generate(&with_history, k_max + case.seen.len())
                .candidates
                .into_iter()
                .map(|c| c.video)
                .collect();
            keep(&mut list);
            lists.push(list);
        }
        let truth = match world {
            Some(w) if n < args.truth_cases => truth_of(w, case, &lists, k_max),
            _ => None,
        };
        let refs: Vec<&[VideoId]> = lists.iter().map(Vec::as_slice).collect();
        scorer.add(&case.held_out, &refs, truth.as_deref());
        let ranks: BTreeMap<&str, Option<usize>> = methods
            .iter()
            .zip(&lists)
            .map(|(m, l)| (m.as_str(), l.iter().position(|v| *v == case.held_out).map(|p| p + 1)))
            .collect();
        per_case.push_str(
            &serde_json::json!({
                "user": case.user.as_str(),
                "time_ms": case.time_ms,
                "query": case.query.as_str(),
                "held_out": case.held_out.as_str(),
                "seen": case.seen.len(),
                "ranks": ranks,
            })
            .to_string(),
        );
        per_case.push('\n');
    }
    bar.finish_and_clear();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cases_path = dir.join("cases.jsonl");
    watchnext_core::fsutil::write_atomic(&cases_path, per_case.as_bytes())
        .with_context(|| format!("writing {}", cases_path.display()))?;
    let cases = scorer.cases();
    let scores = scorer.finish(args.bootstrap, args.seed, catalog.len());
    let smallest = ks.iter().copied().min().unwrap_or(10);
    let best_by = |metric: Metric| {
        present
            .iter()
            .map(|g| format!("{g} generator"))
            .filter_map(|name| {
                let m = scores.method(&name)?;
                let j = ks.iter().position(|&k| k == smallest)?;
                let v = match metric {
                    Metric::Hit => m.hit[j].mean,
                    Metric::Ndcg => m.ndcg[j].mean,
                    Metric::Mrr => m.mrr[j].mean,
                };
                Some((name, v))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(name, _)| name)
    };
    let best_hit = best_by(Metric::Hit);
    let best_ndcg = best_by(Metric::Ndcg);
    let mut ratios = Vec::new();
    for v in &trained {
        let fin = final_name(&v.name, None);
        for (metric, best) in [(Metric::Hit, &best_hit), (Metric::Ndcg, &best_ndcg)] {
            for den in best.iter().map(String::as_str).chain([POPULARITY, COOCCURRENCE]) {
                if let Some(r) = scores.ratio(&fin, den, metric, smallest) {
                    ratios.push(RatioLine {
                        numerator: fin.clone(),
                        denominator: den.to_owned(),
                        metric,
                        k: smallest,
                        ratio: r,
                    });
                }
            }
        }
    }
    Ok(ProtocolReport {
        protocol,
        training_events: split.train.len(),
        eligible_cases: split.candidates,
        cases,
        rewatch_cases_skipped: split.rewatches,
        union_recall: union_hits as f64 / cases.max(1) as f64,
        contributions: proposed
            .into_iter()
            .map(|(generator, (found, alone))| Contribution {
                generator,
                in_union: found as f64 / cases.max(1) as f64,
                only_this: alone as f64 / cases.max(1) as f64,
            })
            .collect(),
        max_candidates: config.recommender.max_candidates as usize,
        variants: trained,
        scores,
        best_generator_by_hit: best_hit,
        best_generator_by_ndcg: best_ndcg,
        ratios,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Each list's true click probabilities, with the ideal gains of the
/// catalogue (the user's earlier watches and the query video excluded).
fn truth_of(world: &World, case: &Case, lists: &[Vec<VideoId>], k: usize) -> Option<Vec<(Vec<f64>, Vec<f64>)>> {
    let user = world.user_index(case.user.as_str())?;
    let mut ideal: Vec<f64> = (0..world.num_videos())
        .filter(|&v| {
            let id = world.video_id(v);
            !case.seen.contains(id) && *id != case.query
        })
        .map(|v| world.click_prob(user, v))
        .collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    ideal.truncate(k);
    Some(
        lists
            .iter()
            .map(|l| {
                let gains = l
                    .iter()
                    .map(|v| world.video_index(v.as_str()).map_or(0.0, |i| world.click_prob(user, i)))
                    .collect();
                (gains, ideal.clone())
            })
            .collect(),
    )
}

fn markdown(data: &DataDir, args: &PipelineArgs, reports: &[ProtocolReport], seconds: f64) -> String {
    let mut md = format!(
        "# Whole-pipeline evaluation of {}\n\n`watchnext eval pipeline` (seed {}, {} bootstrap resamples; intervals \
         are 95%). Every list has the user's earlier watches and the videos uploaded after the case's time \
         removed before it is cut; the final list is the in-process Recommend answer.\n",
        data.root().display(),
        args.seed,
        args.bootstrap
    );
    for r in reports {
        md.push_str(&format!(
            "\n## {}\n\n{} training events; {} cases (of {} eligible, {} re-watches skipped); the merged candidates \
             (≤ {}) hold the held-out video in {:.1}% of cases. {:.0} s.\n\n",
            r.protocol.name(),
            r.training_events,
            r.cases,
            r.eligible_cases,
            r.rewatch_cases_skipped,
            r.max_candidates,
            100.0 * r.union_recall,
            r.seconds
        ));
        if !r.contributions.is_empty() {
            md.push_str(
                "| generator | held-out video among its merged candidates | only this generator proposed it |\n|---|---:|---:|\n",
            );
            for c in &r.contributions {
                md.push_str(&format!(
                    "| {} | {:.1}% | {:.1}% |\n",
                    c.generator,
                    100.0 * c.in_union,
                    100.0 * c.only_this
                ));
            }
            md.push('\n');
        }
        md.push_str("| ranking model | training rows | test click AUC (its own replayed test period) | train s |\n|---|---:|---:|---:|\n");
        for v in &r.variants {
            md.push_str(&format!(
                "| {} | {} | {} | {:.0} |\n",
                v.name,
                v.rows,
                v.click_auc.map_or("–".into(), |a| format!("{a:.4}")),
                v.seconds
            ));
        }
        md.push('\n');
        md.push_str(&markdown_table(&r.scores));
        md.push('\n');
        for l in &r.ratios {
            md.push_str(&format!(
                "- {} / {}: {}@{} × {:.3} [{:.3}, {:.3}]\n",
                l.numerator,
                l.denominator,
                match l.metric {
                    Metric::Hit => "HR",
                    Metric::Ndcg => "NDCG",
                    Metric::Mrr => "MRR",
                },
                l.k,
                l.ratio.mean,
                l.ratio.low,
                l.ratio.high
            ));
        }
    }
    md.push_str(&format!("\n(total {seconds:.0} s)\n"));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_change_exactly_the_settings_they_name() {
        let base = TrainerConfig::default();
        let v = variant(&base, "learning_rate=1e-3&replay.next_videos=3&order=shuffled").unwrap();
        let expected = TrainerConfig {
            learning_rate: 1e-3,
            order: BatchOrder::Shuffled,
            replay: watchnext_trainer::config::ReplayConfig { next_videos: 3, ..base.replay.clone() },
            ..base.clone()
        };
        assert_eq!(v.config, expected);
        assert!(v.name.contains("trainer.replay.next_videos = 3"), "{}", v.name);

        let v = variant(&base, "without=user+rank_cowatch").unwrap();
        assert_eq!(v.config.features.user_buckets, 1);
        assert_eq!(v.config.features.video_buckets, base.features.video_buckets);
        assert_eq!(v.config.ignore_features, vec!["rank_cowatch".to_owned()]);

        for (bad, says) in [
            ("no_such_setting=1", "not a trainer setting"),
            ("learning_rate=fast", "not a valid value"),
            ("learning_rate=2", "trainer.learning_rate"),
            ("without=rank_everything", "neither a dense feature"),
            ("nonsense", "unknown variant"),
        ] {
            let err = format!("{:#}", variant(&base, bad).err().unwrap_or_else(|| panic!("{bad} accepted")));
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn event(t: i64, user: &str, video: &str, request: &str, kind: EventKind) -> Event {
        Event {
            timestamp_ms: t,
            request_id: request.into(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind,
        }
    }

    fn watch(t: i64, user: &str, video: &str, request: &str) -> Event {
        event(t, user, video, request, EventKind::Watch { seconds_watched: 1.0, video_duration_seconds: 2.0 })
    }

    fn shown(t: i64, user: &str, video: &str, request: &str) -> Event {
        event(t, user, video, request, EventKind::Impression(watchnext_core::event::Impression::default()))
    }

    #[test]
    fn leave_last_out_removes_the_held_out_request_and_keeps_ties_out() {
        // u1: a, b, then c shown and watched in request r3 at the same time as b.
        let events = vec![
            watch(1, "u1", "a", ""),
            watch(2, "u1", "b", ""),
            shown(2, "u1", "c", "r3"),
            shown(2, "u1", "x", "r3"),
            event(2, "u1", "c", "r3", EventKind::Click),
            watch(2, "u1", "c", "r3"),
            watch(3, "u2", "a", ""),
            watch(4, "u2", "b", ""),
            watch(5, "u2", "a", ""), // re-watch: no case
            watch(6, "u3", "z", ""),
        ];
        let split = leave_last_out(&events, 10, 1);
        assert_eq!(split.cases.len(), 1);
        assert_eq!(split.rewatches, 1);
        let c = &split.cases[0];
        assert_eq!((c.user.as_str(), c.query.as_str(), c.held_out.as_str(), c.at), ("u1", "b", "c", 2));
        assert!(c.seen.contains(&VideoId::parse("v", "a").unwrap()) && !c.seen.contains(&c.held_out));
        // Nothing of u1's held-out request is training data; u3 keeps everything.
        assert!(!split.train.iter().any(|e| e.request_id == "r3"), "the held-out list leaked");
        assert_eq!(split.train.iter().filter(|e| e.user.as_str() == "u1").count(), 2);
        assert!(split.train.iter().any(|e| e.user.as_str() == "u3"));
        // u2's last watch was a re-watch: everything before it stays.
        assert_eq!(split.train.iter().filter(|e| e.user.as_str() == "u2").count(), 2);
    }

    #[test]
    fn time_split_asks_at_the_request_and_only_after_the_split() {
        let events = vec![
            watch(1, "u1", "a", ""),
            watch(2, "u2", "a", ""),
            watch(3, "u1", "b", ""),
            shown(4, "u1", "c", "r"),
            watch(5, "u1", "c", "r"),
            watch(6, "u2", "a", ""), // re-watch
            watch(7, "u3", "q", ""), // first watch: no query
        ];
        let split = time_split(&events, 0.5, 10, 1);
        assert_eq!(split.train.len(), 3, "events before the split");
        assert_eq!(split.cases.len(), 1);
        let c = &split.cases[0];
        assert_eq!((c.query.as_str(), c.held_out.as_str(), c.at, c.time_ms), ("b", "c", 3, 4));
        assert_eq!(split.rewatches, 1);
        assert_eq!(c.seen.len(), 2);
    }

    #[test]
    fn weights_parse_and_bad_ones_are_explained() {
        let w = parse_weights("click=1, like=0.5").unwrap();
        assert_eq!(w.get("like"), Some(&0.5));
        assert!(parse_weights("click").unwrap_err().to_string().contains("task=weight"));
        assert!(parse_weights("click=-1").is_err());
        assert!(parse_weights("click=x").is_err());
    }
}
