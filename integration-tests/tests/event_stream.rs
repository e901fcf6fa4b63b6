//! The event stream on NATS JetStream (`event_log.backend = "nats"`),
//! against a real `nats-server` on a loopback port (skipped, saying so,
//! where none is installed; CI sets `WATCHNEXT_REQUIRE_NATS=1`): a split
//! feedback role writes each event once however often a batch is retried,
//! a split co-watch role learns by following the stream itself (no
//! `Feedback.Tail`, no `endpoints.feedback`), and a lost broker turns the
//! Feedback service NOT_SERVING and Record UNAVAILABLE until it is back.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use watchnext_core::{Role, config::EventLogBackend, event::Source};
use watchnext_feedback::EventStream;
use watchnext_nats::{NatsStream, local_server::LocalNats};
use watchnext_proto::v1::{self as pb, FeedbackEvent, GenerateRequest, RecordRequest, feedback_event::Event};
use watchnext_testkit::TestServer;

fn on_nats(config: &mut watchnext_core::Config, url: &str, role: Role) {
    config.server.role = role;
    config.event_log.backend = EventLogBackend::Nats;
    config.event_log.nats.url = url.to_owned();
    config.event_log.nats.ack_timeout_ms = 2_000;
}

fn an_hour_ago() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    now as i64 - 3_600_000
}

/// Ten users watch `query` then `partner`; ids `<tag>-<n>`.
fn co_watches(tag: &str) -> Vec<FeedbackEvent> {
    let start = an_hour_ago();
    let mut events = Vec::new();
    for u in 0..10 {
        for (i, video) in ["query", "partner"].into_iter().enumerate() {
            events.push(FeedbackEvent {
                event_id: format!("{tag}-{}", events.len()),
                user_id: format!("nats-user-{u}"),
                video_id: video.into(),
                timestamp_ms: start + u * 1_000 + i as i64 * 100,
                event: Some(Event::Watch(pb::Watch { seconds_watched: 60.0, video_duration_seconds: 60.0 })),
                ..Default::default()
            });
        }
    }
    events
}

async fn feedback_health(server: &TestServer) -> Option<ServingStatus> {
    let mut health = HealthClient::new(server.channel.clone());
    let request = HealthCheckRequest { service: watchnext_proto::service_names::FEEDBACK.into() };
    let answer = health.check(request).await.ok()?;
    ServingStatus::try_from(answer.into_inner().status).ok()
}

async fn wait_for_health(server: &TestServer, wanted: ServingStatus) {
    for _ in 0..400 {
        if feedback_health(server).await == Some(wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Feedback health never became {wanted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_stored_once_and_a_split_cowatch_role_learns_from_the_stream() {
    let Some(nats) = LocalNats::start() else { return };
    let url = nats.url();
    let feedback = TestServer::start(|c| on_nats(c, &url, Role::Feedback)).await.expect("feedback role");
    let cowatch =
        TestServer::start(|c| on_nats(c, &url, Role::Generator(Source::Cowatch))).await.expect("co-watch role");
    wait_for_health(&feedback, ServingStatus::Serving).await;

    let events = co_watches("batch");
    let first = feedback.feedback().record(RecordRequest { events: events.clone() }).await.expect("record");
    assert_eq!((first.get_ref().accepted, first.get_ref().last_sequence), (20, 20));
    // The client lost the answer and retries the same batch: nothing new is stored.
    let retry = feedback.feedback().record(RecordRequest { events: events.clone() }).await.expect("retry");
    assert_eq!(retry.get_ref().last_sequence, 20, "the retry answers with the stored sequence numbers");
    // Without ids, a byte-identical retry is stored once too.
    let mut no_id = events[0].clone();
    no_id.event_id.clear();
    no_id.timestamp_ms += 50_000;
    for _ in 0..2 {
        let r = feedback.feedback().record(RecordRequest { events: vec![no_id.clone()] }).await.expect("record");
        assert_eq!(r.get_ref().last_sequence, 21);
    }
    let reader =
        NatsStream::connect(&watchnext_core::config::NatsConfig { url: url.clone(), ..Default::default() }, "check")
            .await
            .expect("connect");
    assert_eq!(reader.last_seq().await.expect("last seq"), 21, "every event exactly once in the stream");

    let mut client = cowatch.generator();
    let request = GenerateRequest { query_video_id: "query".into(), max_candidates: 10, ..Default::default() };
    let mut answer = pb::GenerateResponse::default();
    for _ in 0..200 {
        answer = client.generate(request.clone()).await.expect("generate").into_inner();
        if answer.candidates.iter().any(|c| c.video_id == "partner") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answer.candidates.iter().any(|c| c.video_id == "partner"), "{answer:?}");
    // The consumer reports what it took in and how far behind it is.
    let metrics = watchnext_testkit::scrape_metrics(cowatch.metrics_addr().expect("metrics")).await.expect("scrape");
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("consumer=\"cowatch\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} for cowatch in\n{metrics}"))
    };
    assert_eq!(value("watchnext_consumer_events_total"), 21.0);
    assert_eq!(value("watchnext_consumer_lag_events"), 0.0);
    assert!(value("watchnext_consumer_catch_up_seconds") >= 0.0);
    cowatch.stop().await.expect("stop");
    feedback.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_makes_feedback_unavailable_and_it_recovers_by_itself() {
    let Some(mut nats) = LocalNats::start() else { return };
    let url = nats.url();
    let feedback = TestServer::start(|c| on_nats(c, &url, Role::Feedback)).await.expect("feedback role");
    wait_for_health(&feedback, ServingStatus::Serving).await;
    let events = co_watches("before");
    feedback.feedback().record(RecordRequest { events: events[..4].to_vec() }).await.expect("record");

    nats.kill();
    wait_for_health(&feedback, ServingStatus::NotServing).await;
    let refused =
        feedback.feedback().record(RecordRequest { events: events[4..8].to_vec() }).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("unreachable"), "{}", refused.message());

    nats.restart();
    wait_for_health(&feedback, ServingStatus::Serving).await;
    let ack = feedback.feedback().record(RecordRequest { events: events[4..8].to_vec() }).await.expect("record");
    assert_eq!(ack.get_ref().last_sequence, 8, "the stream kept the first four, the retry added four");
    feedback.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_publishes_a_data_folder_and_pull_copies_the_stream_into_another() {
    let Some(nats) = LocalNats::start() else { return };
    let config = watchnext_core::config::NatsConfig { url: nats.url(), ..Default::default() };
    let stream = NatsStream::connect(&config, "sync-test").await.expect("connect");
    let (source, target) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let source_data = watchnext_core::datadir::DataDir::new(source.path());
    let events: Vec<watchnext_core::event::Event> = co_watches("push")
        .iter()
        .map(|e| watchnext_core::event::Event::from_proto(e, 0).expect("valid event"))
        .collect();
    {
        let (log, _) =
            watchnext_feedback::FeedbackLog::open(source_data.feedback_log(), Default::default()).expect("log");
        log.append(events[..12].to_vec()).await.expect("append");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stream.check_health().is_err() {
        assert!(tokio::time::Instant::now() < deadline, "NATS never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watchnext_server::stream_sync::push(&stream, &config.stream, &source_data).await.expect("push");
    assert_eq!(stream.last_seq().await.expect("last"), 12);
    // Pushing again publishes nothing: the position file says how far it got.
    watchnext_server::stream_sync::push(&stream, &config.stream, &source_data).await.expect("push again");
    assert_eq!(stream.last_seq().await.expect("last"), 12);

    let target_data = watchnext_core::datadir::DataDir::new(target.path());
    watchnext_server::stream_sync::pull(&stream, &config.stream, &target_data, false).await.expect("pull");
    // Later events reach the stream (a serving feedback role, say); a second pull copies only those.
    stream.append(events[12..].to_vec(), events[12..].iter().map(|e| e.content_id()).collect()).await.expect("append");
    watchnext_server::stream_sync::pull(&stream, &config.stream, &target_data, false).await.expect("pull again");
    let copied: Vec<watchnext_core::event::Event> = watchnext_feedback::LogReader::open(target_data.feedback_log(), 1)
        .expect("reader")
        .map(|r| r.expect("record").1)
        .collect();
    assert_eq!(copied, events, "the same events, in order, once each");
    // A folder whose log did not come from the stream is refused.
    let refused = watchnext_server::stream_sync::pull(&stream, &config.stream, &source_data, false).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("did not come from stream")));
}

/// Twelve users watch `a` then `b`, as core events with ids `<a>-<b>-<n>`.
fn pair_watches(a: &str, b: &str) -> (Vec<watchnext_core::event::Event>, Vec<String>) {
    let start = an_hour_ago();
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for u in 0..12 {
        for (i, video) in [a, b].into_iter().enumerate() {
            let wire = FeedbackEvent {
                user_id: format!("replica-user-{u}"),
                video_id: video.into(),
                timestamp_ms: start + u * 1_000 + i as i64 * 100,
                event: Some(Event::Watch(pb::Watch { seconds_watched: 60.0, video_duration_seconds: 60.0 })),
                ..Default::default()
            };
            events.push(watchnext_core::event::Event::from_proto(&wire, 0).expect("valid"));
            ids.push(format!("{a}-{b}-{}", ids.len()));
        }
    }
    (events, ids)
}

/// What a co-watch replica answers for each query: (video, score) lists.
async fn answers(server: &TestServer, queries: &[&str]) -> Vec<Vec<(String, u32)>> {
    let mut client = server.generator();
    let mut out = Vec::new();
    for q in queries {
        let request = GenerateRequest { query_video_id: (*q).into(), max_candidates: 20, ..Default::default() };
        let r = client.generate(request).await.expect("generate").into_inner();
        out.push(r.candidates.into_iter().map(|c| (c.video_id, c.score.to_bits())).collect());
    }
    out
}

/// The answers of `server` once they include `video` and no longer change
/// (the replica has taken in everything appended so far).
async fn settled(server: &TestServer, queries: &[&str], video: &str) -> Vec<Vec<(String, u32)>> {
    let mut last: Vec<Vec<(String, u32)>> = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = answers(server, queries).await;
        if now == last && now.iter().flatten().any(|(v, _)| v == video) {
            return now;
        }
        last = now;
    }
    panic!("the answers never settled with {video}: {last:?}");
}

async fn wait_until_answers(server: &TestServer, queries: &[&str], wanted: &[Vec<(String, u32)>]) {
    let mut last = Vec::new();
    for _ in 0..200 {
        last = answers(server, queries).await;
        if last == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica never converged: {last:?}\nwanted {wanted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_watch_replicas_build_identical_tables_and_a_new_one_starts_from_a_snapshot() {
    let Some(nats) = LocalNats::start() else { return };
    let url = nats.url();
    let a = TestServer::start(|c| {
        on_nats(c, &url, Role::Generator(Source::Cowatch));
        c.generators.snapshot_interval_seconds = 1;
    })
    .await
    .expect("replica a");
    let b = TestServer::start(|c| on_nats(c, &url, Role::Generator(Source::Cowatch))).await.expect("replica b");
    let stream =
        NatsStream::connect(&watchnext_core::config::NatsConfig { url: url.clone(), ..Default::default() }, "w")
            .await
            .expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stream.check_health().is_err() {
        assert!(tokio::time::Instant::now() < deadline, "NATS never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queries = ["q1", "p1", "q2", "p2", "q3", "p3"];
    let (events, ids) = pair_watches("q1", "p1");
    stream.append(events, ids).await.expect("append");
    // A second delivery after the snapshot interval makes replica a write one.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (events, ids) = pair_watches("q2", "p2");
    stream.append(events, ids).await.expect("append");
    let reference = settled(&a, &queries, "p2").await;
    assert!(
        reference[0].iter().any(|(v, _)| v == "p1") && reference[2].iter().any(|(v, _)| v == "p2"),
        "{reference:?}"
    );
    wait_until_answers(&b, &queries, &reference).await;

    // A new replica starts from replica a's newest snapshot plus the stream.
    let snapshot = a.data_dir().join("snapshots").join("cowatch.snap");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !snapshot.is_file() {
        assert!(tokio::time::Instant::now() < deadline, "replica a wrote no snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stream forgets the first batch (retention, say): a replica that
    // replayed the stream from the start could no longer learn q1 -> p1.
    let raw = async_nats::jetstream::new(async_nats::connect(url.clone()).await.expect("raw client"));
    let purged = raw.get_stream("WATCHNEXT_EVENTS").await.expect("stream").purge().sequence(25).await.expect("purge");
    assert_eq!(purged.purged, 24);
    let copied = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(copied.path().join("snapshots")).expect("mkdir");
    std::fs::copy(&snapshot, copied.path().join("snapshots").join("cowatch.snap")).expect("copy snapshot");
    let from = copied.path().to_owned();
    let c = TestServer::start_with_data(
        move |dir| {
            std::fs::create_dir_all(dir.join("snapshots"))?;
            std::fs::copy(from.join("snapshots").join("cowatch.snap"), dir.join("snapshots").join("cowatch.snap"))?;
            Ok(())
        },
        |cfg| on_nats(cfg, &url, Role::Generator(Source::Cowatch)),
    )
    .await
    .expect("replica c");
    let (events, ids) = pair_watches("q3", "p3");
    stream.append(events, ids).await.expect("append");
    let reference = settled(&a, &queries, "p3").await;
    wait_until_answers(&b, &queries, &reference).await;
    wait_until_answers(&c, &queries, &reference).await;
    for server in [a, b, c] {
        server.stop().await.expect("stop");
    }
}

/// Runs the built `watchnext` binary on `data` with the NATS event log at
/// `url`; returns its stdout, or its exit error with stdout and stderr.
fn cli_on_nats(url: &str, data: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let output = watchnext_testkit::watchnext_command()
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("WATCHNEXT__EVENT_LOG__BACKEND", "nats")
        .env("WATCHNEXT__EVENT_LOG__NATS__URL", url)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run watchnext");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_generate_publishes_into_the_stream_and_export_reads_from_it() {
    let Some(nats) = LocalNats::start() else { return };
    let url = nats.url();
    let (source, target) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let args = ["world", "generate", "--preset", "toy", "--events", "3000", "--seed", "4", "--publish"];
    let out = cli_on_nats(&url, source.path(), &args).expect("world generate --publish");
    assert!(out.contains("stream push:"), "{out}");
    let written =
        watchnext_feedback::LogReader::open(watchnext_core::datadir::DataDir::new(source.path()).feedback_log(), 1)
            .expect("reader")
            .count() as u64;
    assert!(written >= 3_000, "{written} events written");
    let config = watchnext_core::config::NatsConfig { url: url.clone(), ..Default::default() };
    let stream = NatsStream::connect(&config, "publish-test").await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stream.check_health().is_err() {
        assert!(tokio::time::Instant::now() < deadline, "NATS never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream.last_seq().await.expect("last"), written, "every event of the folder, once");

    let parquet = target.path().join("events.parquet");
    let out =
        cli_on_nats(&url, target.path(), &["export", "--from-stream", "events", "--out", parquet.to_str().unwrap()])
            .expect("export --from-stream");
    assert!(out.contains(&format!("exported {written} events")), "the export read the stream's events: {out}");
    assert!(parquet.is_file());

    // Without NATS configured, --publish is refused before anything is written.
    let empty = tempfile::tempdir().expect("dir");
    let refused = watchnext_testkit::watchnext_command()
        .arg("--data-dir")
        .arg(empty.path())
        .args(args)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run watchnext");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--publish") && stderr.contains("event_log.backend"), "{stderr}");
    assert!(!watchnext_core::datadir::DataDir::new(empty.path()).catalog().exists(), "nothing written");
}
