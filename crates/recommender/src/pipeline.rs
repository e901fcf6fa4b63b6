//! One Recommend request, end to end.
//!
//! 1. **Arm**: the request's `experiment_arm` if it names a configured arm
//!    (an unknown name is INVALID_ARGUMENT), else the user's hashed arm.
//! 2. **History**: the request's, or the user's recent watches from the
//!    feedback stream.
//! 3. **Fan-out**: every generator at once (in-process ones on the CPU
//!    pool, [`crate::cpu`]), each with its own deadline
//!    (`generator_timeout_ms`, at most 40% of what is left of the request's
//!    deadline). A generator that fails or is late is left out and named in
//!    `degraded_reasons`; one that is not ready at all (no trained model
//!    yet) is left out without flagging the answer — that is the
//!    deployment's state, shown by its health, not a fault. Only when
//!    *every* generator fails is the request an error (FAILED_PRECONDITION).
//! 4. **Merge** ([`watchnext_core::candidates::merge`], the code the
//!    trainer's replay runs too): one candidate per video with every source
//!    that proposed it (provenance); the query video, the history and videos
//!    uploaded after the request's time are removed; the candidates are
//!    ordered by reciprocal-rank fusion of the generator lists (k = 60) and
//!    capped at `max_candidates`.
//! 5. **Rank** all candidates in one call with the arm's model version.
//!    If the ranker fails or is late, the list is ordered by the fusion
//!    score instead, flagged degraded.
//! 6. **Combine** (see [`crate::combiner`]) with the arm's weights, order,
//!    apply the per-topic cap, keep `num_results`.
//! 7. **Impressions**: one event per returned item (position, device,
//!    sources, the features the ranker used, model version, arm) to the
//!    feedback log — after the answer, or before it with
//!    `durable_impressions`.
//!
//! Each step's time goes to `watchnext_stage_seconds{stage}`
//! ([`watchnext_core::stages`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use watchnext_core::{
    candidates,
    catalog::{Catalog, FastHash},
    event::{Event, EventKind, FeatureVector, Impression, Source, Vote, source_name},
    generator::Generated,
    history::RecentWatches,
    ids::VideoId,
    model::TaskSpec,
    request::{History, Query, RankCandidate},
    stages,
};

use crate::{
    arms::Arms,
    clients::{GenerateFailure, GeneratorClient, ImpressionSink, RankerClient},
    combiner,
    config::{ConfigError, Settings, check_weights},
};

/// One returned item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub video: VideoId,
    /// 1-based.
    pub position: u32,
    pub score: f32,
    /// `(task, prediction)`; empty when the ranker did not score the list.
    pub predictions: Vec<(String, f32)>,
    pub sources: Vec<Vote>,
    pub features: Option<FeatureVector>,
}

/// A Recommend answer.
#[derive(Debug, Clone, Default)]
pub struct Recommendation {
    pub items: Vec<Item>,
    pub model_version: String,
    pub arm: String,
    pub degraded_reasons: Vec<String>,
}

/// What one request went through ([`Recommender::recommend_traced`]).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Each generator that answered, with its list (best first).
    pub lists: Vec<candidates::SourceList>,
    /// The merged candidates in fused (pre-ranking) order.
    pub candidates: Vec<candidates::Merged>,
    /// The ranked model's tasks (empty when the ranker did not answer).
    pub tasks: Vec<TaskSpec>,
    /// `candidates × tasks`, in `candidates` order.
    pub predictions: Vec<f32>,
}

/// A request that cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    /// The request names something that does not exist (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// No candidate source could answer at all (FAILED_PRECONDITION).
    #[error("no candidate generator could answer: {0}")]
    NoSources(String),
    /// Every generator that could answer was too busy: past its deadline
    /// or refused by a full CPU pool (RESOURCE_EXHAUSTED: retry with backoff).
    #[error("overloaded: no candidate generator answered in time: {0}")]
    Overloaded(String),
    /// Every generator was unreachable or too busy, at least one
    /// unreachable (UNAVAILABLE: retry with backoff; replicas come back).
    #[error("no candidate generator could be reached: {0}")]
    Unavailable(String),
    /// The generators answered, but with no candidate (FAILED_PRECONDITION):
    /// nothing to recommend, e.g. before any catalogue is loaded.
    #[error("no candidate to recommend: {0}")]
    NoCandidates(String),
}

/// Runtime-changeable combiner weights: defaults and per-arm overrides.
#[derive(Debug, Clone, Default)]
struct Weights {
    default: BTreeMap<String, f32>,
    arms: HashMap<String, BTreeMap<String, f32>>,
}

impl Weights {
    fn for_arm(&self, arm: &str) -> BTreeMap<String, f32> {
        let mut w = self.default.clone();
        if let Some(over) = self.arms.get(arm) {
            w.extend(over.iter().map(|(k, v)| (k.clone(), *v)));
        }
        w
    }
}

/// The front door.
#[derive(Debug)]
pub struct Recommender {
    settings: Settings,
    arms: Arms,
    weights: ArcSwap<Weights>,
    max_candidates: usize,
    generators: Vec<Arc<dyn GeneratorClient>>,
    ranker: Option<Arc<dyn RankerClient>>,
    impressions: Option<Arc<dyn ImpressionSink>>,
    history: Arc<RecentWatches>,
    catalog: ArcSwapOption<Catalog>,
    /// Tasks of the last model that ranked (to check weight changes and
    /// report the weights in force).
    known_tasks: ArcSwap<Vec<TaskSpec>>,
}

impl Recommender {
    pub fn new(
        settings: Settings,
        max_candidates: usize,
        generators: Vec<Arc<dyn GeneratorClient>>,
        ranker: Option<Arc<dyn RankerClient>>,
        impressions: Option<Arc<dyn ImpressionSink>>,
        history: Arc<RecentWatches>,
    ) -> Result<Self, ConfigError> {
        settings.validate()?;
        let arms = Arms::new(settings.arms.clone());
        let weights = Weights {
            default: settings.combiner.weights.clone(),
            arms: arms.all().iter().map(|a| (a.name.clone(), a.weights.clone())).collect(),
        };
        Ok(Self {
            settings,
            arms,
            weights: ArcSwap::from_pointee(weights),
            max_candidates: max_candidates.max(1),
            generators,
            ranker,
            impressions,
            history,
            catalog: ArcSwapOption::empty(),
            known_tasks: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// The catalogue for the per-topic cap.
    pub fn update_catalog(&self, catalog: &Arc<Catalog>) {
        self.catalog.store(Some(catalog.clone()));
    }

    /// The store of recent watches it fills histories from.
    pub fn history(&self) -> &Arc<RecentWatches> {
        &self.history
    }

    /// The arms.
    pub fn arms(&self) -> &Arms {
        &self.arms
    }

    /// Sets the default task weights (`arm` empty) or an arm's overrides;
    /// returns the weights now in effect for that arm. Unknown arms and
    /// tasks, negative or non-finite weights are refused.
    pub fn set_weights(&self, arm: &str, weights: BTreeMap<String, f32>) -> Result<BTreeMap<String, f32>, String> {
        check_weights("weights", &weights).map_err(|e| e.problem.clone() + " (" + &e.key + ")")?;
        if !arm.is_empty() && self.arms.named(arm).is_none() {
            let names: Vec<&str> = self.arms.all().iter().map(|a| a.name.as_str()).collect();
            return Err(format!("unknown experiment arm `{arm}` (arms: {})", names.join(", ")));
        }
        let known = self
            .ranker
            .as_ref()
            .and_then(|r| r.tasks())
            .unwrap_or_else(|| self.known_tasks.load().iter().map(|t| t.name.clone()).collect());
        if !known.is_empty()
            && let Some(task) = weights.keys().find(|t| !known.contains(t))
        {
            return Err(format!("unknown task `{task}` (the model's tasks: {})", known.join(", ")));
        }
        let mut next = (**self.weights.load()).clone();
        if arm.is_empty() {
            next.default.extend(weights);
        } else {
            next.arms.entry(arm.to_owned()).or_default().extend(weights);
        }
        let effective = if arm.is_empty() { next.default.clone() } else { next.for_arm(arm) };
        self.weights.store(Arc::new(next));
        tracing::info!(arm, ?effective, "combiner weights changed");
        Ok(effective)
    }

    /// The default arm's weight for every task of `tasks` (the serving
    /// model's, when the caller knows them; else those of the last model
    /// that ranked): configured or set weights first, the manifest's
    /// `combiner_weight` for the others. With no model known yet, the
    /// configured weights alone.
    pub fn weights_in_force(&self, tasks: Option<&[TaskSpec]>) -> BTreeMap<String, f32> {
        let configured = self.weights.load().for_arm("");
        let last = self.known_tasks.load();
        let tasks = tasks.unwrap_or(&last);
        if tasks.is_empty() {
            return configured;
        }
        combiner::terms(tasks, &configured, &self.settings.combiner.inverted_tasks)
            .into_iter()
            .map(|t| (t.task, t.weight))
            .collect()
    }

    /// Replaces every weight with a reloaded configuration's: the defaults
    /// and each arm's overrides (changes made through `set_weights` are
    /// discarded). The arms themselves cannot change without a restart.
    pub fn replace_weights(&self, settings: &Settings) -> Result<(), String> {
        settings.validate().map_err(|e| e.to_string())?;
        let mut names: Vec<&str> = settings.arms.iter().map(|a| a.name.as_str()).collect();
        let mut ours: Vec<&str> = if settings.arms.is_empty() {
            Vec::new()
        } else {
            self.arms.all().iter().map(|a| a.name.as_str()).collect()
        };
        names.sort_unstable();
        ours.sort_unstable();
        if names != ours {
            return Err("the experiment arms changed: restart the recommender to apply new arms".into());
        }
        let next = Weights {
            default: settings.combiner.weights.clone(),
            arms: settings.arms.iter().map(|a| (a.name.clone(), a.weights.clone())).collect(),
        };
        self.weights.store(Arc::new(next));
        Ok(())
    }

    /// Answers one request; `deadline` is what the client allows (its
    /// `grpc-timeout`), `None` for the configured default.
    pub async fn recommend(
        &self,
        query: Query,
        num_results: usize,
        arm: &str,
        deadline: Option<Duration>,
    ) -> Result<Recommendation, RecommendError> {
        self.answer(query, num_results, arm, deadline, None).await
    }

    /// [`Recommender::recommend`], also returning what the request went
    /// through (each generator's list, the merged candidates, the ranker's
    /// predictions), for offline evaluation of every stage of one request.
    pub async fn recommend_traced(
        &self,
        query: Query,
        num_results: usize,
        arm: &str,
        deadline: Option<Duration>,
    ) -> Result<(Recommendation, Trace), RecommendError> {
        let mut trace = Trace::default();
        let r = self.answer(query, num_results, arm, deadline, Some(&mut trace)).await?;
        Ok((r, trace))
    }

    /// The `n` best of a traced request's candidates under other combiner
    /// `weights` (tasks not named keep the arm's), with the per-topic cap;
    /// `None` when the request was not ranked.
    pub fn reorder(&self, trace: &Trace, arm: &str, weights: &BTreeMap<String, f32>, n: usize) -> Option<Vec<VideoId>> {
        if trace.tasks.is_empty() {
            return None;
        }
        let mut w = self.weights.load().for_arm(arm);
        w.extend(weights.iter().map(|(k, v)| (k.clone(), *v)));
        let terms = combiner::terms(&trace.tasks, &w, &self.settings.combiner.inverted_tasks);
        let t = trace.tasks.len();
        let mut scored: Vec<(usize, f32)> = (0..trace.candidates.len())
            .map(|i| (i, combiner::log_score(&terms, &trace.predictions[i * t..(i + 1) * t])))
            .collect();
        let videos = &trace.candidates;
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| videos[a.0].video.cmp(&videos[b.0].video)));
        let order = self.diversify(&scored.iter().map(|s| &videos[s.0].video).collect::<Vec<_>>(), n);
        Some(order.into_iter().map(|k| videos[scored[k].0].video.clone()).collect())
    }

    async fn answer(
        &self,
        mut query: Query,
        num_results: usize,
        arm: &str,
        deadline: Option<Duration>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Recommendation, RecommendError> {
        let started = Instant::now();
        let f = &self.settings.fanout;
        let deadline = deadline.unwrap_or(Duration::from_millis(f.default_deadline_ms));
        let left = || deadline.saturating_sub(started.elapsed());
        let arm = if arm.is_empty() {
            self.arms.assign(query.user.as_str())
        } else {
            self.arms.named(arm).ok_or_else(|| {
                let names: Vec<&str> = self.arms.all().iter().map(|a| a.name.as_str()).collect();
                RecommendError::Invalid(format!("experiment_arm: unknown arm `{arm}` (arms: {})", names.join(", ")))
            })?
        };
        if query.history.0.is_empty() {
            let mut entries = self.history.entries(&query.user);
            let keep = entries.len().saturating_sub(f.history_len);
            query.history = History(entries.split_off(keep));
        }
        let mut reasons = Vec::new();
        let mut notes = Vec::new();
        let mut not_ready = Vec::new();

        // Fan-out: every generator at once, each under its own deadline
        // (in-process ones run on the CPU pool, remote ones over gRPC).
        let timeout = Duration::from_millis(f.generator_timeout_ms).min(left().mul_f64(0.4));
        let shared = Arc::new(query.clone());
        // Failures that mean "too busy" (a deadline, a full CPU pool), not
        // "broken"; and those that mean "not reachable now" (UNAVAILABLE).
        let overloaded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let unreachable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let call = |g: Arc<dyn GeneratorClient>, q: Arc<Query>, max: usize| {
            let (overloaded, unreachable) = (overloaded.clone(), unreachable.clone());
            async move {
                let name = source_name(g.source());
                let asked = Instant::now();
                let answer = tokio::time::timeout(timeout, g.generate(q, max, timeout)).await;
                metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::generate(g.source()))
                    .record(asked.elapsed().as_secs_f64());
                match answer {
                    Ok(Ok(generated)) => Ok(generated),
                    Ok(Err(GenerateFailure::NotReady(e))) => Err((false, format!("{name} generator not ready: {e}"))),
                    Ok(Err(GenerateFailure::Failed(e))) => Err((true, format!("{name} generator failed: {e}"))),
                    Ok(Err(GenerateFailure::Overloaded(e))) => {
                        overloaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Err((true, format!("{name} generator refused: {e}")))
                    }
                    Ok(Err(GenerateFailure::Unreachable(e))) => {
                        unreachable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Err((true, format!("{name} generator unreachable: {e}")))
                    }
                    Err(_) => {
                        overloaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Err((true, format!("{name} generator timed out after {} ms", timeout.as_millis())))
                    }
                }
            }
        };
        // Polled together in this task, not spawned: each remote call or
        // CPU-pool job is sent when first polled and all are awaited at
        // once, so they still run side by side, without a task (and a
        // wake-up) per generator.
        let answers: Vec<Option<Result<Generated, (bool, String)>>> = futures_util::future::join_all(
            self.generators.iter().map(|g| call(g.clone(), shared.clone(), f.per_generator)),
        )
        .await
        .into_iter()
        .map(Some)
        .collect();
        let mut lists: Vec<(Source, Vec<(VideoId, f32)>)> = Vec::new();
        for (g, answer) in self.generators.iter().zip(answers) {
            let source = g.source();
            match answer {
                Some(Ok(generated)) => {
                    if generated.candidates.is_empty() && !generated.note.is_empty() {
                        notes.push(format!("{}: {}", source_name(source), generated.note));
                    }
                    lists.push((source, generated.candidates.into_iter().map(|c| (c.video, c.score)).collect()));
                }
                Some(Err((true, reason))) => reasons.push(reason),
                Some(Err((false, reason))) => not_ready.push(reason),
                None => reasons.push(format!("{} generator gave no answer", source_name(source))),
            }
            metrics::counter!("watchnext_recommender_generator_calls_total", "generator" => source_name(source),
                "outcome" => if lists.last().is_some_and(|(s, _)| *s == source) { "ok" } else { "degraded" })
            .increment(1);
        }
        if lists.is_empty() && !self.generators.is_empty() {
            let busy = overloaded.load(std::sync::atomic::Ordering::Relaxed);
            let gone = unreachable.load(std::sync::atomic::Ordering::Relaxed);
            // Only when every generator that failed was busy or unreachable
            // (one not ready yet is a state of the deployment, not why this
            // request failed); one that is broken makes it FAILED_PRECONDITION.
            let transient = busy + gone > 0 && busy + gone == reasons.len();
            let why = reasons.into_iter().chain(not_ready).collect::<Vec<String>>().join("; ");
            return Err(match (transient, gone) {
                (true, 0) => RecommendError::Overloaded(why),
                (true, _) => RecommendError::Unavailable(why),
                (false, _) => RecommendError::NoSources(why),
            });
        }
        if self.generators.is_empty() {
            return Err(RecommendError::NoSources("this process has no candidate generators configured".into()));
        }

        // Merge with provenance; drop the query video and the history.
        let merging = Instant::now();
        let catalog = self.catalog.load();
        let fused = candidates::merge(
            &lists,
            &candidates::excluded(&query),
            catalog.as_deref(),
            query.context.time_ms,
            self.max_candidates,
        );
        drop(catalog);
        metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::MERGE).record(merging.elapsed().as_secs_f64());
        if fused.is_empty() {
            let why: Vec<String> = reasons.into_iter().chain(not_ready).chain(notes).collect();
            return Err(RecommendError::NoCandidates(if why.is_empty() {
                "every candidate was the query video or in the user's history".into()
            } else {
                why.join("; ")
            }));
        }
        let fused_scores: Vec<f64> = fused.iter().map(|c| c.fused).collect();
        if let Some(trace) = trace.as_deref_mut() {
            trace.candidates.clone_from(&fused);
            trace.lists = std::mem::take(&mut lists);
        }
        let candidates: Arc<Vec<RankCandidate>> =
            Arc::new(fused.into_iter().map(|m| RankCandidate { video: m.video, sources: m.sources }).collect());

        // Rank (all candidates in one call) and combine.
        let ranked = match &self.ranker {
            None => {
                reasons.push("no ranker is configured: ordered by the generators' fused ranks".into());
                None
            }
            Some(ranker) => {
                let timeout = Duration::from_millis(f.ranker_timeout_ms).min(left());
                // Timed from the call: an in-process ranker's job starts on
                // the CPU pool as soon as it is sent.
                let asked = Instant::now();
                let call = ranker.rank(query.clone(), candidates.clone(), arm.model_version.clone(), timeout);
                let answer = tokio::time::timeout(timeout, call).await;
                metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::RANK)
                    .record(asked.elapsed().as_secs_f64());
                match answer {
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(e)) => {
                        reasons.push(format!("ranker unavailable ({e}): ordered by the generators' fused ranks"));
                        None
                    }
                    Err(_) => {
                        reasons.push(format!(
                            "ranker timed out after {} ms: ordered by the generators' fused ranks",
                            timeout.as_millis()
                        ));
                        None
                    }
                }
            }
        };
        let combining = Instant::now();
        // (candidate index, sort key), best first: the combiner's log score
        // when ranked (the product itself underflows with large weights),
        // the fused score otherwise.
        let mut scored: Vec<(usize, f32)> = match &ranked {
            Some(r) => {
                let weights = self.weights.load().for_arm(&arm.name);
                let terms = combiner::terms(&r.tasks, &weights, &self.settings.combiner.inverted_tasks);
                let t = r.tasks.len();
                (0..candidates.len())
                    .map(|i| (i, combiner::log_score(&terms, &r.predictions[i * t..(i + 1) * t])))
                    .collect()
            }
            None => fused_scores.iter().enumerate().map(|(i, &s)| (i, s as f32)).collect(),
        };
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| candidates[a.0].video.cmp(&candidates[b.0].video)));
        let order = self.diversify(&scored.iter().map(|s| &candidates[s.0].video).collect::<Vec<_>>(), num_results);
        let mut ranked = ranked;
        if let (Some(trace), Some(r)) = (trace, ranked.as_ref()) {
            trace.tasks.clone_from(&r.tasks);
            trace.predictions.clone_from(&r.predictions);
        }
        let mut features = ranked.as_mut().map(|r| std::mem::take(&mut r.features)).unwrap_or_default();
        let mut model_version = String::new();
        let mut tasks = Vec::new();
        let mut predictions: &[f32] = &[];
        if let Some(r) = ranked.as_ref() {
            self.known_tasks.store(Arc::new(r.tasks.clone()));
            model_version.clone_from(&r.model_version);
            tasks = r.tasks.iter().map(|t| t.name.as_str()).collect();
            predictions = &r.predictions;
        }
        let t = tasks.len();
        let mut items = Vec::with_capacity(order.len());
        for (position, &k) in order.iter().enumerate() {
            let (i, key) = scored[k];
            items.push(Item {
                video: candidates[i].video.clone(),
                position: position as u32 + 1,
                score: if ranked.is_some() { key.exp() } else { key },
                predictions: tasks
                    .iter()
                    .zip(&predictions[i * t..(i + 1) * t])
                    .map(|(n, &p)| ((*n).to_owned(), p))
                    .collect(),
                sources: candidates[i].sources.clone(),
                features: features.take(i),
            });
        }

        let recommendation = Recommendation { items, model_version, arm: arm.name.clone(), degraded_reasons: reasons };
        metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::COMBINE)
            .record(combining.elapsed().as_secs_f64());
        if !recommendation.degraded_reasons.is_empty() {
            metrics::counter!("watchnext_recommender_degraded_total").increment(1);
        }
        self.log_impressions(&query, &recommendation).await;
        metrics::histogram!("watchnext_recommender_seconds").record(started.elapsed().as_secs_f64());
        Ok(recommendation)
    }

    /// Indices into `ordered` of the returned list: in order, at most
    /// `max_per_topic` per primary topic, then filled from the rest.
    fn diversify(&self, ordered: &[&VideoId], n: usize) -> Vec<usize> {
        let cap = self.settings.fanout.max_per_topic;
        let catalog = self.catalog.load();
        let Some(catalog) = catalog.as_ref().filter(|_| cap > 0) else {
            return (0..ordered.len().min(n)).collect();
        };
        let mut per_topic: HashMap<&str, usize, FastHash> = HashMap::default();
        let (mut taken, mut skipped) = (Vec::with_capacity(n), Vec::new());
        for (i, v) in ordered.iter().enumerate() {
            if taken.len() == n {
                break;
            }
            let topic = catalog.get(v.as_str()).and_then(|video| video.topics.first()).map_or("", String::as_str);
            let count = per_topic.entry(topic).or_default();
            if topic.is_empty() || *count < cap {
                *count += 1;
                taken.push(i);
            } else {
                skipped.push(i);
            }
        }
        let missing = n.saturating_sub(taken.len());
        taken.extend(skipped.into_iter().take(missing));
        taken
    }

    async fn log_impressions(&self, query: &Query, r: &Recommendation) {
        let Some(sink) = self.impressions.clone() else { return };
        if r.items.is_empty() {
            return;
        }
        let events: Vec<Event> = r
            .items
            .iter()
            .map(|item| Event {
                timestamp_ms: query.context.time_ms,
                request_id: query.request_id.as_str().to_owned(),
                user: query.user.clone(),
                video: item.video.clone(),
                device: query.device,
                kind: EventKind::Impression(Impression {
                    position: item.position,
                    query_video: Some(query.query_video.clone()),
                    sources: item.sources.clone(),
                    features: item.features.clone(),
                    model_version: r.model_version.clone(),
                    experiment_arm: r.arm.clone(),
                    propensity: 0.0,
                }),
            })
            .collect();
        let n = events.len() as u64;
        let write = async move {
            let writing = Instant::now();
            let written = sink.record(events).await;
            metrics::histogram!(stages::STAGE_SECONDS, "stage" => stages::IMPRESSIONS)
                .record(writing.elapsed().as_secs_f64());
            match written {
                Ok(()) => metrics::counter!("watchnext_recommender_impressions_total").increment(n),
                Err(err) => {
                    metrics::counter!("watchnext_recommender_impressions_lost_total").increment(n);
                    tracing::error!(%err, events = n, "impressions could not be logged");
                }
            }
        };
        if self.settings.fanout.durable_impressions {
            write.await;
        } else {
            tokio::spawn(write);
        }
    }
}
