//! The candidate generators served over loopback gRPC by the all-in-one
//! process, on a synthetic world: each answers; co-watch learns online from
//! `Feedback.Record` without a restart; a catalogue swap under load loses no
//! request; unknown videos get a clear note, bad requests INVALID_ARGUMENT.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tonic::Code;
use watchnext_core::catalog::{Catalog, Video};
use watchnext_proto::v1::{
    self as pb, CandidateSource, FeedbackEvent, GenerateRequest, RecordRequest, feedback_event::Event,
};
use watchnext_testkit::{TestServer, prepare_world};

fn generate(source: CandidateSource, video: &str, user: &str) -> GenerateRequest {
    GenerateRequest {
        user_id: user.into(),
        query_video_id: video.into(),
        max_candidates: 50,
        generator: source as i32,
        device: pb::DeviceType::Phone as i32,
        ..Default::default()
    }
}

async fn world_server(adjust: impl FnOnce(&mut watchnext_core::Config)) -> TestServer {
    TestServer::start_with_data(|dir| prepare_world(dir, 3, 60_000).map(|_| ()), adjust)
        .await
        .expect("server on a toy world")
}

/// A popular video of the toy world (watched in the log), by its id.
fn popular_video(server: &TestServer) -> String {
    let log = watchnext_feedback::LogReader::open(server.data_dir().join("feedback"), 1).expect("log");
    let mut counts = std::collections::HashMap::<String, u32>::new();
    for (_, e) in log.map(|r| r.expect("record")) {
        if e.kind.name() == "watch" {
            *counts.entry(e.video.as_str().to_owned()).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(v, n)| (*n, v.clone())).expect("some watch").0
}

/// Event times for watches recorded by a test: after every event of the
/// generated world, and not ahead of the server's clock (`Record` refuses
/// timestamps more than `feedback.max_future_seconds` ahead).
fn an_hour_ago() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    now.as_millis() as i64 - 3_600_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_generator_answers_and_the_sequence_one_says_what_it_needs() {
    let server = world_server(|_| {}).await;
    let video = popular_video(&server);
    let mut client = server.generator();
    // The log is replayed into the generators in the background.
    for source in [CandidateSource::Topic, CandidateSource::Cowatch, CandidateSource::Context] {
        let mut answer = pb::GenerateResponse::default();
        for _ in 0..100 {
            answer = client.generate(generate(source, &video, "u1")).await.unwrap().into_inner();
            if !answer.candidates.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!answer.candidates.is_empty(), "{source:?}: {answer:?}");
        assert!(answer.candidates.len() <= 50);
        assert!(answer.candidates.iter().all(|c| c.video_id != video && c.source == source as i32));
        assert!(answer.candidates.windows(2).all(|w| w[0].score >= w[1].score), "best first: {source:?}");
    }
    let err = client.generate(generate(CandidateSource::Sequence, &video, "u1")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("model"), "{}", err.message());

    let unknown =
        client.generate(generate(CandidateSource::Cowatch, "no-such-video", "u1")).await.unwrap().into_inner();
    assert!(unknown.candidates.is_empty() && !unknown.note.is_empty(), "{unknown:?}");
    let cold = client.generate(generate(CandidateSource::Context, "no-such-video", "new-user")).await.unwrap();
    assert!(!cold.get_ref().candidates.is_empty(), "context still helps a cold start: {:?}", cold.get_ref());

    let err = client.generate(GenerateRequest { max_candidates: 0, ..generate(CandidateSource::Topic, &video, "u") });
    assert_eq!(err.await.unwrap_err().code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cowatch_learns_from_recorded_watches_without_a_restart() {
    let server = world_server(|_| {}).await;
    let (query, partner) = ("v1", "v2");
    let mut client = server.generator();
    let before = client.generate(generate(CandidateSource::Cowatch, query, "x")).await.unwrap().into_inner();
    let rank_of = |r: &pb::GenerateResponse| r.candidates.iter().position(|c| c.video_id == partner);

    // Thirty users watch `query` then `partner`, through the real API.
    let mut events = Vec::new();
    for u in 0..30 {
        for (i, video) in [query, partner].into_iter().enumerate() {
            events.push(FeedbackEvent {
                user_id: format!("fresh-user-{u}"),
                video_id: video.into(),
                timestamp_ms: an_hour_ago() + u * 1_000 + i as i64 * 100,
                device: pb::DeviceType::Tv as i32,
                event: Some(Event::Watch(pb::Watch { seconds_watched: 300.0, video_duration_seconds: 300.0 })),
                ..Default::default()
            });
        }
    }
    server.feedback().record(RecordRequest { events }).await.unwrap();
    let mut after = before.clone();
    for _ in 0..100 {
        after = client.generate(generate(CandidateSource::Cowatch, query, "x")).await.unwrap().into_inner();
        if rank_of(&after).is_some_and(|r| rank_of(&before).is_none_or(|b| r < b)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (b, a) = (rank_of(&before), rank_of(&after));
    assert!(a.is_some_and(|a| b.is_none_or(|b| a < b)), "partner rank before {b:?}, after {a:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_swap_under_load_loses_no_request_and_adds_the_new_video() {
    let server = world_server(|c| c.generators.catalog_poll_seconds = 1).await;
    let catalog_path = server.data_dir().join("catalog.jsonl");
    let catalog = Catalog::read(&catalog_path).unwrap();
    let query = catalog.videos()[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut hammers = Vec::new();
    for t in 0..4 {
        let (mut client, stop, ok, failed) = (server.generator(), stop.clone(), ok.clone(), failed.clone());
        let query = query.id.clone();
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.generate(generate(CandidateSource::Topic, &query, &format!("h{t}"))).await {
                    Ok(r) if !r.get_ref().candidates.is_empty() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // A brand-new video on the query's topics, uploaded just now.
    let mut videos = catalog.videos().to_vec();
    videos.push(Video {
        id: "brand-new".into(),
        title: "Brand new".into(),
        topics: query.topics.clone(),
        duration_seconds: 200.0,
        upload_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    Catalog::new(videos).unwrap().write(&catalog_path).unwrap();
    let mut client = server.generator();
    let mut found = false;
    for _ in 0..100 {
        let r = client.generate(generate(CandidateSource::Topic, &query.id, "seeker")).await.unwrap().into_inner();
        if r.candidates.iter().any(|c| c.video_id == "brand-new") {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.await.unwrap();
    }
    assert!(found, "the new video appeared without a restart");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed or empty answer during the swap");
    assert!(ok.load(Ordering::Relaxed) > 50);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cowatch_role_of_a_split_deployment_learns_through_feedback_tail() {
    use watchnext_core::Role;
    let feedback = TestServer::start(|c| c.server.role = Role::Feedback).await.unwrap();
    let url = format!("http://{}", feedback.addr());
    let cowatch = TestServer::start(|c| {
        c.server.role = Role::Generator(CandidateSource::Cowatch);
        c.endpoints.feedback = url;
    })
    .await
    .unwrap();
    let mut events = Vec::new();
    for u in 0..10 {
        for (i, video) in ["query", "partner"].into_iter().enumerate() {
            events.push(FeedbackEvent {
                user_id: format!("split-user-{u}"),
                video_id: video.into(),
                timestamp_ms: an_hour_ago() + u * 1_000 + i as i64 * 100,
                event: Some(Event::Watch(pb::Watch { seconds_watched: 60.0, video_duration_seconds: 60.0 })),
                ..Default::default()
            });
        }
    }
    feedback.feedback().record(RecordRequest { events }).await.unwrap();
    let mut client = cowatch.generator();
    let request = GenerateRequest { query_video_id: "query".into(), max_candidates: 10, ..Default::default() };
    let mut answer = pb::GenerateResponse::default();
    for _ in 0..100 {
        answer = client.generate(request.clone()).await.unwrap().into_inner();
        if answer.candidates.iter().any(|c| c.video_id == "partner") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answer.candidates.iter().any(|c| c.video_id == "partner"), "{answer:?}");
    cowatch.stop().await.unwrap();
    feedback.stop().await.unwrap();
}

/// Trains a small sequence model on the server's log and writes it where
/// the server looks, through the `train-sequence` command's code.
fn train_sequence_model(data_dir: &std::path::Path, version: &str, seed: u64) {
    let mut config = watchnext_testkit::test_config(data_dir);
    config.sequence_trainer = serde_json::json!({
        "history_len": 8, "dim": 16, "attention_dim": 16, "hidden": 32,
        "sampled_negatives": 128, "batch_size": 256, "max_epochs": 2, "validation_users": 50
    });
    let args = watchnext_server::training::TrainSequenceArgs {
        out: None,
        version: Some(version.into()),
        epochs: None,
        seed: Some(seed),
        quiet: true,
    };
    let dir = watchnext_server::training::train_sequence_command(&config, args).expect("train-sequence");
    assert_eq!(dir, data_dir.join("sequence").join(version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequence_generator_picks_up_trained_models_and_swaps_them_under_load() {
    let server = world_server(|c| {
        c.generators
            .sections
            .insert("sequence".into(), serde_json::json!({ "model_poll_seconds": 1, "index": "flat_hnsw" }));
    })
    .await;
    let video = popular_video(&server);
    let mut client = server.generator();
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone());
    let service = tonic_health::pb::HealthCheckRequest { service: "watchnext.v1.CandidateGenerator/sequence".into() };
    let status = health.check(service.clone()).await.unwrap().into_inner().status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::NotServing);

    let data_dir = server.data_dir().to_owned();
    tokio::task::spawn_blocking(move || train_sequence_model(&data_dir, "seq-a", 1)).await.unwrap();
    let mut first = None;
    for _ in 0..100 {
        if let Ok(r) = client.generate(generate(CandidateSource::Sequence, &video, "u1")).await {
            first = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("the server loaded the trained model without a restart");
    assert_eq!(first.index_version, "seq-a");
    assert!(!first.candidates.is_empty() && first.candidates.len() <= 50, "{first:?}");
    assert!(first.candidates.iter().all(|c| c.video_id != video && c.source == CandidateSource::Sequence as i32));
    let status = health.check(service).await.unwrap().into_inner().status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving);

    // Hammer Generate while a second model is trained and swapped in.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen_b = Arc::new(AtomicBool::new(false));
    let mut hammers = Vec::new();
    for t in 0..3 {
        let (mut client, stop, ok, failed, seen_b) =
            (server.generator(), stop.clone(), ok.clone(), failed.clone(), seen_b.clone());
        let video = video.clone();
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.generate(generate(CandidateSource::Sequence, &video, &format!("h{t}"))).await {
                    Ok(r) if !r.get_ref().candidates.is_empty() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.get_ref().index_version == "seq-b" {
                            seen_b.store(true, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let data_dir = server.data_dir().to_owned();
    tokio::task::spawn_blocking(move || train_sequence_model(&data_dir, "seq-b", 2)).await.unwrap();
    for _ in 0..100 {
        if seen_b.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.await.unwrap();
    }
    assert!(seen_b.load(Ordering::Relaxed), "the newer model was swapped in");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed or empty answer during the swap");
    assert!(ok.load(Ordering::Relaxed) > 50, "{} answers", ok.load(Ordering::Relaxed));

    // A cold user with no history and an unknown query video: a clear note, no error.
    let cold = client.generate(generate(CandidateSource::Sequence, "no-such-video", "nobody")).await.unwrap();
    assert!(cold.get_ref().candidates.is_empty() && cold.get_ref().note.contains("cold user"), "{:?}", cold.get_ref());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_role_serves_its_model_alone_and_learns_histories_through_feedback_tail() {
    use watchnext_core::Role;
    let feedback = TestServer::start(|c| c.server.role = Role::Feedback).await.unwrap();
    let url = format!("http://{}", feedback.addr());
    let sequence = TestServer::start_with_data(
        |dir| {
            prepare_world(dir, 3, 60_000)?;
            train_sequence_model(dir, "seq-role", 1);
            Ok(())
        },
        |c| {
            c.server.role = Role::Generator(CandidateSource::Sequence);
            c.endpoints.feedback = url;
        },
    )
    .await
    .unwrap();
    let video = popular_video(&sequence);
    let mut client = sequence.generator();
    // A single-generator process also answers an unspecified generator.
    let request = GenerateRequest { query_video_id: video.clone(), max_candidates: 20, ..Default::default() };
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!(answer.index_version, "seq-role");
    assert_eq!(answer.generator, CandidateSource::Sequence as i32);
    assert_eq!(answer.candidates.len(), 20, "{answer:?}");
    let err = client.generate(generate(CandidateSource::Topic, &video, "u")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A user unknown to this process: empty with a note, until their
    // watches arrive through the feedback role's Tail stream.
    let cold = || GenerateRequest {
        user_id: "tail-user".into(),
        query_video_id: "unknown-video".into(),
        max_candidates: 10,
        ..Default::default()
    };
    let before = client.generate(cold()).await.unwrap().into_inner();
    assert!(before.candidates.is_empty() && before.note.contains("cold user"), "{before:?}");
    let watch = |v: &str, t: i64| FeedbackEvent {
        user_id: "tail-user".into(),
        video_id: v.into(),
        timestamp_ms: an_hour_ago() + t,
        event: Some(Event::Watch(pb::Watch { seconds_watched: 60.0, video_duration_seconds: 60.0 })),
        ..Default::default()
    };
    feedback.feedback().record(RecordRequest { events: vec![watch(&video, 1)] }).await.unwrap();
    let mut after = before.clone();
    for _ in 0..100 {
        after = client.generate(cold()).await.unwrap().into_inner();
        if !after.candidates.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(after.candidates.len(), 10, "history learnt from the stream: {after:?}");
    assert!(after.candidates.iter().all(|c| c.video_id != video));
    sequence.stop().await.unwrap();
    feedback.stop().await.unwrap();
}
