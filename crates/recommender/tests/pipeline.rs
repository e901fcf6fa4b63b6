//! The Recommend pipeline against scripted generators and rankers: merge
//! with provenance, exclusion of the query video and the history, deadlines,
//! degradation, the combiner's order, the per-topic cap, arms and
//! impressions.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use watchnext_core::{
    Device, History, Query, RequestContext, RequestId, UserId, VideoId,
    catalog::{Catalog, Video},
    event::{Event, EventKind, Source},
    generator::{Candidate, Generated},
    history::RecentWatches,
    model::{TaskKind, TaskSpec},
    request::{HistoryEntry, RankCandidate},
};
use watchnext_recommender::{
    RecommendError, Recommender,
    clients::{
        BoxFuture, GenerateFailure, GeneratorClient, ImpressionSink, LocalGenerator, Ranked, RankedFeatures,
        RankerClient,
    },
    config::{ArmConfig, FanoutConfig, Settings},
    cpu::CpuPool,
};

fn vid(s: &str) -> VideoId {
    VideoId::parse("v", s).expect("id")
}

/// Answers a fixed list, after `delay`, or fails.
#[derive(Debug)]
struct Scripted {
    source: Source,
    list: Vec<&'static str>,
    delay: Duration,
    fail: Option<GenerateFailure>,
}

impl GeneratorClient for Scripted {
    fn source(&self) -> Source {
        self.source
    }
    fn generate(&self, _q: Arc<Query>, max: usize, _t: Duration) -> BoxFuture<Result<Generated, GenerateFailure>> {
        let (list, delay, fail) = (self.list.clone(), self.delay, self.fail.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if let Some(f) = fail {
                return Err(f);
            }
            Ok(Generated {
                candidates: list
                    .iter()
                    .take(max)
                    .enumerate()
                    .map(|(i, v)| Candidate { video: vid(v), score: 1.0 / (i as f32 + 1.0) })
                    .collect(),
                ..Generated::default()
            })
        })
    }
}

fn scripted(source: Source, list: &[&'static str]) -> Arc<dyn GeneratorClient> {
    Arc::new(Scripted { source, list: list.to_vec(), delay: Duration::ZERO, fail: None })
}

/// Predicts click = the number in the video id / 100, dismiss = 0.
#[derive(Debug)]
struct ByNumber {
    calls: Mutex<Vec<String>>,
}

fn tasks() -> Vec<TaskSpec> {
    let task = |name: &str| TaskSpec {
        name: name.into(),
        kind: TaskKind::Binary,
        transform: "identity".into(),
        combiner_weight: 1.0,
        debiased: false,
    };
    vec![task("click"), task("dismiss")]
}

impl RankerClient for ByNumber {
    fn rank(
        &self,
        _q: Query,
        candidates: Arc<Vec<RankCandidate>>,
        version: String,
        _t: Duration,
    ) -> BoxFuture<Result<Ranked, String>> {
        self.calls.lock().expect("lock").push(version);
        Box::pin(async move {
            let mut predictions = Vec::new();
            for c in candidates.iter() {
                let n: f32 =
                    c.video.as_str().trim_start_matches(|ch: char| !ch.is_ascii_digit()).parse().unwrap_or(0.0);
                predictions.extend([n / 100.0, if c.video.as_str().starts_with("bad") { 0.9 } else { 0.0 }]);
            }
            Ok(Ranked { model_version: "m-test".into(), tasks: tasks(), predictions, features: RankedFeatures::None })
        })
    }
    fn tasks(&self) -> Option<Vec<String>> {
        Some(vec!["click".into(), "dismiss".into()])
    }
}

#[derive(Debug)]
struct Failing;

impl RankerClient for Failing {
    fn rank(&self, _: Query, _: Arc<Vec<RankCandidate>>, _: String, _: Duration) -> BoxFuture<Result<Ranked, String>> {
        Box::pin(async { Err("connection refused".to_owned()) })
    }
    fn tasks(&self) -> Option<Vec<String>> {
        None
    }
}

#[derive(Debug, Default)]
struct Captured(Mutex<Vec<Event>>);

impl ImpressionSink for Captured {
    fn record(&self, events: Vec<Event>) -> BoxFuture<Result<(), String>> {
        self.0.lock().expect("lock").extend(events);
        Box::pin(async { Ok(()) })
    }
}

fn query(history: &[&str]) -> Query {
    Query {
        request_id: RequestId::parse("r", "req-1").expect("id"),
        user: UserId::parse("u", "alice").expect("id"),
        query_video: vid("q1"),
        device: Device::Tablet,
        history: History(
            history.iter().map(|v| HistoryEntry { video: vid(v), watched_at_ms: 1, seconds_watched: 3.0 }).collect(),
        ),
        context: RequestContext { time_ms: 1_000, ..RequestContext::default() },
    }
}

fn settings(fanout: FanoutConfig) -> Settings {
    Settings { fanout: FanoutConfig { durable_impressions: true, ..fanout }, ..Settings::default() }
}

fn recommender(
    generators: Vec<Arc<dyn GeneratorClient>>,
    ranker: Option<Arc<dyn RankerClient>>,
    sink: Option<Arc<Captured>>,
    s: Settings,
) -> Recommender {
    let sink = sink.map(|s| s as Arc<dyn ImpressionSink>);
    Recommender::new(s, 500, generators, ranker, sink, Arc::new(RecentWatches::new(10))).expect("settings")
}

#[tokio::test]
async fn merges_with_provenance_excludes_watched_ranks_and_logs_impressions() {
    let sink = Arc::new(Captured::default());
    let ranker = Arc::new(ByNumber { calls: Mutex::new(Vec::new()) });
    let r = recommender(
        vec![scripted(Source::Topic, &["v10", "v50", "q1", "v70"]), scripted(Source::Cowatch, &["v50", "h1", "v30"])],
        Some(ranker.clone()),
        Some(sink.clone()),
        settings(FanoutConfig::default()),
    );
    let out = r.recommend(query(&["h1"]), 3, "", None).await.expect("answers");
    assert!(out.degraded_reasons.is_empty(), "{:?}", out.degraded_reasons);
    assert_eq!(out.model_version, "m-test");
    // Ordered by predicted click (the number), no query video, no history.
    let ids: Vec<&str> = out.items.iter().map(|i| i.video.as_str()).collect();
    assert_eq!(ids, ["v70", "v50", "v30"]);
    let v50 = &out.items[1];
    assert_eq!(v50.sources.iter().map(|s| s.source).collect::<Vec<_>>(), [Source::Topic, Source::Cowatch]);
    assert_eq!(v50.position, 2);
    assert!((v50.score - 0.5).abs() < 1e-6, "click^1 · (1 − dismiss)^1 = 0.5, got {}", v50.score);
    assert_eq!(v50.predictions, [("click".to_owned(), 0.5), ("dismiss".to_owned(), 0.0)]);

    let events = sink.0.lock().expect("lock").clone();
    assert_eq!(events.len(), 3);
    for (e, item) in events.iter().zip(&out.items) {
        let EventKind::Impression(imp) = &e.kind else { panic!("not an impression: {e:?}") };
        assert_eq!((e.video.as_str(), imp.position), (item.video.as_str(), item.position));
        assert_eq!((imp.model_version.as_str(), imp.experiment_arm.as_str()), ("m-test", "default"));
        assert_eq!(imp.query_video.as_ref().map(VideoId::as_str), Some("q1"));
        assert_eq!((e.request_id.as_str(), e.device, e.timestamp_ms), ("req-1", Device::Tablet, 1_000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_failing_generator_or_ranker_degrades_the_answer() {
    let slow = Arc::new(Scripted {
        source: Source::Sequence,
        list: vec!["v99"],
        delay: Duration::from_millis(300),
        fail: None,
    });
    let broken = Arc::new(Scripted {
        source: Source::Context,
        list: vec![],
        delay: Duration::ZERO,
        fail: Some(GenerateFailure::Failed("Unavailable: connection refused".into())),
    });
    let untrained = Arc::new(Scripted {
        source: Source::Cowatch,
        list: vec![],
        delay: Duration::ZERO,
        fail: Some(GenerateFailure::NotReady("no model".into())),
    });
    let fanout = FanoutConfig { generator_timeout_ms: 50, ..FanoutConfig::default() };
    let r = recommender(
        vec![scripted(Source::Topic, &["v10", "v20"]), slow, broken, untrained],
        Some(Arc::new(ByNumber { calls: Mutex::new(Vec::new()) })),
        None,
        settings(fanout.clone()),
    );
    let started = std::time::Instant::now();
    let out = r.recommend(query(&[]), 5, "", None).await.expect("answers");
    assert!(started.elapsed() < Duration::from_millis(250), "the slow generator was not waited for");
    assert_eq!(out.items.len(), 2);
    let reasons = out.degraded_reasons.join(" | ");
    assert!(reasons.contains("sequence generator timed out"), "{reasons}");
    assert!(reasons.contains("context generator failed"), "{reasons}");
    assert!(!reasons.contains("cowatch"), "not ready is not a fault: {reasons}");

    // Without a working ranker: ordered by the fused generator ranks, flagged.
    let r = recommender(
        vec![scripted(Source::Topic, &["v10", "v20", "v30"]), scripted(Source::Cowatch, &["v30"])],
        Some(Arc::new(Failing)),
        None,
        settings(fanout),
    );
    let out = r.recommend(query(&[]), 3, "", None).await.expect("answers");
    assert!(out.degraded_reasons.iter().any(|d| d.contains("ranker unavailable")), "{:?}", out.degraded_reasons);
    assert_eq!(out.items[0].video.as_str(), "v30", "two sources beat one in the fusion");
    assert!(out.items.iter().all(|i| i.predictions.is_empty()));
    assert_eq!(out.model_version, "");

    // Every generator failing is an error, not an empty list.
    let dead = Arc::new(Scripted {
        source: Source::Topic,
        list: vec![],
        delay: Duration::ZERO,
        fail: Some(GenerateFailure::Failed("down".into())),
    });
    let r = recommender(vec![dead], None, None, settings(FanoutConfig::default()));
    let err = r.recommend(query(&[]), 3, "", None).await.expect_err("no source");
    assert!(matches!(err, RecommendError::NoSources(_)), "{err}");

    // Every generator too busy (a full CPU pool, a deadline): overload, not a broken deployment.
    let busy = Arc::new(Scripted {
        source: Source::Topic,
        list: vec![],
        delay: Duration::ZERO,
        fail: Some(GenerateFailure::Overloaded("the CPU pool is busy".into())),
    });
    let late = Arc::new(Scripted {
        source: Source::Sequence,
        list: vec!["v1"],
        delay: Duration::from_millis(300),
        fail: None,
    });
    let fanout = FanoutConfig { generator_timeout_ms: 50, ..FanoutConfig::default() };
    let r = recommender(vec![busy, late], None, None, settings(fanout));
    let err = r.recommend(query(&[]), 3, "", None).await.expect_err("overloaded");
    assert!(matches!(err, RecommendError::Overloaded(_)), "{err}");
    assert!(err.to_string().contains("CPU pool is busy") && err.to_string().contains("timed out"), "{err}");

    // Remote generators that cannot be reached (their replicas down) make
    // the request UNAVAILABLE, busy ones beside them included; one broken
    // beside them makes it a deployment problem again.
    let gone = || {
        Arc::new(Scripted {
            source: Source::Cowatch,
            list: vec![],
            delay: Duration::ZERO,
            fail: Some(GenerateFailure::Unreachable("Unavailable: connection refused".into())),
        })
    };
    let busy = || {
        Arc::new(Scripted {
            source: Source::Topic,
            list: vec![],
            delay: Duration::ZERO,
            fail: Some(GenerateFailure::Overloaded("Resource exhausted".into())),
        })
    };
    let r = recommender(vec![gone(), busy()], None, None, settings(FanoutConfig::default()));
    let err = r.recommend(query(&[]), 3, "", None).await.expect_err("unreachable");
    assert!(matches!(err, RecommendError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("cowatch generator unreachable"), "{err}");
    let broken = Arc::new(Scripted {
        source: Source::Context,
        list: vec![],
        delay: Duration::ZERO,
        fail: Some(GenerateFailure::Failed("Internal: bug".into())),
    });
    let r = recommender(vec![gone(), broken], None, None, settings(FanoutConfig::default()));
    let err = r.recommend(query(&[]), 3, "", None).await.expect_err("broken");
    assert!(matches!(err, RecommendError::NoSources(_)), "{err}");
}

/// An in-process generator that computes for `busy` before answering
/// (synchronously, as an encoder and an index search do).
#[derive(Debug)]
struct Busy {
    busy: Duration,
}

impl watchnext_core::generator::Generator for Busy {
    fn source(&self) -> Source {
        Source::Sequence
    }

    fn generate(&self, _query: &Query, _max: usize) -> Generated {
        std::thread::sleep(self.busy);
        Generated {
            candidates: vec![Candidate { video: vid("v77"), score: 1.0 }],
            note: String::new(),
            version: "busy".into(),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_in_process_generator_past_its_deadline_is_left_out_and_does_not_hold_the_request() {
    let pool = CpuPool::new(2, 16);
    let slow: Arc<dyn GeneratorClient> =
        Arc::new(LocalGenerator(Arc::new(Busy { busy: Duration::from_millis(400) }), pool.clone()));
    let quick: Arc<dyn GeneratorClient> =
        Arc::new(LocalGenerator(Arc::new(Busy { busy: Duration::ZERO }), pool.clone()));
    let fanout = FanoutConfig { generator_timeout_ms: 50, ..FanoutConfig::default() };
    let r = recommender(
        vec![scripted(Source::Topic, &["v10", "v20"]), slow],
        Some(Arc::new(ByNumber { calls: Mutex::new(Vec::new()) })),
        None,
        settings(fanout.clone()),
    );
    // Even on a single-threaded runtime the request moves on at the deadline.
    let started = std::time::Instant::now();
    let out = r.recommend(query(&[]), 5, "", None).await.expect("answers");
    assert!(started.elapsed() < Duration::from_millis(300), "waited {:?} for a late generator", started.elapsed());
    assert!(
        out.degraded_reasons.iter().any(|d| d.contains("sequence generator timed out")),
        "{:?}",
        out.degraded_reasons
    );
    assert!(out.items.iter().all(|i| i.video.as_str() != "v77"));

    // The same generator in time is served from the pool.
    let r =
        recommender(vec![quick], Some(Arc::new(ByNumber { calls: Mutex::new(Vec::new()) })), None, settings(fanout));
    let out = r.recommend(query(&[]), 5, "", None).await.expect("answers");
    assert_eq!(out.items.iter().map(|i| i.video.as_str()).collect::<Vec<_>>(), ["v77"]);
    assert!(out.degraded_reasons.is_empty(), "{:?}", out.degraded_reasons);
}

#[tokio::test]
async fn the_per_topic_cap_spreads_the_list_and_fills_it_when_short() {
    let videos = ["v90", "v80", "v70", "v60", "v10"];
    let topics = ["cats", "cats", "cats", "dogs", "dogs"];
    let catalog = Catalog::new(
        videos
            .iter()
            .zip(topics)
            .map(|(v, t)| Video {
                id: (*v).into(),
                title: String::new(),
                topics: vec![t.into()],
                duration_seconds: 60.0,
                upload_ms: 0,
            })
            .collect(),
    )
    .expect("catalogue");
    let r = recommender(
        vec![scripted(Source::Topic, &videos)],
        Some(Arc::new(ByNumber { calls: Mutex::new(Vec::new()) })),
        None,
        settings(FanoutConfig { max_per_topic: 2, ..FanoutConfig::default() }),
    );
    r.update_catalog(&Arc::new(catalog));
    let ids = |out: &watchnext_recommender::Recommendation| {
        out.items.iter().map(|i| i.video.as_str().to_owned()).collect::<Vec<_>>()
    };
    let out = r.recommend(query(&[]), 4, "", None).await.expect("answers");
    assert_eq!(ids(&out), ["v90", "v80", "v60", "v10"], "at most two cats, then the dogs");
    let out = r.recommend(query(&[]), 5, "", None).await.expect("answers");
    assert_eq!(ids(&out), ["v90", "v80", "v60", "v10", "v70"], "the third cat fills the list");
}

#[tokio::test]
async fn arms_pin_their_model_version_and_weights() {
    let ranker = Arc::new(ByNumber { calls: Mutex::new(Vec::new()) });
    let arms = vec![ArmConfig {
        name: "no-clicks".into(),
        share: 1.0,
        model_version: "m-pinned".into(),
        weights: BTreeMap::from([("click".to_owned(), 0.0)]),
    }];
    let r = recommender(
        vec![scripted(Source::Topic, &["v10", "bad20"])],
        Some(ranker.clone()),
        None,
        Settings { arms, ..settings(FanoutConfig::default()) },
    );
    let out = r.recommend(query(&[]), 2, "", None).await.expect("answers");
    assert_eq!(out.arm, "no-clicks");
    assert_eq!(ranker.calls.lock().expect("lock").as_slice(), ["m-pinned"]);
    // Clicks do not count in this arm: only 1 − p(dismiss), which sinks "bad20".
    assert_eq!(out.items[0].video.as_str(), "v10");
    assert!((out.items[1].score - 0.1).abs() < 1e-5, "{}", out.items[1].score);
    // Changing the arm's weights at runtime; unknown tasks are refused.
    let effective = r.set_weights("no-clicks", BTreeMap::from([("dismiss".to_owned(), 0.0)])).expect("valid");
    assert_eq!(effective.get("click"), Some(&0.0));
    assert!(r.set_weights("", BTreeMap::from([("clicks".to_owned(), 1.0)])).is_err());
    let err = r.recommend(query(&[]), 2, "other", None).await.expect_err("unknown arm");
    assert!(err.to_string().contains("no-clicks"), "{err}");
}
