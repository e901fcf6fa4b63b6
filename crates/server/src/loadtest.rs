//! `watchnext loadtest`: an open-loop load generator for `Recommend`, or
//! (`--call record`) for `Feedback.Record` batches of `--batch` events.
//!
//! Requests are *scheduled* at a fixed arrival rate and sent on time
//! whether or not earlier ones have returned; each latency is measured from
//! the request's scheduled time, not from when it was actually sent. A
//! closed loop (send, wait, send) slows down with the server and hides its
//! queueing — "coordinated omission" — so its p99 reads low; this one does
//! not. Requests are spread over several HTTP/2 connections.
//!
//! The request mix comes from the data folder: with the synthetic world,
//! its live users' requests (user, device, query video, recent history);
//! otherwise catalogue videos for a pool of user ids. The report has what
//! `ghz` reports: count, achieved rate, fastest, average, slowest,
//! percentiles, status counts, plus how many answers were degraded.
//!
//! Record batches are watch events of users and catalogue videos from the
//! data folder, each with a fresh `event_id` (so a NATS stream stores every
//! one: none is a duplicate), timestamped at sending.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tonic::transport::Channel;
use watchnext_core::{catalog::Catalog, datadir::DataDir};
use watchnext_proto::v1::{
    self as pb, RecommendRequest, RecordRequest, RequestContext, feedback_client::FeedbackClient,
    recommender_client::RecommenderClient,
};

use crate::stage_report::{self, StageTime};

/// `watchnext loadtest` flags.
#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Requests per second (the arrival rate, kept whatever the latency).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of load before measuring (caches, lazily loaded models).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// `num_results` of every request.
    #[arg(long, default_value_t = 20)]
    pub num_results: u32,
    /// The deadline each request carries (`grpc-timeout`), ms.
    #[arg(long, default_value_t = 1_000)]
    pub deadline_ms: u64,
    /// Requests allowed in flight; beyond it a scheduled request is counted
    /// as dropped (the server is far behind) instead of queueing without end.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Metrics endpoints (`host:port` of `server.metrics_listen`) to read
    /// the time per stage from, before and after the measured window; one
    /// per process of a split deployment (repeat the flag). `none`: skip.
    #[arg(long = "metrics", default_value = "127.0.0.1:9464")]
    pub metrics: Vec<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// What to call: `recommend` (Recommender.Recommend) or `record`
    /// (Feedback.Record; `--rate` is then batches per second).
    #[arg(long, value_enum, default_value_t = CallKind::Recommend)]
    pub call: CallKind,
    /// Events per Record batch (`--call record`).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
}

/// The RPC a load test sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    #[default]
    Recommend,
    Record,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    pub call: CallKind,
    /// Events per call (1 for Recommend).
    pub events_per_call: usize,
    pub target_rate: f64,
    pub seconds: f64,
    /// Requests scheduled in the measured window.
    pub count: u64,
    pub achieved_rate: f64,
    /// Latencies of the OK answers, ms (from the scheduled time).
    pub fastest_ms: f64,
    pub average_ms: f64,
    pub slowest_ms: f64,
    /// `(percentile, ms)`: 10, 25, 50, 75, 90, 95, 99, 99.9.
    pub percentiles: Vec<(f64, f64)>,
    /// gRPC status name → count (`OK` included).
    pub statuses: BTreeMap<String, u64>,
    /// OK answers flagged degraded.
    pub degraded: u64,
    /// Scheduled requests not sent because `max_in_flight` were pending.
    pub dropped: u64,
    /// Time per stage on the server side over the measured window (empty
    /// when not scraped).
    pub stages: Vec<StageTime>,
    /// Why there are no stage times, when there are none.
    pub stages_note: String,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "open loop at {:.0} requests/s for {:.0} s: {} requests, {:.1} answered/s",
            self.target_rate, self.seconds, self.count, self.achieved_rate
        )?;
        if self.call == CallKind::Record {
            writeln!(
                f,
                "Record batches of {} events: {:.0} events acknowledged/s",
                self.events_per_call,
                self.achieved_rate * self.events_per_call as f64
            )?;
        }
        writeln!(
            f,
            "latency (from the scheduled time): fastest {:.2} ms, average {:.2} ms, slowest {:.2} ms",
            self.fastest_ms, self.average_ms, self.slowest_ms
        )?;
        let p: Vec<String> = self.percentiles.iter().map(|(q, ms)| format!("p{q} {ms:.2} ms")).collect();
        writeln!(f, "percentiles: {}", p.join(", "))?;
        let s: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
        write!(
            f,
            "statuses: {}; degraded answers {}; dropped (too many in flight) {}",
            s.join(", "),
            self.degraded,
            self.dropped
        )?;
        if self.stages.is_empty() {
            if !self.stages_note.is_empty() {
                write!(f, "\ntime per stage: {}", self.stages_note)?;
            }
            return Ok(());
        }
        write!(f, "\ntime per stage (server side, measured window; shares of the whole Recommend's time):")?;
        write!(
            f,
            "\n  {:<32} {:>8} {:>10} {:>10} {:>10} {:>7}",
            "stage", "calls", "mean ms", "p50 ms", "p99 ms", "share"
        )?;
        for r in &self.stages {
            write!(
                f,
                "\n  {:<32} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>6.1}%",
                r.stage,
                r.calls,
                r.mean_ms,
                r.p50_ms,
                r.p99_ms,
                r.share_of_recommend * 100.0
            )?;
        }
        Ok(())
    }
}

/// The requests to replay, drawn from the data folder.
pub fn request_mix(data_dir: &Path, n: usize, num_results: u32) -> anyhow::Result<Vec<RecommendRequest>> {
    let data = DataDir::new(data_dir);
    let mut out = Vec::with_capacity(n);
    if data.world_config().is_file() {
        let config = watchnext_world::WorldConfig::read(&data.world_config())?;
        let world = Arc::new(watchnext_world::World::build(&config)?);
        let start_ms = config.epoch_ms + i64::from(config.days) * 86_400_000;
        let mut population = watchnext_world::Population::new(world, start_ms);
        while out.len() < n {
            let Some(r) = population.next_request() else { break };
            out.push(RecommendRequest {
                user_id: r.user.as_str().to_owned(),
                query_video_id: r.query_video.as_str().to_owned(),
                device: r.device.to_proto() as i32,
                recent_history: r.history.to_proto(),
                context: Some(RequestContext { request_time_ms: r.time_ms, ..Default::default() }),
                num_results,
                ..Default::default()
            });
            population.abandon(&r)?;
        }
    } else {
        let catalog = Catalog::read(&data.catalog())
            .context("no catalogue to draw query videos from (point --data-dir at the server's data folder)")?;
        anyhow::ensure!(!catalog.is_empty(), "the catalogue is empty");
        let videos = catalog.videos();
        for i in 0..n {
            out.push(RecommendRequest {
                user_id: format!("loadtest-user-{}", i % 1_000),
                query_video_id: videos[(i * 7_919) % videos.len()].id.clone(),
                num_results,
                ..Default::default()
            });
        }
    }
    anyhow::ensure!(!out.is_empty(), "no request could be drawn from {}", data_dir.display());
    Ok(out)
}

/// Record batches for `--call record`: watch events of `users` users on
/// catalogue videos; ids and timestamps are set when each batch is sent.
pub fn record_mix(data_dir: &Path, batches: usize, batch: usize) -> anyhow::Result<Vec<RecordRequest>> {
    anyhow::ensure!((1..=10_000).contains(&batch), "--batch must be between 1 and 10000");
    let catalog = Catalog::read(&DataDir::new(data_dir).catalog())
        .context("no catalogue to draw videos from (point --data-dir at the server's data folder)")?;
    anyhow::ensure!(!catalog.is_empty(), "the catalogue is empty");
    let videos = catalog.videos();
    Ok((0..batches)
        .map(|b| RecordRequest {
            events: (0..batch)
                .map(|i| {
                    let n = b * batch + i;
                    let video = &videos[(n * 7_919) % videos.len()];
                    pb::FeedbackEvent {
                        user_id: format!("loadtest-user-{}", n % 1_000),
                        video_id: video.id.clone(),
                        device: pb::DeviceType::Phone as i32,
                        event: Some(pb::feedback_event::Event::Watch(pb::Watch {
                            seconds_watched: (video.duration_seconds * 0.5).max(1.0),
                            video_duration_seconds: video.duration_seconds,
                        })),
                        ..Default::default()
                    }
                })
                .collect(),
        })
        .collect())
}

/// What a run sends: Recommend requests or Record batches.
#[derive(Debug)]
pub enum Mix {
    Recommend(Vec<RecommendRequest>),
    Record(Vec<RecordRequest>),
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
    degraded: u64,
}

/// Runs the load and returns the report of the measured window.
pub async fn run(args: &LoadtestArgs, mix: Mix) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be a positive number");
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    let mut clients = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        let channel = Channel::from_shared(args.addr.clone())
            .with_context(|| format!("--addr {}", args.addr))?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        clients.push(channel);
    }
    let mix_len = match &mix {
        Mix::Recommend(r) => r.len(),
        Mix::Record(r) => r.len(),
    };
    anyhow::ensure!(mix_len > 0, "nothing to send");
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let (call, events_per_call) = match &mix {
        Mix::Recommend(_) => (CallKind::Recommend, 1),
        Mix::Record(r) => (CallKind::Record, r[0].events.len()),
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let warmup = (args.warmup * args.rate).round() as u64;
    let measured = (args.duration * args.rate).round().max(1.0) as u64;
    let deadline = Duration::from_millis(args.deadline_ms);
    let start = Instant::now();
    let mut dropped = 0u64;
    let mut tasks = Vec::with_capacity(measured as usize);
    let scrape_from: Vec<String> =
        args.metrics.iter().filter(|a| !a.is_empty() && a.as_str() != "none").cloned().collect();
    let mut before = None;
    for i in 0..warmup + measured {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let counted = i >= warmup;
        if i == warmup && !scrape_from.is_empty() {
            // Off the schedule's path: the scrape runs beside the load.
            let addrs = scrape_from.clone();
            before = Some(tokio::spawn(async move { stage_report::scrape_all(&addrs).await }));
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += u64::from(counted);
            continue;
        };
        let channel = clients[i as usize % clients.len()].clone();
        let sent: futures_util::future::BoxFuture<'static, Result<bool, tonic::Status>> = match &mix {
            Mix::Recommend(requests) => {
                let mut request = tonic::Request::new(requests[i as usize % mix_len].clone());
                request.set_timeout(deadline);
                let mut client = RecommenderClient::new(channel);
                Box::pin(async move { client.recommend(request).await.map(|r| r.get_ref().degraded) })
            }
            Mix::Record(batches) => {
                let mut batch = batches[i as usize % mix_len].clone();
                let now_ms =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                for (k, e) in batch.events.iter_mut().enumerate() {
                    e.event_id = format!("lt-{run_id:x}-{i}-{k}");
                    e.timestamp_ms = now_ms as i64;
                }
                let mut request = tonic::Request::new(batch);
                request.set_timeout(deadline);
                let mut client = FeedbackClient::new(channel);
                Box::pin(async move { client.record(request).await.map(|_| false) })
            }
        };
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = sent.await;
            let latency = scheduled.elapsed();
            drop(permit);
            if !counted {
                return;
            }
            let mut t = tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match outcome {
                Ok(degraded) => {
                    t.latencies_us.push(latency.as_micros() as u64);
                    *t.statuses.entry("OK".into()).or_default() += 1;
                    t.degraded += u64::from(degraded);
                }
                Err(status) => *t.statuses.entry(format!("{:?}", status.code())).or_default() += 1,
            }
        }));
    }
    let sent_window = start.elapsed().as_secs_f64() - args.warmup;
    for t in tasks {
        let _ = t.await;
    }
    let (stages, stages_note) = match before {
        None => (Vec::new(), "not scraped (--metrics none)".to_owned()),
        Some(before) => {
            let before = before.await.map_err(anyhow::Error::from).and_then(|b| b);
            match (before, stage_report::scrape_all(&scrape_from).await) {
                (Ok(b), Ok(a)) => {
                    let rows = stage_report::between(&b, &a);
                    let note = if rows.is_empty() {
                        format!(
                            "no stage histograms at {} (a server older than this loadtest?)",
                            scrape_from.join(", ")
                        )
                    } else {
                        String::new()
                    };
                    (rows, note)
                }
                (Err(e), _) | (_, Err(e)) => (
                    Vec::new(),
                    format!(
                        "could not read {} ({e:#}); pass --metrics host:port of server.metrics_listen",
                        scrape_from.join(", ")
                    ),
                ),
            }
        }
    };
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let mut lat: Vec<f64> = t.latencies_us.iter().map(|&us| us as f64 / 1e3).collect();
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat.get(((q / 100.0) * (lat.len() as f64 - 1.0)).round() as usize).copied().unwrap_or(0.0);
    let ok = lat.len() as f64;
    Ok(LoadReport {
        call,
        events_per_call,
        target_rate: args.rate,
        seconds: args.duration,
        count: measured,
        achieved_rate: ok / sent_window.max(1e-9),
        fastest_ms: lat.first().copied().unwrap_or(0.0),
        average_ms: if lat.is_empty() { 0.0 } else { lat.iter().sum::<f64>() / ok },
        slowest_ms: lat.last().copied().unwrap_or(0.0),
        percentiles: [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9].into_iter().map(|q| (q, at(q))).collect(),
        statuses: t.statuses,
        degraded: t.degraded,
        dropped,
        stages,
        stages_note,
    })
}

/// `watchnext loadtest`.
pub async fn command(data_dir: &Path, args: LoadtestArgs) -> anyhow::Result<()> {
    let (dir, results, call, batch) = (data_dir.to_owned(), args.num_results, args.call, args.batch);
    let mix = tokio::task::spawn_blocking(move || -> anyhow::Result<Mix> {
        Ok(match call {
            CallKind::Recommend => Mix::Recommend(request_mix(&dir, 5_000, results)?),
            CallKind::Record => Mix::Record(record_mix(&dir, 200, batch)?),
        })
    })
    .await??;
    let distinct = match &mix {
        Mix::Recommend(r) => r.len(),
        Mix::Record(r) => r.len(),
    };
    println!(
        "loadtest: {} distinct requests from {}; {:.0} requests/s for {:.0} s (+{:.0} s warm-up) on {} connections",
        distinct,
        data_dir.display(),
        args.rate,
        args.duration,
        args.warmup,
        args.connections
    );
    let report = run(&args, mix).await?;
    println!("{report}");
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        watchnext_core::fsutil::write_atomic(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
