//! Training/serving skew, measured: a real server on loopback answers
//! Recommend requests and logs every impression with the exact features its
//! ranker used; the trainer's replay then walks that log and recomputes each
//! served row through the training path (history rebuilt by the serving rule
//! from the log, the request's time, the logged provenance, the shared
//! feature schema). Every row must come out identical, bit for bit — also
//! after the users watched more between requests.

use std::{sync::Arc, time::Duration};

use watchnext_core::{
    UserId,
    catalog::Catalog,
    datadir::DataDir,
    event::{Event, EventKind},
};
use watchnext_proto::v1::{self as pb, RecommendRequest, RecordRequest};
use watchnext_testkit::{TestServer, prepare_world, test_config, train_ranker};
use watchnext_trainer::{
    config::TrainerConfig,
    replay::{self, Serving},
};

fn events_of(dir: &std::path::Path) -> Vec<Event> {
    watchnext_feedback::LogReader::open(DataDir::new(dir).feedback_log(), 1)
        .expect("log")
        .map(|r| r.expect("record").1)
        .collect()
}

fn watch(user: &str, video: &str) -> pb::FeedbackEvent {
    pb::FeedbackEvent {
        user_id: user.into(),
        video_id: video.into(),
        device: pb::DeviceType::Phone as i32,
        event: Some(pb::feedback_event::Event::Watch(pb::Watch { seconds_watched: 30.0, video_duration_seconds: 0.0 })),
        ..Default::default()
    }
}

/// Records a watch of a probe user and waits until the server's recent-watch
/// store has it: the log is delivered in order, so everything recorded
/// before it has reached the store too.
async fn wait_until_caught_up(server: &TestServer, probe: &str) {
    let mut feedback = server.feedback();
    feedback.record(RecordRequest { events: vec![watch(probe, "v1")] }).await.expect("record the probe");
    let store = server.running.recommender.as_ref().expect("a recommender").history().clone();
    let user = UserId::parse("user", probe).expect("user id");
    for _ in 0..300 {
        if store.count(&user) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the recent-watch store never caught up with the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_rows_recomputed_by_the_training_path_are_identical_bit_for_bit() {
    let durable = |c: &mut watchnext_core::Config| {
        c.recommender.fanout = serde_json::json!({ "durable_impressions": true });
    };
    let server = TestServer::start_with_data(
        |dir| {
            prepare_world(dir, 11, 30_000)?;
            train_ranker(dir, "m1", 1)?;
            Ok(())
        },
        durable,
    )
    .await
    .expect("a server on a toy world");
    wait_until_caught_up(&server, "probe-1").await;

    // Users of the log, asked about their last watched video.
    let log = events_of(server.data_dir());
    let mut asks: Vec<(String, String)> = Vec::new();
    for e in log.iter().rev() {
        if matches!(e.kind, EventKind::Watch { .. }) && !asks.iter().any(|(u, _)| u == e.user.as_str()) {
            asks.push((e.user.as_str().to_owned(), e.video.as_str().to_owned()));
        }
        if asks.len() == 8 {
            break;
        }
    }
    let mut client = server.recommender();
    let mut served = 0usize;
    for round in 0..2 {
        for (user, video) in &asks {
            let request = RecommendRequest {
                user_id: user.clone(),
                query_video_id: video.clone(),
                num_results: 10,
                device: pb::DeviceType::Phone as i32,
                ..Default::default()
            };
            let mut answer = None;
            for _ in 0..100 {
                if let Ok(r) = client.recommend(request.clone()).await {
                    let r = r.into_inner();
                    if !r.degraded && !r.items.is_empty() {
                        answer = Some(r);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let r = answer.expect("a ranked answer");
            assert_eq!(r.model_version, "m1");
            served += r.items.len();
        }
        // Between the rounds some users watch more, one of them re-watching
        // the video asked about (the history rule moves it to the end rather
        // than listing it twice): their history features change.
        if round == 0 {
            let mut feedback = server.feedback();
            for (user, video) in asks.iter().take(4) {
                let events = vec![watch(user, "v3"), watch(user, video), watch(user, "v7")];
                feedback.record(RecordRequest { events }).await.expect("record");
            }
            wait_until_caught_up(&server, "probe-2").await;
        }
    }
    // Every write was acknowledged after its fsync and nothing writes now:
    // copy the log and the catalogue out of the server's temporary folder.
    let dir = server.data_dir().to_owned();
    let data = tempfile::tempdir().expect("tempdir");
    let copy = data.path().join("copy");
    std::fs::create_dir_all(copy.join("feedback")).expect("mkdir");
    for entry in std::fs::read_dir(dir.join("feedback")).expect("log dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), copy.join("feedback").join(entry.file_name())).expect("copy segment");
    }
    std::fs::copy(dir.join("catalog.jsonl"), copy.join("catalog.jsonl")).expect("copy catalogue");
    server.stop().await.expect("stop");

    // The training path over the whole log: served rows only (no moment is
    // replayed), each recomputed and compared.
    let events = events_of(&copy);
    let impressions =
        events.iter().filter(|e| matches!(&e.kind, EventKind::Impression(i) if i.features.is_some())).count();
    assert_eq!(impressions, served, "every returned item was logged with its features");
    let catalog = Arc::new(Catalog::read(&DataDir::new(&copy).catalog()).expect("catalogue"));
    let config = test_config(&copy);
    let hosted = watchnext_server::examples::fresh_generators(&config, &catalog).expect("generators");
    let serving = Serving { generators: hosted.all(), per_generator: 200, max_candidates: 500, history_len: 50 };
    let trainer = TrainerConfig::default();
    let (examples, summary) =
        replay::examples(&events, &catalog, &serving, &trainer, i64::MAX, "test".into(), false).expect("examples");
    let r = summary.replay.expect("a replay summary");
    assert_eq!(r.replayed_moments, 0);
    assert_eq!(r.served_rows, served as u64);
    assert_eq!(r.served_verified, served as u64);
    assert_eq!(r.served_mismatches, 0, "first difference: {:?}", r.first_mismatch);
    // And the rows trained on are the served ones, features as logged.
    assert_eq!(examples.len, served);
    let logged: Vec<&Vec<f32>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Impression(i) => i.features.as_ref().map(|f| &f.dense),
            _ => None,
        })
        .collect();
    for i in 0..examples.len {
        assert!(logged.iter().any(|d| d.as_slice() == examples.dense_row(i)), "row {i} is not a served row");
    }
}
