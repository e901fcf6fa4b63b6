//! Leave-last-out evaluation of candidate generators, side by side.
//!
//! For every user with at least two watches, the last watch is held out and
//! the one before it is the query video. Each user's events up to and
//! including that query watch, by position in the log, are training data
//! (nothing after it: no leakage of the held-out watch or the events leading
//! to it, even when they share the query watch's timestamp, as the last two
//! ratings of 94 of the 610 users of MovieLens `ml-latest-small` do; cut by
//! time, those held-out watches were training data). Generators get the
//! catalogue and
//! then `observe` the training events in log order; each case asks every
//! generator for `max(ks)` candidates.
//!
//! Reported per method (each generator, their union by reciprocal-rank
//! fusion, a popularity baseline and the item co-occurrence baseline of
//! [`crate::cooccurrence`], fed the same training events): HR@K (= recall@K:
//! one held-out item per case), NDCG@K, the share of cases with any
//! candidate, and the median `generate` latency. With the synthetic world's
//! ground truth, also NDCG@K graded by the true click probability r(u, v),
//! against the ideal list of the whole catalogue.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
    time::Instant,
};

use watchnext_core::{
    Device, History, Query, RequestContext, RequestId, UserId, VideoId,
    catalog::Catalog,
    event::{Event, EventKind, source_name},
    generator::Generator,
    request::HistoryEntry,
};
use watchnext_world::World;

use crate::{
    cooccurrence::{CooccurrenceBaseline, CooccurrenceConfig},
    metrics::{graded_ndcg, hit_at_k, ndcg_at_k},
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Cut-offs, e.g. `[10, 50, 100]`.
    pub ks: Vec<usize>,
    /// At most this many cases (users), taken in a fixed order.
    pub max_cases: usize,
    /// History items given with each query (most recent).
    pub history_len: usize,
    /// At most this many cases are scored against ground truth (it scans
    /// the whole catalogue per case).
    pub max_truth_cases: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { ks: vec![10, 50, 100], max_cases: 2_000, history_len: 50, max_truth_cases: 300 }
    }
}

/// One held-out watch.
#[derive(Debug, Clone)]
pub struct Case {
    pub user: UserId,
    pub device: Device,
    pub query: VideoId,
    pub history: Vec<HistoryEntry>,
    pub held_out: VideoId,
    /// When the query video was watched (the request time).
    pub time_ms: i64,
}

/// Splits a time-ordered event stream into training events and cases.
/// Training events are each user's events up to and including their query
/// watch by position in `events` (not by time: a held-out watch stamped
/// with the query watch's time is not training data).
pub fn leave_last_out(events: &[Event], history_len: usize) -> (Vec<&Event>, Vec<Case>) {
    // Each user's watches, in order, with their positions in the log.
    let mut watches: HashMap<&UserId, Vec<(usize, &Event)>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if matches!(e.kind, EventKind::Watch { .. }) {
            watches.entry(&e.user).or_default().push((i, e));
        }
    }
    let mut cutoff: HashMap<&UserId, usize> = HashMap::new();
    let mut cases = Vec::new();
    for (user, w) in &watches {
        if w.len() < 2 {
            continue;
        }
        let held = w[w.len() - 1].1;
        let (query_pos, query) = w[w.len() - 2];
        let earlier = &w[..w.len() - 2];
        let history: Vec<HistoryEntry> = earlier
            .iter()
            .map(|(_, e)| *e)
            .skip(earlier.len().saturating_sub(history_len))
            .chain(std::iter::once(query))
            .map(|e| HistoryEntry {
                video: e.video.clone(),
                watched_at_ms: e.timestamp_ms,
                seconds_watched: match e.kind {
                    EventKind::Watch { seconds_watched, .. } => seconds_watched,
                    _ => 0.0,
                },
            })
            .collect();
        cutoff.insert(*user, query_pos);
        // A re-watch cannot be proposed (generators skip history): not a fair case.
        if held.video == query.video || history.iter().any(|h| h.video == held.video) {
            continue;
        }
        cases.push(Case {
            user: (*user).clone(),
            device: query.device,
            query: query.video.clone(),
            history,
            held_out: held.video.clone(),
            time_ms: query.timestamp_ms,
        });
    }
    cases.sort_by(|a, b| a.user.cmp(&b.user));
    let training =
        events.iter().enumerate().filter(|(i, e)| cutoff.get(&e.user).is_none_or(|c| i <= c)).map(|(_, e)| e).collect();
    (training, cases)
}

/// The scores of one method.
#[derive(Debug, Clone, Default)]
pub struct MethodReport {
    pub name: String,
    /// HR@K (= recall@K) per K, in the order of the options' `ks`.
    pub hit: Vec<f64>,
    pub ndcg: Vec<f64>,
    /// NDCG@K against ground truth (synthetic world only).
    pub truth_ndcg: Option<Vec<f64>>,
    /// Share of cases that got at least one candidate.
    pub coverage: f64,
    /// Median `generate` time, microseconds (0 for the popularity baseline and the union).
    pub median_us: f64,
}

/// The side-by-side report.
#[derive(Debug, Clone, Default)]
pub struct GeneratorReport {
    pub ks: Vec<usize>,
    pub cases: usize,
    pub training_events: usize,
    pub methods: Vec<MethodReport>,
}

impl fmt::Display for GeneratorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "leave-last-out: {} cases, {} training events", self.cases, self.training_events)?;
        write!(f, "| method |")?;
        for k in &self.ks {
            write!(f, " HR@{k} |")?;
        }
        for k in &self.ks {
            write!(f, " NDCG@{k} |")?;
        }
        let truth = self.methods.iter().any(|m| m.truth_ndcg.is_some());
        if truth {
            for k in &self.ks {
                write!(f, " true NDCG@{k} |")?;
            }
        }
        writeln!(f, " coverage | median µs |")?;
        let columns = self.ks.len() * if truth { 3 } else { 2 } + 3;
        writeln!(f, "|{}", "---|".repeat(columns))?;
        for m in &self.methods {
            write!(f, "| {} |", m.name)?;
            for v in m.hit.iter().chain(&m.ndcg) {
                write!(f, " {v:.4} |")?;
            }
            if truth {
                match &m.truth_ndcg {
                    Some(t) => t.iter().try_for_each(|v| write!(f, " {v:.4} |"))?,
                    None => (0..self.ks.len()).try_for_each(|_| write!(f, " – |"))?,
                }
            }
            writeln!(f, " {:.3} | {:.1} |", m.coverage, m.median_us)?;
        }
        Ok(())
    }
}

/// Accumulates one method's metrics over cases.
struct Tally {
    name: String,
    ks: Vec<usize>,
    hit: Vec<f64>,
    ndcg: Vec<f64>,
    truth: Vec<f64>,
    truth_cases: usize,
    covered: usize,
    cases: usize,
    micros: Vec<f64>,
}

impl Tally {
    fn new(name: &str, ks: &[usize]) -> Self {
        Self {
            name: name.to_owned(),
            ks: ks.to_vec(),
            hit: vec![0.0; ks.len()],
            ndcg: vec![0.0; ks.len()],
            truth: vec![0.0; ks.len()],
            truth_cases: 0,
            covered: 0,
            cases: 0,
            micros: Vec::new(),
        }
    }

    fn add(&mut self, list: &[VideoId], held_out: &VideoId, truth: Option<(&[f64], &[f64])>) {
        let relevant: HashSet<VideoId> = std::iter::once(held_out.clone()).collect();
        self.cases += 1;
        self.covered += usize::from(!list.is_empty());
        for (i, &k) in self.ks.iter().enumerate() {
            self.hit[i] += hit_at_k(list, &relevant, k);
            self.ndcg[i] += ndcg_at_k(list, &relevant, k);
            if let Some((gains, ideal)) = truth {
                self.truth[i] += graded_ndcg(gains, ideal, k);
            }
        }
        self.truth_cases += usize::from(truth.is_some());
    }

    fn finish(mut self, with_truth: bool) -> MethodReport {
        let n = self.cases.max(1) as f64;
        self.micros.sort_by(f64::total_cmp);
        let median_us = self.micros.get(self.micros.len() / 2).copied().unwrap_or(0.0);
        let t = self.truth_cases.max(1) as f64;
        MethodReport {
            name: self.name,
            hit: self.hit.iter().map(|v| v / n).collect(),
            ndcg: self.ndcg.iter().map(|v| v / n).collect(),
            truth_ndcg: with_truth.then(|| self.truth.iter().map(|v| v / t).collect()),
            coverage: self.covered as f64 / n,
            median_us,
        }
    }
}

/// Ground truth for one case: the true click probability of each listed
/// video, and of the best videos of the whole catalogue (the ideal list).
struct Truth {
    gains: Vec<f64>,
    ideal: Vec<f64>,
}

fn truth_for(world: &World, case: &Case, lists: &[&[VideoId]], k_max: usize) -> Option<Vec<Truth>> {
    let user = world.user_index(case.user.as_str())?;
    let excluded: HashSet<&VideoId> = case.history.iter().map(|h| &h.video).chain([&case.query]).collect();
    let mut all: Vec<f64> = (0..world.num_videos())
        .filter(|v| !excluded.contains(world.video_id(*v)))
        .map(|v| world.click_prob(user, v))
        .collect();
    all.sort_by(|a, b| b.total_cmp(a));
    all.truncate(k_max);
    Some(
        lists
            .iter()
            .map(|list| Truth {
                gains: list
                    .iter()
                    .map(|v| world.video_index(v.as_str()).map_or(0.0, |i| world.click_prob(user, i)))
                    .collect(),
                ideal: all.clone(),
            })
            .collect(),
    )
}

/// Reciprocal-rank fusion of several lists (k = 60), best first.
fn fuse(lists: &[Vec<VideoId>]) -> Vec<VideoId> {
    let mut score: HashMap<&VideoId, f64> = HashMap::new();
    for list in lists {
        for (rank, v) in list.iter().enumerate() {
            *score.entry(v).or_default() += 1.0 / (60.0 + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(&VideoId, f64)> = score.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    fused.into_iter().map(|(v, _)| v.clone()).collect()
}

/// Runs the evaluation: feeds `catalog` and the training part of `events`
/// (time-ordered) to `generators`, then scores each on the held-out cases.
pub fn evaluate(
    generators: &[Arc<dyn Generator>],
    catalog: &Arc<Catalog>,
    events: &[Event],
    world: Option<&World>,
    options: &EvalOptions,
) -> GeneratorReport {
    let (training, mut cases) = leave_last_out(events, options.history_len);
    cases.truncate(options.max_cases);
    for g in generators {
        g.update_catalog(catalog);
    }
    let cooccurrence = CooccurrenceBaseline::new(CooccurrenceConfig::default());
    // Observe in chunks, as the log tailer does.
    let mut popularity: HashMap<&VideoId, u64> = HashMap::new();
    for chunk in training.chunks(4_096) {
        let owned: Vec<Event> = chunk.iter().map(|e| (*e).clone()).collect();
        for g in generators {
            g.observe(&owned);
        }
        cooccurrence.observe(&owned);
        for e in chunk {
            if matches!(e.kind, EventKind::Watch { .. }) {
                *popularity.entry(&e.video).or_default() += 1;
            }
        }
    }
    let mut popular: Vec<(&VideoId, u64)> = popularity.into_iter().collect();
    popular.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));

    let k_max = options.ks.iter().copied().max().unwrap_or(10);
    let mut tallies: Vec<Tally> = generators.iter().map(|g| Tally::new(source_name(g.source()), &options.ks)).collect();
    let mut union = Tally::new("union (RRF)", &options.ks);
    let mut baseline = Tally::new("popularity baseline", &options.ks);
    let mut cooccurring = Tally::new("item co-occurrence baseline", &options.ks);

    for (n, case) in cases.iter().enumerate() {
        let Ok(request_id) = RequestId::parse("request_id", &format!("eval-{n}")) else { continue };
        let query = Query {
            request_id,
            user: case.user.clone(),
            query_video: case.query.clone(),
            device: case.device,
            history: History(case.history.clone()),
            context: RequestContext { time_ms: case.time_ms, ..RequestContext::default() },
        };
        let mut lists = Vec::with_capacity(generators.len());
        for (g, tally) in generators.iter().zip(&mut tallies) {
            let started = Instant::now();
            let generated = g.generate(&query, k_max);
            tally.micros.push(started.elapsed().as_secs_f64() * 1e6);
            lists.push(generated.candidates.into_iter().map(|c| c.video).collect::<Vec<_>>());
        }
        let fused = fuse(&lists);
        let excluded: HashSet<&VideoId> = case.history.iter().map(|h| &h.video).chain([&case.query]).collect();
        let popular_list: Vec<VideoId> =
            popular.iter().map(|(v, _)| (*v).clone()).filter(|v| !excluded.contains(v)).take(k_max).collect();
        let started = Instant::now();
        let cooccurrence_list: Vec<VideoId> =
            cooccurrence.generate(&query, k_max).candidates.into_iter().map(|c| c.video).collect();
        cooccurring.micros.push(started.elapsed().as_secs_f64() * 1e6);

        let mut all_lists: Vec<&[VideoId]> = lists.iter().map(Vec::as_slice).collect();
        all_lists.push(&fused);
        all_lists.push(&popular_list);
        all_lists.push(&cooccurrence_list);
        let truth = match world {
            Some(w) if n < options.max_truth_cases => truth_for(w, case, &all_lists, k_max),
            _ => None,
        };
        let truth_of = |i: usize| truth.as_ref().map(|t| (t[i].gains.as_slice(), t[i].ideal.as_slice()));
        for (i, tally) in tallies.iter_mut().enumerate() {
            tally.add(all_lists[i], &case.held_out, truth_of(i));
        }
        union.add(&fused, &case.held_out, truth_of(generators.len()));
        baseline.add(&popular_list, &case.held_out, truth_of(generators.len() + 1));
        cooccurring.add(&cooccurrence_list, &case.held_out, truth_of(generators.len() + 2));
    }

    let with_truth = world.is_some();
    let mut methods: Vec<MethodReport> = tallies.into_iter().map(|t| t.finish(with_truth)).collect();
    methods.push(union.finish(with_truth));
    methods.push(baseline.finish(with_truth));
    methods.push(cooccurring.finish(with_truth));
    GeneratorReport { ks: options.ks.clone(), cases: cases.len(), training_events: training.len(), methods }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use watchnext_core::{
        catalog::Video,
        event::Source,
        generator::{Candidate, Generated},
    };

    use super::*;

    fn watch(t: i64, user: &str, video: &str) -> Event {
        Event {
            timestamp_ms: t,
            request_id: String::new(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind: EventKind::Watch { seconds_watched: 10.0, video_duration_seconds: 20.0 },
        }
    }

    /// Proposes the videos watched right after the query video in what it observed.
    #[derive(Debug, Default)]
    struct Successors {
        next: Mutex<HashMap<String, Vec<String>>>,
        last: Mutex<HashMap<String, String>>,
    }

    impl Generator for Successors {
        fn source(&self) -> Source {
            Source::Cowatch
        }
        fn generate(&self, query: &Query, max: usize) -> Generated {
            let next = self.next.lock().unwrap();
            let list = next.get(query.query_video.as_str()).cloned().unwrap_or_default();
            Generated {
                candidates: list
                    .into_iter()
                    .filter(|v| !query.history.0.iter().any(|h| h.video.as_str() == v))
                    .take(max)
                    .map(|v| Candidate { video: VideoId::parse("v", &v).unwrap(), score: 1.0 })
                    .collect(),
                ..Generated::default()
            }
        }
        fn observe(&self, events: &[Event]) {
            let mut last = self.last.lock().unwrap();
            let mut next = self.next.lock().unwrap();
            for e in events {
                if let Some(prev) = last.insert(e.user.as_str().to_owned(), e.video.as_str().to_owned()) {
                    next.entry(prev).or_default().push(e.video.as_str().to_owned());
                }
            }
        }
    }

    #[test]
    fn leave_last_out_holds_out_the_last_watch_without_leaking_it() {
        let events = vec![
            watch(1, "u1", "a"),
            watch(2, "u1", "b"),
            watch(3, "u2", "a"),
            watch(4, "u1", "c"),
            watch(5, "u2", "b"),
            watch(6, "u3", "a"),
            watch(7, "u2", "a"), // re-watch of history: no fair case for u2
            // u4's last two watches share a timestamp (MovieLens often
            // stamps a user's last ratings alike): y is still held out.
            watch(8, "u4", "a"),
            watch(9, "u4", "x"),
            watch(9, "u4", "y"),
            watch(9, "u5", "y"),
        ];
        let (training, cases) = leave_last_out(&events, 10);
        assert_eq!(cases.len(), 2);
        let case = &cases[0];
        assert_eq!((case.user.as_str(), case.query.as_str(), case.held_out.as_str()), ("u1", "b", "c"));
        let history: Vec<_> = case.history.iter().map(|h| h.video.as_str()).collect();
        assert_eq!(history, ["a", "b"]);
        assert!(!training.iter().any(|e| e.user.as_str() == "u1" && e.video.as_str() == "c"), "held-out not seen");
        assert!(training.iter().any(|e| e.user.as_str() == "u3"), "users without cases train fully");
        assert!(!training.iter().any(|e| e.timestamp_ms == 7), "u2's events after its query are cut too");
        let tie = &cases[1];
        assert_eq!((tie.user.as_str(), tie.query.as_str(), tie.held_out.as_str()), ("u4", "x", "y"));
        assert_eq!(tie.time_ms, 9);
        let u4: Vec<_> = training.iter().filter(|e| e.user.as_str() == "u4").map(|e| e.video.as_str()).collect();
        assert_eq!(u4, ["a", "x"], "the held-out watch at the query's timestamp is not training data");
        assert!(training.iter().any(|e| e.user.as_str() == "u5"), "other users' events at that time are");
        assert_eq!(training.len(), events.len() - 3);
    }

    #[test]
    fn a_generator_that_learned_the_pattern_beats_popularity() {
        // Every user watches x then y; and many watch "pop" once.
        let mut events = Vec::new();
        let mut t = 0;
        for u in 0..40 {
            t += 10;
            events.push(watch(t, &format!("p{u}"), "pop"));
        }
        // Five users show the x -> y pattern in training (their held-out is z)...
        for u in 0..5 {
            t += 10;
            events.push(watch(t, &format!("w{u}"), "x"));
            events.push(watch(t + 1, &format!("w{u}"), "y"));
            events.push(watch(t + 2, &format!("w{u}"), "z"));
        }
        // ...twenty more follow it, with y held out.
        for u in 0..20 {
            t += 10;
            events.push(watch(t, &format!("u{u}"), "x"));
            events.push(watch(t + 1, &format!("u{u}"), "y"));
        }
        let catalog = Arc::new(
            Catalog::new(
                ["pop", "x", "y", "z"]
                    .iter()
                    .map(|id| Video {
                        id: (*id).into(),
                        title: String::new(),
                        topics: vec![],
                        duration_seconds: 0.0,
                        upload_ms: 0,
                    })
                    .collect(),
            )
            .unwrap(),
        );
        let generator: Arc<dyn Generator> = Arc::new(Successors::default());
        let options = EvalOptions { ks: vec![1, 2], ..EvalOptions::default() };
        let report = evaluate(&[generator], &catalog, &events, None, &options);
        assert_eq!(report.cases, 25);
        let cowatch = &report.methods[0];
        let baseline = report.methods.iter().find(|m| m.name == "popularity baseline").unwrap();
        // The 20 x -> y cases have a precedent; the 5 y -> z cases never do.
        assert!((cowatch.hit[0] - 0.8).abs() < 1e-9, "{report}");
        assert_eq!(baseline.hit[0], 0.0, "popularity proposes `pop` first: {report}");
        assert!((baseline.hit[1] - 0.8).abs() < 1e-9, "then `y`: {report}");
        assert!(report.to_string().contains("| cowatch |"), "{report}");
        // The co-occurrence baseline learned x -> y from the w users, and
        // offers nothing for y (its only partner, x, is in the history).
        let cooccurrence = report.methods.iter().find(|m| m.name == "item co-occurrence baseline").unwrap();
        assert!((cooccurrence.hit[0] - 0.8).abs() < 1e-9, "{report}");
        assert!((cooccurrence.coverage - 0.8).abs() < 1e-9, "{report}");
    }
}
