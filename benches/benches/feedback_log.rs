//! The feedback log: how many events per second it makes durable (every
//! acknowledgement waits for fsync), with one producer waiting on each batch
//! next to eight concurrent producers whose batches share fsyncs (group
//! commit), and through the bulk writer the synthetic world and importers
//! use; then how many training rows per second the streaming join of
//! impressions with outcomes produces from an in-memory stream.

use std::{hint::black_box, path::PathBuf, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use watchnext_core::{
    Device, UserId, VideoId,
    event::{Event, EventKind, EventSink, FeatureVector, Impression, Source, Vote},
};
use watchnext_feedback::{FeedbackLog, JoinOptions, LogOptions, join_events};

const BATCH: u64 = 100;
/// Batches per iteration: the same 9,600 events for one and for eight producers.
const BATCHES: u64 = 96;
const PRODUCERS: u64 = 8;
const BULK_EVENTS: u64 = 500_000;

fn event(i: u64) -> Event {
    let kind = if i.is_multiple_of(3) {
        EventKind::Impression(Impression {
            position: (i % 20) as u32 + 1,
            query_video: VideoId::parse("q", &format!("video-{}", i % 5000)).ok(),
            sources: vec![Vote::new(Source::Cowatch, 0.7, 1), Vote::new(Source::Topic, 0.2, 2)],
            features: Some(FeatureVector { schema_hash: "bench".into(), dense: vec![0.5; 16], sparse: vec![7; 4] }),
            model_version: "m1".into(),
            experiment_arm: "control".into(),
            propensity: 0.1,
        })
    } else if i % 3 == 1 {
        EventKind::Click
    } else {
        EventKind::Watch { seconds_watched: 42.0, video_duration_seconds: 300.0 }
    };
    Event {
        timestamp_ms: 1_700_000_000_000 + i as i64,
        request_id: format!("req-{}", i / 30),
        user: UserId::parse("u", &format!("user-{}", i % 10_000)).expect("valid id"),
        video: VideoId::parse("v", &format!("video-{}", i % 50_000)).expect("valid id"),
        device: Device::Phone,
        kind,
    }
}

fn batch(start: u64) -> Vec<Event> {
    (start..start + BATCH).map(event).collect()
}

/// A fresh folder under the system temporary folder, removed by `Drop`.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("watchnext-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = TempDir::new("ingest");
    let (log, _) = FeedbackLog::open(&dir.0, LogOptions::default()).expect("open log");

    let mut group = c.benchmark_group("feedback_log_ingest");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH * BATCHES));
    group.bench_function("1_producer_100_event_batches", |b| {
        b.to_async(&rt).iter(|| {
            let log = log.clone();
            async move {
                for k in 0..BATCHES {
                    log.append(batch(k * BATCH)).await.expect("append");
                }
            }
        });
    });
    let before = log.stats();
    group.bench_function("8_producers_100_event_batches", |b| {
        b.to_async(&rt).iter(|| {
            let log = log.clone();
            async move {
                let tasks: Vec<_> = (0..PRODUCERS)
                    .map(|p| {
                        let log = log.clone();
                        tokio::spawn(async move {
                            for k in 0..BATCHES / PRODUCERS {
                                log.append(batch((p * 1000 + k) * BATCH)).await.expect("append");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("producer");
                }
            }
        });
    });
    let after = log.stats();
    let (batches, fsyncs) = (after.batches - before.batches, after.fsyncs - before.fsyncs);
    println!(
        "8 producers: {batches} batches in {fsyncs} fsyncs ({:.1} batches per fsync)",
        batches as f64 / fsyncs.max(1) as f64
    );

    group.throughput(Throughput::Elements(BULK_EVENTS));
    group.bench_function("bulk_writer", |b| {
        b.iter(|| {
            let mut sink = log.bulk_writer();
            for i in 0..BULK_EVENTS {
                sink.push(event(i)).expect("push");
            }
            sink.finish().expect("finish")
        });
    });
    group.finish();
    drop(log);
}

/// A time-ordered stream: 10 impressions per request, then for each a click
/// (30%), a watch (20%), a like (5%) a few seconds later, plus organic events.
fn join_stream(impressions: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut t = 1_700_000_000_000i64;
    for r in 0..impressions / 10 {
        let request = format!("req-{r}");
        let user = UserId::parse("u", &format!("user-{}", r % 10_000)).expect("valid id");
        let videos: Vec<VideoId> =
            (0..10).map(|k| VideoId::parse("v", &format!("video-{}", (r * 7 + k) % 50_000)).expect("id")).collect();
        for (k, video) in videos.iter().enumerate() {
            let mut e = event(0);
            e.timestamp_ms = t;
            e.request_id = request.clone();
            e.user = user.clone();
            e.video = video.clone();
            if let EventKind::Impression(imp) = &mut e.kind {
                imp.position = k as u32 + 1;
            }
            events.push(e);
        }
        t += 1000;
        for (k, video) in videos.iter().enumerate() {
            let h = (r * 10 + k as u64).wrapping_mul(2_654_435_761) % 100;
            let kinds: &[EventKind] = match h {
                0..5 => &[
                    EventKind::Click,
                    EventKind::Watch { seconds_watched: 120.0, video_duration_seconds: 300.0 },
                    EventKind::Like,
                ],
                5..25 => &[EventKind::Click, EventKind::Watch { seconds_watched: 30.0, video_duration_seconds: 300.0 }],
                25..30 => &[EventKind::Click],
                30..33 => &[EventKind::Dismiss],
                _ => &[],
            };
            for kind in kinds {
                events.push(Event {
                    timestamp_ms: t,
                    request_id: request.clone(),
                    user: user.clone(),
                    video: video.clone(),
                    device: Device::Phone,
                    kind: kind.clone(),
                });
            }
        }
        let mut organic = event(1);
        organic.request_id.clear();
        organic.timestamp_ms = t;
        events.push(organic);
        t += 1000;
    }
    events
}

fn join(c: &mut Criterion) {
    let impressions = 100_000;
    let stream = join_stream(impressions);
    let mut group = c.benchmark_group("feedback_join");
    group.sample_size(10);
    group.throughput(Throughput::Elements(impressions));
    group.bench_function("rows_from_in_memory_stream", |b| {
        b.iter_batched(
            || stream.clone(),
            |events| {
                let mut clicks = 0u64;
                let summary = join_events(events, JoinOptions::default(), |row| {
                    clicks += u64::from(row.click);
                    black_box(row);
                    Ok::<_, std::convert::Infallible>(())
                })
                .expect("join");
                assert_eq!(summary.rows, impressions);
                clicks
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = ingest, join
}
criterion_main!(benches);
