//! Who may call what, over real loopback servers: the role token guards the
//! role-to-role RPCs (and a split deployment's roles present it to each
//! other), client tokens guard `Feedback.Record`, and each client's writes
//! are rate-limited by bytes and by events.

use std::time::Duration;

use tonic::Code;
use watchnext_core::{Role, event::Source};
use watchnext_proto::v1::{
    self as pb, FeedbackEvent, GenerateRequest, RecordRequest, TailRequest, feedback_event::Event,
};
use watchnext_testkit::{TestServer, with_bearer};

const ROLE_TOKEN: &str = "role-token-for-tests-0123456789";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn watch(user: &str, video: &str, at_ms: i64) -> FeedbackEvent {
    FeedbackEvent {
        user_id: user.into(),
        video_id: video.into(),
        timestamp_ms: at_ms,
        event: Some(Event::Watch(pb::Watch { seconds_watched: 60.0, video_duration_seconds: 60.0 })),
        ..Default::default()
    }
}

fn clicks(n: usize) -> Vec<FeedbackEvent> {
    (0..n)
        .map(|i| FeedbackEvent {
            user_id: format!("user-{i:0>24}"),
            video_id: format!("video-{i:0>24}"),
            timestamp_ms: now_ms() - 60_000,
            event: Some(Event::Click(pb::Click {})),
            ..Default::default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_token_guards_role_to_role_calls_and_a_split_deployment_presents_it() {
    let feedback = TestServer::start(|c| {
        c.server.role = Role::Feedback;
        c.auth.role_token = ROLE_TOKEN.into();
    })
    .await
    .unwrap();
    let url = format!("http://{}", feedback.addr());
    let cowatch = TestServer::start(|c| {
        c.server.role = Role::Generator(Source::Cowatch);
        c.endpoints.feedback = url;
        c.auth.role_token = ROLE_TOKEN.into();
    })
    .await
    .unwrap();

    // Tail: refused without the role token, and with a wrong one.
    for request in [tonic::Request::new(TailRequest::default()), with_bearer(TailRequest::default(), "guess")] {
        let Err(err) = feedback.feedback().tail(request).await else {
            panic!("Tail without the role token was served")
        };
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains("role token"), "{}", err.message());
    }
    // Record stays open (no client tokens configured).
    let base = now_ms() - 3_600_000;
    let mut events = Vec::new();
    for u in 0..10 {
        events.push(watch(&format!("u{u}"), "query", base + u * 1_000));
        events.push(watch(&format!("u{u}"), "partner", base + u * 1_000 + 100));
    }
    feedback.feedback().record(RecordRequest { events }).await.expect("record is open");

    // The co-watch role follows the log with the role token: it learns the pair.
    let request = GenerateRequest { query_video_id: "query".into(), max_candidates: 10, ..Default::default() };
    let err = cowatch.generator().generate(request.clone()).await.expect_err("Generate needs the role token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut learnt = false;
    for _ in 0..100 {
        let answer = cowatch.generator().generate(with_bearer(request.clone(), ROLE_TOKEN)).await.unwrap();
        if answer.get_ref().candidates.iter().any(|c| c.video_id == "partner") {
            learnt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(learnt, "the follower presented the role token to Tail");
    // With the token, Tail streams.
    let mut stream =
        feedback.feedback().tail(with_bearer(TailRequest::default(), ROLE_TOKEN)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a batch");
    assert_eq!(first.first_sequence, 1);
    drop(stream);
    cowatch.stop().await.unwrap();
    feedback.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_needs_a_listed_client_token_and_each_client_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("record-tokens");
    std::fs::write(
        &tokens,
        "# clients that may write events\napp-a token-of-app-a-0123456789\napp-b token-of-app-b-0123456789\n",
    )
    .unwrap();
    let path = tokens.display().to_string();
    let server = TestServer::start(move |c| {
        c.server.role = Role::Feedback;
        c.auth.record_tokens_file = path;
        c.auth.record_events_per_second = 5;
        c.auth.record_burst_events = 30;
    })
    .await
    .unwrap();
    let mut client = server.feedback();

    let err = client.record(RecordRequest { events: clicks(1) }).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("record_tokens_file"), "{}", err.message());
    let err = client.record(with_bearer(RecordRequest { events: clicks(1) }, "token-of-app-c-0123456789")).await;
    assert_eq!(err.expect_err("not listed").code(), Code::Unauthenticated);

    // app-a: its burst of 30 events passes (the second batch into debt), then it must wait.
    let a = "token-of-app-a-0123456789";
    let ack = client.record(with_bearer(RecordRequest { events: clicks(20) }, a)).await.unwrap();
    assert_eq!(ack.get_ref().accepted, 20);
    client.record(with_bearer(RecordRequest { events: clicks(20) }, a)).await.expect("into debt once");
    let err = client.record(with_bearer(RecordRequest { events: clicks(1) }, a)).await.expect_err("over its rate");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("retry in"), "{}", err.message());
    // app-b has an allowance of its own.
    let b = "token-of-app-b-0123456789";
    client.record(with_bearer(RecordRequest { events: clicks(10) }, b)).await.expect("another client");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flood_is_refused_before_its_body_is_read() {
    let server = TestServer::start(|c| {
        c.server.role = Role::Feedback;
        c.server.max_message_bytes = 1 << 20;
        c.feedback.max_event_bytes = 64 * 1024;
        c.auth.record_bytes_per_second = 1_000;
        c.auth.record_burst_bytes = 1 << 20;
        c.auth.record_events_per_second = 0;
    })
    .await
    .unwrap();
    let mut client = server.feedback();
    // About 600 KB per call: the burst covers one and a half.
    let big = RecordRequest { events: clicks(8_000) };
    let size = prost::Message::encoded_len(&big);
    assert!((500_000..1_000_000).contains(&size), "{size}");
    client.record(big.clone()).await.expect("within the burst");
    client.record(big.clone()).await.expect("into debt once");
    let err = client.record(big).await.expect_err("in debt");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("auth.record_bytes_per_second; the body was not read"), "{}", err.message());
    // Small writes from the same address wait too; the refusal said for how long.
    let err = client.record(RecordRequest { events: clicks(1) }).await.expect_err("same client");
    assert_eq!(err.code(), Code::ResourceExhausted);
    server.stop().await.unwrap();
}
