//! `Feedback.Record` end to end over loopback: acknowledged batches land in
//! the log in order; a bad batch is refused whole with INVALID_ARGUMENT
//! naming the offending event, and does not disturb other requests.

use tonic::Code;
use watchnext_feedback::LogReader;
use watchnext_proto::v1::{self as pb, FeedbackEvent, RecordRequest, feedback_event::Event};
use watchnext_testkit::TestServer;

fn click(user: &str, video: &str) -> FeedbackEvent {
    FeedbackEvent {
        request_id: "r1".into(),
        user_id: user.into(),
        video_id: video.into(),
        timestamp_ms: 1_700_000_000_000,
        device: pb::DeviceType::Phone as i32,
        event: Some(Event::Click(pb::Click {})),
        ..Default::default()
    }
}

fn logged_videos(server: &TestServer) -> Vec<String> {
    LogReader::open(server.data_dir().join("feedback"), 1)
        .expect("log folder")
        .map(|r| r.expect("readable record").1.video.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn acknowledged_batches_are_in_the_log_and_bad_ones_are_not() {
    let server = TestServer::start(|c| c.feedback.max_batch_events = 100).await.unwrap();
    let mut client = server.feedback();

    let good = client.record(RecordRequest { events: vec![click("u1", "a"), click("u1", "b")] }).await.unwrap();
    assert_eq!(good.get_ref().accepted, 2);
    assert_eq!(good.get_ref().last_sequence, 2);

    let mut impression_at_0 = click("u1", "c");
    impression_at_0.event = Some(Event::Impression(pb::Impression { position: 0, ..Default::default() }));
    let mut negative_watch = click("u1", "d");
    negative_watch.event = Some(Event::Watch(pb::Watch { seconds_watched: -3.0, video_duration_seconds: 10.0 }));
    let mut no_type = click("u1", "e");
    no_type.event = None;
    // A 4 MB impression once went in and stopped every follower of the log.
    let mut huge = click("u1", "f");
    huge.event = Some(Event::Impression(pb::Impression {
        position: 1,
        features: Some(pb::FeatureVector { dense: vec![0.5; 1_000_000], ..Default::default() }),
        ..Default::default()
    }));
    let mut future = click("u1", "g");
    future.timestamp_ms = i64::MAX;
    let bad_batches = [
        (vec![huge], "events[0].impression.features.dense"),
        (vec![click("u1", "w"), future], "events[1].timestamp_ms"),
        (vec![click("u1", "x"), impression_at_0], "events[1].impression.position"),
        (vec![negative_watch], "events[0].watch.seconds_watched"),
        (vec![click("u1", "y"), click("u1", "z"), no_type], "events[2].event"),
        ((0..101).map(|i| click("u1", &format!("big{i}"))).collect(), "at most 100"),
    ];
    // Bad and good requests interleaved and concurrent.
    let mut calls = Vec::new();
    for (events, needle) in bad_batches {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move { (c.record(RecordRequest { events }).await, Some(needle)) }));
        let mut c = client.clone();
        calls.push(tokio::spawn(
            async move { (c.record(RecordRequest { events: vec![click("u2", "ok")] }).await, None) },
        ));
    }
    for call in calls {
        match call.await.unwrap() {
            (Err(status), Some(needle)) => {
                assert_eq!(status.code(), Code::InvalidArgument);
                assert!(status.message().contains(needle), "{needle}: {}", status.message());
            }
            (Ok(ack), None) => assert_eq!(ack.get_ref().accepted, 1),
            (result, needle) => panic!("unexpected {result:?} for {needle:?}"),
        }
    }
    // Readers see what was acknowledged while the server keeps running.
    let videos = logged_videos(&server);
    assert_eq!(&videos[..2], ["a", "b"]);
    assert_eq!(videos.len(), 2 + 6, "the six good concurrent requests, none of the bad batches: {videos:?}");
    assert!(videos[2..].iter().all(|v| v == "ok"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_streams_the_log_from_a_sequence_number_then_follows_new_commits() {
    let server = TestServer::all_in_one().await.unwrap();
    let mut client = server.feedback();
    client.record(RecordRequest { events: vec![click("u1", "a"), click("u1", "b"), click("u1", "c")] }).await.unwrap();
    let mut stream = client.tail(pb::TailRequest { from_sequence: 2, max_batch: 0 }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.first_sequence, 2);
    let videos: Vec<_> = first.events.iter().map(|e| e.video_id.as_str()).collect();
    assert_eq!(videos, ["b", "c"]);
    // A later commit arrives on the open stream.
    client.record(RecordRequest { events: vec![click("u2", "d")] }).await.unwrap();
    let next =
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.first_sequence, 4);
    assert_eq!(next.events[0].video_id, "d");
    assert_eq!(next.events[0], click("u2", "d"), "the event as recorded");
    server.stop().await.unwrap();
}
