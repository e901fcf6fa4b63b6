//! Clients that misbehave on purpose, over real loopback connections: one
//! that opens calls and never finishes their bodies, one that opens
//! `Feedback.Tail` streams and never reads them. Neither may stall a
//! well-behaved client on its own connection.

use std::time::Duration;

use bytes::Bytes;
use tonic::{Code, transport::Channel};
use watchnext_proto::v1::{
    self as pb, FeedbackEvent, RecordRequest, TailRequest, feedback_client::FeedbackClient, feedback_event::Event,
};
use watchnext_testkit::TestServer;

fn click(user: &str, video: &str) -> FeedbackEvent {
    FeedbackEvent {
        user_id: user.into(),
        video_id: video.into(),
        timestamp_ms: 1_700_000_000_000,
        event: Some(Event::Click(pb::Click {})),
        ..Default::default()
    }
}

/// A connection of its own (the test server's shared channel is another).
async fn connection(server: &TestServer) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_bodies_never_arrive_hold_no_slot_and_time_out() {
    let server = TestServer::start(|c| {
        c.server.max_concurrent_requests = 8;
        c.server.request_body_timeout_ms = 1_500;
    })
    .await
    .unwrap();
    // The attacker: raw HTTP/2, 64 Record calls whose 5-byte gRPC prefix
    // announces 100 bytes that never come.
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let (h2, driver) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(driver);
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let request = http::Request::post(format!("http://{}/watchnext.v1.Feedback/Record", server.addr()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut h2 = h2.clone().ready().await.unwrap();
        let (response, mut body) = h2.send_request(request, false).unwrap();
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 100]), false).unwrap();
        stalled.push((response, body));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Eight times the slots are waiting for their bodies; a well-behaved
    // client is served at once.
    let mut good = FeedbackClient::new(connection(&server).await);
    let ack = good.record(RecordRequest { events: vec![click("u1", "a")] }).await.expect("not shed");
    assert_eq!(ack.get_ref().accepted, 1);

    // The stalled calls end with DEADLINE_EXCEEDED once their time is up.
    for (response, _body) in stalled.drain(..4) {
        let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("answered").unwrap();
        let status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(status, "4", "DEADLINE_EXCEEDED: {:?}", response.headers());
        let message = response.headers().get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(message.contains("request_body_timeout_ms"), "{message}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_tail_streams_are_bounded_and_stall_no_other_call() {
    let server = TestServer::start(|c| c.server.max_tail_streams = 4).await.unwrap();
    let mut writer = server.feedback();
    for b in 0..2 {
        let events = (0..5_000).map(|i| click("u1", &format!("v{b}-{i}"))).collect();
        writer.record(RecordRequest { events }).await.unwrap();
    }
    // The attacker opens every Tail slot and reads nothing.
    let mut attacker = FeedbackClient::new(connection(&server).await);
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(attacker.tail(TailRequest { from_sequence: 1, max_batch: 50 }).await.unwrap().into_inner());
    }
    let err = attacker.tail(TailRequest { from_sequence: 1, max_batch: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_tail_streams"), "{}", err.message());

    // Other calls go on while those streams sit full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut good = FeedbackClient::new(connection(&server).await);
    let ack =
        tokio::time::timeout(Duration::from_secs(10), good.record(RecordRequest { events: vec![click("u2", "x")] }))
            .await
            .expect("Record is not held back by unread streams")
            .unwrap();
    assert_eq!(ack.get_ref().last_sequence, 10_001);

    // A client that goes away frees its slot for the next follower.
    drop(open.pop());
    let mut follower = None;
    for _ in 0..100 {
        match good.tail(TailRequest { from_sequence: 10_001, max_batch: 0 }).await {
            Ok(stream) => {
                follower = Some(stream.into_inner());
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let first = follower.expect("the slot came back").message().await.unwrap().expect("a message");
    assert_eq!(first.first_sequence, 10_001);
    assert_eq!(first.events[0].video_id, "x");
    server.stop().await.unwrap();
}
