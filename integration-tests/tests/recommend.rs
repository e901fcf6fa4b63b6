//! Recommend end to end over loopback gRPC, on a toy world with a trained
//! ranking model: ordered, de-duplicated items with provenance, per-task
//! predictions and positions; combiner weights changed at runtime reorder
//! as the formula says; arms are stable per user; every returned item is
//! logged as an impression; reloads under load fail no request; a missing
//! ranker or generator degrades the answer instead of failing it.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tonic::Code;
use watchnext_core::{Role, event::EventKind};
use watchnext_proto::v1::{
    self as pb, CandidateSource, RecommendRequest, RecommendResponse, ReloadModelRequest, SetCombinerWeightsRequest,
    StatusRequest,
};
use watchnext_testkit::{TestServer, prepare_world, train_ranker, with_admin_token};

fn request(user: &str, video: &str, n: u32) -> RecommendRequest {
    RecommendRequest {
        user_id: user.into(),
        query_video_id: video.into(),
        num_results: n,
        device: pb::DeviceType::Phone as i32,
        ..Default::default()
    }
}

fn world_with_models(dir: &Path, versions: &[&str]) -> anyhow::Result<()> {
    prepare_world(dir, 3, 60_000)?;
    for (i, v) in versions.iter().enumerate() {
        train_ranker(dir, v, i as u64 + 1)?;
    }
    Ok(())
}

async fn server(versions: &[&str], adjust: impl FnOnce(&mut watchnext_core::Config)) -> TestServer {
    let versions: Vec<String> = versions.iter().map(|v| (*v).to_owned()).collect();
    TestServer::start_with_data(
        move |dir| world_with_models(dir, &versions.iter().map(String::as_str).collect::<Vec<_>>()),
        adjust,
    )
    .await
    .expect("server on a toy world")
}

/// A video watched in the log (so every generator knows it).
fn popular_video(server: &TestServer) -> String {
    popular_video_in(server.data_dir())
}

fn popular_video_in(dir: &Path) -> String {
    let log = watchnext_feedback::LogReader::open(dir.join("feedback"), 1).expect("log");
    let mut counts = std::collections::HashMap::<String, u32>::new();
    for (_, e) in log.map(|r| r.expect("record")) {
        if e.kind.name() == "watch" {
            *counts.entry(e.video.as_str().to_owned()).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(v, n)| (*n, v.clone())).expect("some watch").0
}

/// Recommend, retrying while the generators are still replaying the log.
async fn recommend(server: &TestServer, req: RecommendRequest) -> RecommendResponse {
    let mut client = server.recommender();
    for _ in 0..100 {
        if let Ok(r) = client.recommend(req.clone()).await {
            let r = r.into_inner();
            if r.items.len() == req.num_results as usize && !r.degraded {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.recommend(req).await.expect("recommend").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_returns_a_ranked_list_with_provenance_and_logs_every_impression() {
    let server = server(&["m1"], |_| {}).await;
    let video = popular_video(&server);
    let mut req = request("u42", &video, 20);
    req.recent_history = vec![pb::HistoryItem { video_id: "v5".into(), watched_at_ms: 1, seconds_watched: 30.0 }];
    let r = recommend(&server, req).await;
    assert!(!r.degraded, "{:?}", r.degraded_reasons);
    assert_eq!(r.model_version, "m1");
    assert_eq!(r.experiment_arm, "default");
    assert_eq!(r.items.len(), 20);
    let ids: HashSet<&str> = r.items.iter().map(|i| i.video_id.as_str()).collect();
    assert_eq!(ids.len(), 20, "de-duplicated");
    assert!(!ids.contains(video.as_str()) && !ids.contains("v5"), "no query video, no history");
    for (i, item) in r.items.iter().enumerate() {
        assert_eq!(item.position, i as u32 + 1);
        assert!(!item.sources.is_empty(), "provenance of {}", item.video_id);
        let tasks: HashSet<&str> = item.task_predictions.keys().map(String::as_str).collect();
        assert_eq!(tasks, ["click", "watch", "like", "dismiss", "rating"].into_iter().collect());
    }
    assert!(r.items.windows(2).all(|w| w[0].score >= w[1].score), "ordered by score");
    let multi = r.items.iter().filter(|i| i.sources.len() > 1).count();
    assert!(r.items.iter().all(|i| i.sources.iter().all(|s| s.source != CandidateSource::Unspecified as i32)));
    eprintln!("{multi} of 20 items were proposed by several generators");

    // An impression per item, with position, sources, features, model, arm.
    let mut impressions = Vec::new();
    for _ in 0..100 {
        let log = watchnext_feedback::LogReader::open(server.data_dir().join("feedback"), 1).expect("log");
        impressions = log
            .map(|r| r.expect("record").1)
            .filter(|e| e.request_id == r.request_id)
            .filter_map(|e| match e.kind {
                EventKind::Impression(i) => Some((e.video.as_str().to_owned(), i)),
                _ => None,
            })
            .collect();
        if impressions.len() == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(impressions.len(), 20, "one impression per returned item");
    for (video, imp) in &impressions {
        let item = r.items.iter().find(|i| &i.video_id == video).expect("a returned item");
        assert_eq!(imp.position, item.position);
        assert_eq!((imp.model_version.as_str(), imp.experiment_arm.as_str()), ("m1", "default"));
        assert_eq!(imp.sources.len(), item.sources.len());
        let features = imp.features.as_ref().expect("the features the ranker used");
        assert_eq!(features.dense.len(), watchnext_core::features::DENSE_LEN);
    }

    // Expert utilisation over live traffic is a metric, per task and expert.
    let body = watchnext_testkit::scrape_metrics(server.metrics_addr().expect("metrics")).await.unwrap();
    for expert in 0..3 {
        let series = format!("watchnext_ranker_gate_weight{{task=\"click\",expert=\"{expert}\"}}");
        let line = body.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series} missing"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&value), "{line}");
    }
    assert!(body.contains("watchnext_recommender_impressions_total"), "impressions counted");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combiner_weights_changed_at_runtime_reorder_as_the_formula_predicts() {
    let server = server(&["m1"], |_| {}).await;
    let video = popular_video(&server);
    let before = recommend(&server, request("u7", &video, 30)).await;
    // Only the click probability counts: the order must be by click, and the score is p(click).
    let weights = [("click", 1.0), ("watch", 0.0), ("like", 0.0), ("dismiss", 0.0), ("rating", 0.0)];
    let set = SetCombinerWeightsRequest {
        experiment_arm: String::new(),
        weights: weights.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    };
    let effective = server.admin().set_combiner_weights(with_admin_token(set)).await.unwrap().into_inner();
    assert_eq!(effective.weights.get("click"), Some(&1.0));
    let after = recommend(&server, request("u7", &video, 30)).await;
    for item in &after.items {
        let click = item.task_predictions["click"];
        assert!((item.score - click).abs() <= 1e-5, "{}: score {} vs click {click}", item.video_id, item.score);
    }
    assert!(after.items.windows(2).all(|w| w[0].task_predictions["click"] >= w[1].task_predictions["click"]));
    let order = |r: &RecommendResponse| r.items.iter().map(|i| i.video_id.clone()).collect::<Vec<_>>();
    assert_ne!(order(&before), order(&after), "click-only weights change the order of the default blend");
    // Admin.Status reports the weights in force for every task of the model, and the model.
    let status = server.admin().status(with_admin_token(StatusRequest {})).await.unwrap().into_inner();
    let expected: std::collections::HashMap<String, f32> = weights.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    assert_eq!(status.combiner_weights, expected);
    assert_eq!(status.models.len(), 1, "{:?}", status.models);
    assert!(status.models[0].version == "m1" && status.models[0].active && status.models[0].loaded_at_ms > 0);
    assert!(status.models[0].path.ends_with("m1"), "{}", status.models[0].path);

    // At the largest weight the product underflows for every candidate; the
    // order still follows the click probability, not the video id.
    let set = SetCombinerWeightsRequest {
        experiment_arm: String::new(),
        weights: [("click".to_owned(), 100.0)].into_iter().collect(),
    };
    server.admin().set_combiner_weights(with_admin_token(set)).await.unwrap();
    let heavy = recommend(&server, request("u7", &video, 30)).await;
    let clicks: Vec<f32> = heavy.items.iter().map(|i| i.task_predictions["click"]).collect();
    assert!(clicks.windows(2).all(|w| w[0] >= w[1]), "click^100 orders by click, not by video id: {clicks:?}");
    assert!(clicks.first() > clicks.last(), "the predictions differ, so the order is the model's: {clicks:?}");
    let too_heavy = SetCombinerWeightsRequest {
        experiment_arm: String::new(),
        weights: [("click".to_owned(), f32::MAX)].into_iter().collect(),
    };
    let err = server.admin().set_combiner_weights(with_admin_token(too_heavy)).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("0..=100"), "{err:?}");

    // Watch time only: the order follows the predicted watch time.
    let set = SetCombinerWeightsRequest {
        experiment_arm: String::new(),
        weights: [("click".to_owned(), 0.0), ("watch".to_owned(), 1.0)].into_iter().collect(),
    };
    server.admin().set_combiner_weights(with_admin_token(set)).await.unwrap();
    let watch = recommend(&server, request("u7", &video, 30)).await;
    assert!(watch.items.windows(2).all(|w| w[0].task_predictions["watch"] >= w[1].task_predictions["watch"]));

    // Unknown tasks and arms are refused.
    let bad = SetCombinerWeightsRequest { experiment_arm: String::new(), weights: [("clicks".to_owned(), 1.0)].into() };
    let err = server.admin().set_combiner_weights(with_admin_token(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("clicks"), "{}", err.message());
    let bad = SetCombinerWeightsRequest { experiment_arm: "nope".into(), weights: [("click".to_owned(), 1.0)].into() };
    assert_eq!(
        server.admin().set_combiner_weights(with_admin_token(bad)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arms_are_stable_per_user_and_forced_arms_are_checked() {
    let server = server(&["m1"], |c| {
        c.recommender.arms = serde_json::json!([
            { "name": "control", "share": 1.0 },
            { "name": "click-heavy", "share": 1.0, "weights": { "click": 3.0, "watch": 0.2 } }
        ]);
    })
    .await;
    let video = popular_video(&server);
    let mut arms = std::collections::HashMap::new();
    for u in 0..12 {
        let user = format!("arm-user-{u}");
        let first = recommend(&server, request(&user, &video, 5)).await.experiment_arm;
        let again = recommend(&server, request(&user, &video, 5)).await.experiment_arm;
        assert_eq!(first, again, "{user} switched arms");
        *arms.entry(first).or_insert(0) += 1;
    }
    assert_eq!(arms.len(), 2, "12 users land in both arms: {arms:?}");
    let mut forced = request("arm-user-0", &video, 5);
    forced.experiment_arm = "click-heavy".into();
    assert_eq!(recommend(&server, forced.clone()).await.experiment_arm, "click-heavy");
    forced.experiment_arm = "nope".into();
    let err = server.recommender().recommend(forced).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("control"), "{}", err.message());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_documented_status() {
    let server = server(&["m1"], |_| {}).await;
    let video = popular_video(&server);
    let mut client = server.recommender();
    let err = client.recommend(request("u1", &video, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client.recommend(request("u1", &video, 100_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("num_results"), "{}", err.message());
    let err = client.recommend(request("", &video, 5)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // An unknown user watching an unknown video still gets a (cold-start) list.
    let cold = recommend(&server, request("brand-new-user", "brand-new-video", 5)).await;
    assert_eq!(cold.items.len(), 5, "{cold:?}");
    // A model directory of another feature schema is refused, the active one stays.
    let dir = server.data_dir().join("models").join("m1");
    let foreign = server.data_dir().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    for f in ["model.onnx", "manifest.json"] {
        std::fs::copy(dir.join(f), foreign.join(f)).unwrap();
    }
    let mut manifest = watchnext_core::model::ModelManifest::read(&foreign).unwrap();
    manifest.schema.hash = "0000000000000000".into();
    manifest.write(&foreign).unwrap();
    let reload = ReloadModelRequest { model_dir: foreign.display().to_string(), rollback: false };
    let err = server.admin().reload_model(with_admin_token(reload)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("schema"), "{}", err.message());
    let err = server.admin().reload_model(ReloadModelRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(recommend(&server, request("u1", &video, 5)).await.model_version, "m1");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_models_under_load_fails_no_request() {
    let server = server(&["m1", "m2"], |c| c.ranker.model_poll_seconds = 0).await;
    let video = popular_video(&server);
    let models = server.data_dir().join("models");
    let broken = server.data_dir().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(models.join("m1/manifest.json"), broken.join("manifest.json")).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not a graph").unwrap();
    recommend(&server, request("warm", &video, 10)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let versions = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut hammers = Vec::new();
    for t in 0..3 {
        let (mut client, stop, ok, failed, versions) =
            (server.recommender(), stop.clone(), ok.clone(), failed.clone(), versions.clone());
        let video = video.clone();
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.recommend(request(&format!("load-{t}"), &video, 10)).await {
                    Ok(r) if r.get_ref().items.len() == 10 && !r.get_ref().degraded => {
                        versions.lock().unwrap().insert(r.get_ref().model_version.clone());
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut admin = server.admin();
    let reload = |dir: &Path| ReloadModelRequest { model_dir: dir.display().to_string(), rollback: false };
    // The server started with the newest (m2); make m1 active, m2 the rollback target.
    let r = admin.reload_model(with_admin_token(reload(&models.join("m1")))).await.unwrap().into_inner();
    assert_eq!((r.active_version.as_str(), r.previous_version.as_str()), ("m1", "m2"));
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = admin.reload_model(with_admin_token(reload(&models.join("m2")))).await.unwrap().into_inner();
        assert_eq!(r.active_version, "m2");
        let err = admin.reload_model(with_admin_token(reload(&broken))).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "round {round}: {err:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let back = ReloadModelRequest { model_dir: String::new(), rollback: true };
        let r = admin.reload_model(with_admin_token(back)).await.unwrap().into_inner();
        assert_eq!((r.active_version.as_str(), r.previous_version.as_str()), ("m1", "m2"));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed or degraded request during reloads");
    assert!(ok.load(Ordering::Relaxed) > 20, "{} answers", ok.load(Ordering::Relaxed));
    let seen = versions.lock().unwrap().clone();
    assert_eq!(seen, ["m1".to_owned(), "m2".to_owned()].into_iter().collect(), "both models served");
    let status = admin.status(with_admin_token(StatusRequest {})).await.unwrap().into_inner();
    let models: Vec<(&str, bool)> = status.models.iter().map(|m| (m.version.as_str(), m.active)).collect();
    assert_eq!(models.len(), 2, "{models:?}");
    assert!(models.contains(&("m1", true)) && models.contains(&("m2", false)), "{models:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ranking_model_the_answer_is_degraded_not_an_error() {
    let server = server(&[], |_| {}).await;
    let video = popular_video(&server);
    let mut r = RecommendResponse::default();
    for _ in 0..100 {
        r = server.recommender().recommend(request("u3", &video, 10)).await.unwrap().into_inner();
        if r.items.len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.items.len(), 10);
    assert!(r.degraded && r.degraded_reasons.iter().any(|d| d.contains("ranker")), "{:?}", r.degraded_reasons);
    assert_eq!(r.model_version, "");
    assert!(r.items.iter().all(|i| i.task_predictions.is_empty() && !i.sources.is_empty()));
    assert!(r.items.windows(2).all(|w| w[0].score >= w[1].score));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_deployment_answers_degraded_when_a_generator_role_dies() {
    let data = tempfile::tempdir().unwrap();
    world_with_models(data.path(), &["m1"]).unwrap();
    let dir = data.path().to_owned();
    let at = |role: Role| {
        let dir = dir.clone();
        move |c: &mut watchnext_core::Config| {
            c.server.role = role;
            c.data.dir = dir;
        }
    };
    let feedback = TestServer::start(at(Role::Feedback)).await.unwrap();
    let url = format!("http://{}", feedback.addr());
    let follow = |role: Role| {
        let (dir, url) = (dir.clone(), url.clone());
        move |c: &mut watchnext_core::Config| {
            c.server.role = role;
            c.data.dir = dir;
            c.endpoints.feedback = url;
        }
    };
    let topic = TestServer::start(follow(Role::Generator(CandidateSource::Topic))).await.unwrap();
    let context = TestServer::start(follow(Role::Generator(CandidateSource::Context))).await.unwrap();
    let ranker = TestServer::start(follow(Role::Ranker)).await.unwrap();
    let (topic_url, context_url, ranker_url) =
        (format!("http://{}", topic.addr()), format!("http://{}", context.addr()), format!("http://{}", ranker.addr()));
    let front = TestServer::start(move |c| {
        follow(Role::Recommender)(c);
        c.endpoints.generators.insert("topic".into(), topic_url);
        c.endpoints.generators.insert("context".into(), context_url);
        c.endpoints.ranker = ranker_url;
    })
    .await
    .unwrap();
    let video = popular_video_in(&dir);
    let healthy = recommend(&front, request("split-user", &video, 10)).await;
    assert!(!healthy.degraded, "{:?}", healthy.degraded_reasons);
    assert_eq!(healthy.model_version, "m1");
    let sources: HashSet<i32> = healthy.items.iter().flat_map(|i| i.sources.iter().map(|s| s.source)).collect();
    assert!(sources.contains(&(CandidateSource::Topic as i32)) || sources.contains(&(CandidateSource::Context as i32)));

    topic.stop().await.unwrap();
    let r = front.recommender().recommend(request("split-user", &video, 10)).await.unwrap().into_inner();
    assert!(r.degraded && r.degraded_reasons.iter().any(|d| d.contains("topic")), "{:?}", r.degraded_reasons);
    assert_eq!(r.items.len(), 10, "still a full list from the context generator");
    assert_eq!(r.model_version, "m1", "still ranked");
    assert!(r.items.iter().all(|i| i.sources.iter().all(|s| s.source != CandidateSource::Topic as i32)));

    // With every generator's replicas down the request cannot be served now:
    // UNAVAILABLE (retry), not FAILED_PRECONDITION (a deployment to fix).
    context.stop().await.unwrap();
    let err = front.recommender().recommend(request("split-user", &video, 10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("unreachable") && err.message().contains("retry"), "{}", err.message());
    for s in [front, ranker, feedback] {
        s.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_load_test_measures_a_running_server() {
    let server = server(&["m1"], |_| {}).await;
    let video = popular_video(&server);
    recommend(&server, request("warm", &video, 10)).await;
    let mix = watchnext_server::loadtest::request_mix(server.data_dir(), 200, 10).unwrap();
    assert_eq!(mix.len(), 200);
    assert!(mix.iter().all(|r| !r.user_id.is_empty() && !r.query_video_id.is_empty() && r.num_results == 10));
    let args = watchnext_server::loadtest::LoadtestArgs {
        addr: format!("http://{}", server.addr()),
        rate: 40.0,
        duration: 2.0,
        warmup: 0.5,
        connections: 2,
        num_results: 10,
        deadline_ms: 2_000,
        max_in_flight: 1_000,
        metrics: vec![server.metrics_addr().expect("metrics enabled").to_string()],
        json: None,
        call: watchnext_server::loadtest::CallKind::Recommend,
        batch: 1,
    };
    let report = watchnext_server::loadtest::run(&args, watchnext_server::loadtest::Mix::Recommend(mix)).await.unwrap();
    assert_eq!(report.count, 80);
    assert_eq!(report.statuses.get("OK"), Some(&80), "{report}");
    assert_eq!(report.dropped, 0);
    assert!((report.achieved_rate - 40.0).abs() < 12.0, "{report}");
    let p: Vec<f64> = report.percentiles.iter().map(|(_, ms)| *ms).collect();
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{report}");
    assert!(report.fastest_ms > 0.0 && report.fastest_ms <= p[0] && p[p.len() - 1] <= report.slowest_ms, "{report}");
    // Time per stage, read from the server's own /metrics over the window.
    let stage = |name: &str| report.stages.iter().find(|s| s.stage == name);
    for name in ["generate_topic", "merge", "rank", "features", "onnx", "combine", "impressions"] {
        let s = stage(name).unwrap_or_else(|| panic!("no `{name}` stage in {report}"));
        assert!(s.calls >= 70 && s.mean_ms > 0.0 && s.p50_ms <= s.p99_ms, "{s:?}\n{report}");
    }
    let whole = stage(watchnext_server::stage_report::RECOMMEND_ROW).expect("the whole Recommend row");
    assert!(whole.calls >= 70 && (whole.share_of_recommend - 1.0).abs() < 1e-9, "{whole:?}");
    let (rank, onnx) = (stage("rank").expect("rank"), stage("onnx").expect("onnx"));
    assert!(onnx.share_of_recommend < rank.share_of_recommend, "ONNX Runtime runs inside the rank call: {report}");
    assert!(rank.share_of_recommend < 1.0, "{report}");
    eprintln!("{report}");

    // Record batches: every batch acknowledged, its events in the log.
    let logged_before = watchnext_feedback::LogReader::open(server.data_dir().join("feedback"), 1).unwrap().count();
    let batches = watchnext_server::loadtest::record_mix(server.data_dir(), 20, 25).unwrap();
    let args = watchnext_server::loadtest::LoadtestArgs {
        rate: 20.0,
        duration: 1.0,
        warmup: 0.0,
        metrics: vec!["none".into()],
        call: watchnext_server::loadtest::CallKind::Record,
        batch: 25,
        ..args
    };
    let report =
        watchnext_server::loadtest::run(&args, watchnext_server::loadtest::Mix::Record(batches)).await.unwrap();
    assert_eq!(report.statuses.get("OK"), Some(&20), "{report}");
    assert!(report.to_string().contains("Record batches of 25 events"), "{report}");
    let logged_after = watchnext_feedback::LogReader::open(server.data_dir().join("feedback"), 1).unwrap().count();
    assert!(logged_after >= logged_before + 500, "{logged_before} -> {logged_after}");
    server.stop().await.unwrap();
}

/// The README's main command plays simulated users against the server and
/// records what they did (`watchnext demo`'s A/B client): the loop runs to
/// the end with no failed call, every answer is logged, and what the users
/// did reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_ab_client_plays_a_whole_phase_against_the_server() {
    let server = server(&["m1"], |_| {}).await;
    let config = watchnext_testkit::test_config(server.data_dir());
    let data = watchnext_core::datadir::DataDir::new(server.data_dir());
    let world_config = watchnext_world::WorldConfig::read(&data.world_config()).expect("the world's config");
    let world = Arc::new(watchnext_world::World::build(&world_config).expect("world"));
    let start_ms = world_config.epoch_ms + i64::from(world_config.days) * 86_400_000;
    let mut population = watchnext_world::Population::new(world, start_ms);
    let history = watchnext_server::demo::recent_watches(&config).expect("recent watches from the log");
    let count = |dir: &Path| {
        let log = watchnext_feedback::LogReader::open(dir.join("feedback"), 1).expect("log");
        log.collect::<Result<Vec<_>, _>>().expect("records").len()
    };
    let before = count(server.data_dir());
    let url = format!("http://{}", server.addr());
    let (baseline, served) =
        watchnext_server::demo::ab_test(&url, &mut population, &history, 600, "test").await.expect("a whole phase");
    assert_eq!(served.failed, 0, "{served:?}");
    assert!(served.requests > 200 && baseline.requests > 200, "{baseline:?} {served:?}");
    assert!(served.impressions > 0 && served.clicks > 0, "{served:?}");
    // Everything the users did, both arms, is in the log (the server's
    // impressions were logged by Recommend itself, the rest recorded).
    let mut grew = 0;
    for _ in 0..50 {
        grew = count(server.data_dir()) - before;
        if grew as u64 >= served.impressions + baseline.impressions {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(grew as u64 >= served.impressions + baseline.impressions + served.clicks, "{grew} events logged");
    server.stop().await.expect("stop");
}
