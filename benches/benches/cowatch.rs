//! The co-watch generator: how fast it ingests (watch events/s and pair
//! updates/s on one core), how fast it answers at 1M tracked videos, and how
//! fast it answers while another thread ingests.
//!
//! 1. **Ingestion**: the default world's log (500k events, all kinds, as the
//!    feedback log hands them over, in batches of 4,096) into a fresh
//!    generator, on the bench thread alone. Reported twice, with the watch
//!    events and with the pair updates as throughput.
//! 2. **`generate` at 1M videos**: the large world's log (watch events of
//!    `COWATCH_BENCH_EVENTS` events, default 4M), then, because a log of a
//!    few million events never reaches the Zipf tail of a 1M-video
//!    catalogue, synthetic sessions over the catalogue videos still untracked
//!    (three videos of one topic each) until every catalogue video is
//!    tracked. Queries are drawn from the watch stream (popular videos
//!    asked about more, as in real traffic), each with a 20-video history;
//!    100 candidates per call.
//! 3. The same while a second thread replays the watch stream into the
//!    tables without pause.
//!
//! The setup prints the table's size, its memory estimate per video, and
//! the time to write and load a snapshot of it.

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use watchnext_core::{
    Device, UserId, VideoId,
    event::{Event, EventKind, EventSink},
    generator::Generator,
    request::{History, HistoryEntry, Query, RequestContext},
};
use watchnext_cowatch::{CowatchConfig, CowatchGenerator};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

const INGEST_EVENTS: u64 = 500_000;
const BATCH: usize = 4_096;
const MAX_CANDIDATES: usize = 100;
const HISTORY: usize = 20;

/// Keeps only watch events (the large log would not fit in memory whole).
#[derive(Default)]
struct Watches(Vec<Event>);

impl EventSink for Watches {
    type Error = std::convert::Infallible;

    fn push(&mut self, event: Event) -> Result<(), Self::Error> {
        if matches!(event.kind, EventKind::Watch { .. }) {
            self.0.push(event);
        }
        Ok(())
    }
}

fn observe_all(g: &CowatchGenerator, events: &[Event]) {
    for batch in events.chunks(BATCH) {
        g.observe(batch);
    }
}

fn ingestion(c: &mut Criterion) {
    let world = World::build(&WorldConfig::default()).expect("world");
    let mut events: Vec<Event> = Vec::with_capacity(INGEST_EVENTS as usize);
    generate_logs(&world, LoggingPolicy::PopularityNoise { noise: 1.0 }, INGEST_EVENTS, &mut events, false)
        .expect("log");
    let dry = CowatchGenerator::new(CowatchConfig::default()).expect("config");
    observe_all(&dry, &events);
    let stats = dry.stats();
    eprintln!(
        "cowatch ingest: {} events, {} watches, {} pair updates, {} videos, {:.0} bytes/video",
        events.len(),
        stats.watches,
        stats.pair_updates,
        stats.memory.videos,
        stats.memory.bytes_per_video
    );
    drop(dry);

    let mut group = c.benchmark_group("cowatch");
    group.sample_size(10);
    for (name, elements) in [("ingest_watch_events", stats.watches), ("ingest_pair_updates", stats.pair_updates)] {
        group.throughput(Throughput::Elements(elements));
        group.bench_function(name, |b| {
            b.iter_batched(
                || CowatchGenerator::new(CowatchConfig::default()).expect("config"),
                |g| {
                    observe_all(&g, black_box(&events));
                    g
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// A tiny deterministic generator for the bench's own draws.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn synthetic_watch(user: &str, video: &VideoId, t_ms: i64) -> Event {
    Event {
        timestamp_ms: t_ms,
        request_id: String::new(),
        user: UserId::parse("user", user).expect("id"),
        video: video.clone(),
        device: Device::Tv,
        kind: EventKind::Watch { seconds_watched: 60.0, video_duration_seconds: 120.0 },
    }
}

fn at_scale(c: &mut Criterion) {
    let started = Instant::now();
    let target: u64 = std::env::var("COWATCH_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000_000);
    let world = World::build(&WorldConfig::large()).expect("world");
    let mut watches = Watches::default();
    let summary =
        generate_logs(&world, LoggingPolicy::PopularityNoise { noise: 1.0 }, target, &mut watches, false).expect("log");
    let watches = watches.0;
    let generated = started.elapsed();

    let g = Arc::new(CowatchGenerator::new(CowatchConfig::default()).expect("config"));
    let t = Instant::now();
    observe_all(&g, &watches);
    let from_log = g.memory().videos;
    let ingest = t.elapsed();

    // Top up the catalogue's untracked tail with synthetic sessions.
    let mut rng = XorShift(0x5DEE_CE66_D1CE_4E5B);
    let mut t_ms = summary.last_ms;
    let mut topup = Vec::with_capacity(BATCH);
    let mut session = 0u64;
    for v in 0..world.num_videos() {
        let id = world.video_id(v);
        if g.contains(id.as_str()) {
            continue;
        }
        let topic = world.video(v).topics()[0];
        let mates = world.topic_videos(topic);
        let user = format!("synthetic{session}");
        session += 1;
        t_ms += 10;
        topup.push(synthetic_watch(&user, world.video_id(mates[rng.below(mates.len())]), t_ms));
        topup.push(synthetic_watch(&user, id, t_ms + 1));
        topup.push(synthetic_watch(&user, world.video_id(mates[rng.below(mates.len())]), t_ms + 2));
        if topup.len() >= BATCH {
            g.observe(&topup);
            topup.clear();
        }
    }
    g.observe(&topup);
    let stats = g.stats();
    let memory = &stats.memory;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cowatch.snap");
    let t = Instant::now();
    let info = g.snapshot(&path, 1).expect("snapshot");
    let written = t.elapsed();
    let t = Instant::now();
    let (loaded, _) = CowatchGenerator::load(&path, CowatchConfig::default()).expect("load");
    let read = t.elapsed();
    drop(loaded);
    drop(dir);
    eprintln!(
        "cowatch at scale: {} events ({} watches) generated in {:.1} s; {} videos tracked from the log (ingested in \
         {:.1} s), {} after the top-up; {} neighbour entries; tables {:.0} MiB = {:.0} bytes/video (budget {:.0} MiB); \
         windows {:.0} MiB for {} users; snapshot {:.0} MiB written in {:.2} s, loaded in {:.2} s; setup {:.0} s",
        summary.events,
        watches.len(),
        generated.as_secs_f64(),
        from_log,
        ingest.as_secs_f64(),
        memory.videos,
        g.neighbour_lists().1,
        memory.table_bytes as f64 / 1048576.0,
        memory.bytes_per_video,
        memory.budget_bytes as f64 / 1048576.0,
        memory.window_bytes as f64 / 1048576.0,
        memory.users,
        info.bytes as f64 / 1048576.0,
        written.as_secs_f64(),
        read.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );

    // Queries: videos of the watch stream, each with 20 other watched videos as history.
    let queries: Vec<Query> = (0..4_096)
        .map(|i| {
            let e = &watches[rng.below(watches.len())];
            let history = (0..HISTORY)
                .map(|_| HistoryEntry {
                    video: watches[rng.below(watches.len())].video.clone(),
                    watched_at_ms: 0,
                    seconds_watched: 30.0,
                })
                .collect();
            Query {
                request_id: watchnext_core::RequestId::parse("r", &format!("r{i}")).expect("id"),
                user: e.user.clone(),
                query_video: e.video.clone(),
                device: Device::Phone,
                history: History(history),
                context: RequestContext::default(),
            }
        })
        .collect();
    let answered = queries.iter().filter(|q| !g.generate(q, MAX_CANDIDATES).candidates.is_empty()).count();
    let mean = queries.iter().map(|q| g.generate(q, MAX_CANDIDATES).candidates.len()).sum::<usize>() as f64 / 4096.0;
    eprintln!("cowatch queries: {answered} of 4096 answered, {mean:.1} candidates on average");

    let mut group = c.benchmark_group("cowatch");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("generate_1m_videos", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(g.generate(black_box(&queries[i]), MAX_CANDIDATES))
        })
    });

    let stop = Arc::new(AtomicBool::new(false));
    let ingester = {
        let (g, stop) = (Arc::clone(&g), Arc::clone(&stop));
        let watches = Arc::new(watches);
        std::thread::spawn(move || {
            let mut ingested = 0u64;
            let started = Instant::now();
            'replay: loop {
                for batch in watches.chunks(BATCH) {
                    if stop.load(Ordering::Relaxed) {
                        break 'replay;
                    }
                    g.observe(batch);
                    ingested += batch.len() as u64;
                }
            }
            ingested as f64 / started.elapsed().as_secs_f64()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    group.bench_function("generate_1m_videos_while_ingesting", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(g.generate(black_box(&queries[i]), MAX_CANDIDATES))
        })
    });
    stop.store(true, Ordering::Relaxed);
    let rate = ingester.join().expect("ingester");
    eprintln!("cowatch: the ingesting thread ran at {:.2} M watch events/s meanwhile", rate / 1e6);
    group.finish();
}

criterion_group!(benches, ingestion, at_scale);
criterion_main!(benches);
