use std::sync::Arc;

use watchnext_core::{
    Device, UserId, VideoId,
    config::NatsConfig,
    event::{Event, EventKind},
};
use watchnext_feedback::{EventStream, SharedStream, StreamError};

use crate::{NatsStream, local_server::LocalNats};

fn watch(video: &str, seconds: f32) -> Event {
    Event {
        timestamp_ms: 1_700_000_000_000,
        request_id: String::new(),
        user: UserId::parse("u", "u1").expect("user id"),
        video: VideoId::parse("v", video).expect("video id"),
        device: Device::Phone,
        kind: EventKind::Watch { seconds_watched: seconds, video_duration_seconds: 100.0 },
    }
}

fn config(url: String) -> NatsConfig {
    NatsConfig { url, ack_timeout_ms: 2_000, ..NatsConfig::default() }
}

async fn ready(stream: &NatsStream) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Err(reason) = stream.check_health() {
        assert!(tokio::time::Instant::now() < deadline, "never ready: {reason}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

async fn next_chunk(
    rx: &mut tokio::sync::mpsc::Receiver<Result<watchnext_feedback::Chunk, StreamError>>,
) -> watchnext_feedback::Chunk {
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
        .await
        .expect("a chunk within 20 s")
        .expect("the follower is running")
        .expect("a readable chunk")
}

#[tokio::test]
async fn appends_are_acknowledged_in_order_and_a_retried_batch_is_stored_once() {
    let Some(server) = LocalNats::start() else { return };
    let stream = NatsStream::connect(&config(server.url()), "test").await.expect("connect");
    ready(&stream).await;
    let batch = vec![watch("a", 1.0), watch("b", 2.0), watch("c", 3.0)];
    let ack = stream.append(batch.clone(), ids("x", 3)).await.expect("append");
    assert_eq!((ack.first_seq, ack.last_seq), (1, 3));
    // The client did not see the answer and sends the same batch again.
    let again = stream.append(batch.clone(), ids("x", 3)).await.expect("retry");
    assert_eq!((again.first_seq, again.last_seq), (1, 3), "duplicates answer with their first sequence numbers");
    assert_eq!(stream.last_seq().await.expect("last seq"), 3);
    // New ids are new events.
    let more = stream.append(vec![watch("d", 4.0)], ids("y", 1)).await.expect("append");
    assert_eq!(more.last_seq, 4);

    let mut rx = stream.follow(1, 100);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let chunk = next_chunk(&mut rx).await;
        assert_eq!(chunk.first_seq, seen.len() as u64 + 1);
        seen.extend(chunk.events);
    }
    assert_eq!(seen[..3], batch[..], "events come back exactly as appended");
    assert_eq!(seen[3].video.as_str(), "d");
}

#[tokio::test]
async fn a_follower_starts_anywhere_and_sees_new_events_as_they_come() {
    let Some(server) = LocalNats::start() else { return };
    let stream: SharedStream = Arc::new(NatsStream::connect(&config(server.url()), "test").await.expect("connect"));
    let nats = NatsStream::connect(&config(server.url()), "test-2").await.expect("connect");
    ready(&nats).await;
    let events: Vec<Event> = (0..10).map(|i| watch(&format!("v{i}"), i as f32)).collect();
    stream.append(events, ids("e", 10)).await.expect("append");

    let mut rx = stream.follow(7, 3);
    let first = next_chunk(&mut rx).await;
    assert_eq!(first.first_seq, 7);
    assert!(first.events.len() <= 3);
    let mut last = first.last_seq();
    while last < 10 {
        let chunk = next_chunk(&mut rx).await;
        assert_eq!(chunk.first_seq, last + 1, "consecutive chunks");
        assert!(chunk.events.len() <= 3);
        last = chunk.last_seq();
    }
    stream.append(vec![watch("late", 1.0)], ids("late", 1)).await.expect("append");
    let late = next_chunk(&mut rx).await;
    assert_eq!((late.first_seq, late.events[0].video.as_str(), late.caught_up), (11, "late", true));
}

#[tokio::test]
async fn without_the_server_writes_fail_at_once_and_resume_after_it_returns() {
    let Some(mut server) = LocalNats::start() else { return };
    let stream = NatsStream::connect(&config(server.url()), "test").await.expect("connect");
    ready(&stream).await;
    stream.append(vec![watch("a", 1.0)], ids("a", 1)).await.expect("append");
    let mut rx = stream.follow(1, 10);
    assert_eq!(next_chunk(&mut rx).await.last_seq(), 1);

    server.kill();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while stream.check_health().is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "health never noticed the server is gone");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reason = stream.check_health().expect_err("unhealthy");
    assert!(reason.contains("unreachable"), "{reason}");
    let started = std::time::Instant::now();
    match stream.append(vec![watch("b", 1.0)], ids("b", 1)).await {
        Err(StreamError::Unavailable(message)) => assert!(message.contains("send the batch again"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused at once, not after a timeout");

    server.restart();
    ready(&stream).await;
    let ack = stream.append(vec![watch("b", 1.0)], ids("b", 1)).await.expect("append after the restart");
    assert_eq!(ack.last_seq, 2, "the file store kept the first event");
    let chunk = next_chunk(&mut rx).await;
    assert_eq!((chunk.first_seq, chunk.events[0].video.as_str()), (2, "b"), "the follower went on where it was");
}

#[tokio::test]
async fn a_message_that_is_not_an_event_is_skipped() {
    let Some(server) = LocalNats::start() else { return };
    let stream = NatsStream::connect(&config(server.url()), "test").await.expect("connect");
    ready(&stream).await;
    stream.append(vec![watch("a", 1.0)], ids("a", 1)).await.expect("append");
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let js = async_nats::jetstream::new(raw);
    js.publish("watchnext.events", "not a protobuf event \u{1}\u{2}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    stream.append(vec![watch("c", 1.0)], ids("c", 1)).await.expect("append");
    let mut rx = stream.follow(1, 10);
    let mut videos = Vec::new();
    let mut seqs = Vec::new();
    while videos.len() < 2 {
        let chunk = next_chunk(&mut rx).await;
        seqs.extend((0..chunk.events.len() as u64).map(|i| chunk.first_seq + i));
        videos.extend(chunk.events.into_iter().map(|e| e.video.as_str().to_owned()));
    }
    assert_eq!(videos, ["a", "c"]);
    assert_eq!(seqs, [1, 3], "the bad message's sequence number is skipped, not reused");
}
