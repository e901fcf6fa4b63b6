//! A split deployment on one machine, every role replicated, events in NATS
//! JetStream: a `nats-server`, 2 feedback writers, 2 recommenders, 3
//! rankers, 2 co-watch replicas and a topic generator, each a `watchnext`
//! process. Under Record and Recommend load, one process of each role is
//! killed with SIGKILL and restarted on its address. Afterwards:
//!
//! - every event of every batch (acknowledged, or retried until it was) is
//!   in the stream exactly once;
//! - both co-watch replicas answer identically (same tables);
//! - no Recommend failed: the clients send a call whose recommender died
//!   to the other one, as a client behind a load balancer would, and a
//!   list that lost a role is flagged `degraded`, never an error.
//!
//! Skipped (saying so) without a nats-server binary; CI requires it.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tonic::{Code, transport::Channel};
use watchnext_feedback::EventStream;
use watchnext_nats::{NatsStream, local_server::LocalNats};
use watchnext_proto::v1::{
    self as pb, FeedbackEvent, GenerateRequest, RecommendRequest, RecordRequest,
    candidate_generator_client::CandidateGeneratorClient, feedback_client::FeedbackClient,
    recommender_client::RecommenderClient,
};
use watchnext_testkit::{prepare_world, train_ranker};

/// One process of the deployment, restartable on its address.
struct Process {
    role: &'static str,
    env: Vec<(String, String)>,
    addr: String,
    child: Option<Child>,
}

impl Process {
    fn start(role: &'static str, data: &Path, env: Vec<(String, String)>, listen: &str) -> Self {
        let mut child = watchnext_testkit::watchnext_command()
            .args(["serve", "--role", role, "--listen", listen, "--metrics-listen", ""])
            .arg("--data-dir")
            .arg(data)
            .args(["--log-level", "error"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .spawn()
            .expect("spawn watchnext");
        let addr = watchnext_testkit::announced_addr(&mut child);
        Self { role, env, addr, child: Some(child) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, data: &Path) {
        self.kill();
        let again = Self::start(self.role, data, self.env.clone(), &self.addr);
        let mut again = again;
        self.child = again.child.take();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned()).expect("url").connect_lazy()
}

/// Batch `b` of writer `w`: `n` watch events, each of its own user (the
/// user id identifies the event in the stream), ids `mp-w-b-k`.
fn batch(w: usize, b: usize, n: usize, videos: &[String]) -> RecordRequest {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    RecordRequest {
        events: (0..n)
            .map(|k| FeedbackEvent {
                event_id: format!("mp-{w}-{b}-{k}"),
                user_id: format!("mp-{w}-{b}-{}", k / 2),
                video_id: videos[(w * 31 + b * 7 + k) % videos.len()].clone(),
                timestamp_ms: now - 60_000 + k as i64,
                event: Some(pb::feedback_event::Event::Watch(pb::Watch {
                    seconds_watched: 30.0,
                    video_duration_seconds: 60.0,
                })),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_replicated_survives_a_kill_of_each_without_losing_or_doubling_events() {
    let Some(nats) = LocalNats::start() else { return };
    let data = tempfile::tempdir().expect("temp dir");
    prepare_world(data.path(), 5, 20_000).expect("world");
    train_ranker(data.path(), "v1", 5).expect("model");
    let d = data.path();
    let common = vec![
        ("WATCHNEXT__EVENT_LOG__BACKEND", "nats".to_owned()),
        ("WATCHNEXT__EVENT_LOG__NATS__URL", nats.url()),
        ("WATCHNEXT__ENDPOINTS__PROBE_INTERVAL_MS", "200".to_owned()),
        ("WATCHNEXT__GENERATORS__SNAPSHOT_INTERVAL_SECONDS", "1".to_owned()),
    ];
    let any = "127.0.0.1:0";
    let mut rankers: Vec<Process> = (0..3).map(|_| Process::start("ranker", d, env(&common), any)).collect();
    let mut cowatch: Vec<Process> = (0..2).map(|_| Process::start("cowatch", d, env(&common), any)).collect();
    let topic = Process::start("topic", d, env(&common), any);
    let mut feedback: Vec<Process> = (0..2).map(|_| Process::start("feedback", d, env(&common), any)).collect();
    let list = |ps: &[Process]| ps.iter().map(Process::url).collect::<Vec<_>>().join(",");
    let mut rec_env = common.clone();
    rec_env.push(("WATCHNEXT__ENDPOINTS__RANKER", list(&rankers)));
    rec_env.push(("WATCHNEXT__ENDPOINTS__COWATCH", list(&cowatch)));
    rec_env.push(("WATCHNEXT__ENDPOINTS__TOPIC", topic.url()));
    let mut recommenders: Vec<Process> = (0..2).map(|_| Process::start("recommender", d, env(&rec_env), any)).collect();

    let catalog = watchnext_core::catalog::Catalog::read(&d.join("catalog.jsonl")).expect("catalogue");
    let videos: Arc<Vec<String>> = Arc::new(catalog.videos().iter().take(40).map(|v| v.id.clone()).collect());
    let feedback_urls: Vec<String> = feedback.iter().map(Process::url).collect();
    let recommender_urls: Vec<String> = recommenders.iter().map(Process::url).collect();
    tokio::time::sleep(Duration::from_secs(2)).await; // every role SERVING

    let stop = Arc::new(AtomicBool::new(false));
    let sent_events = Arc::new(AtomicU64::new(0));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let (recommends, degraded) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    // Writers: each batch to one feedback process; on failure the same batch
    // (same event ids) to the other, until one acknowledges it.
    for w in 0..2 {
        let (stop, sent, problems, videos) = (stop.clone(), sent_events.clone(), problems.clone(), videos.clone());
        let mut clients = Vec::new();
        for url in &feedback_urls {
            clients.push(FeedbackClient::new(channel(url).await));
        }
        load.push(tokio::spawn(async move {
            let mut b = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = batch(w, b, 20, &videos);
                let mut attempt = 0;
                loop {
                    let client = &mut clients[(w + b + attempt) % 2];
                    let mut call = tonic::Request::new(request.clone());
                    call.set_timeout(Duration::from_secs(5));
                    match client.record(call).await {
                        Ok(_) => break,
                        Err(status) if attempt < 50 => {
                            if !matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) {
                                problems.lock().expect("lock").push(format!("Record: {status}"));
                            }
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(status) => {
                            problems.lock().expect("lock").push(format!("Record never acknowledged: {status}"));
                            break;
                        }
                    }
                }
                sent.fetch_add(20, Ordering::Relaxed);
                b += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    // Readers: Recommend against either recommender; a call whose
    // recommender died goes to the other one.
    for r in 0..2 {
        let (stop, problems, videos) = (stop.clone(), problems.clone(), videos.clone());
        let (recommends, degraded) = (recommends.clone(), degraded.clone());
        let mut clients = Vec::new();
        for url in &recommender_urls {
            clients.push(RecommenderClient::new(channel(url).await));
        }
        load.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let request = RecommendRequest {
                    user_id: format!("reader-{r}-{}", i % 10),
                    query_video_id: videos[i % videos.len()].clone(),
                    num_results: 10,
                    ..Default::default()
                };
                let first = clients[(r + i) % 2].recommend(request.clone()).await;
                let answer = match first {
                    Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                        clients[(r + i + 1) % 2].recommend(request).await
                    }
                    other => other,
                };
                match answer {
                    Ok(a) => {
                        recommends.fetch_add(1, Ordering::Relaxed);
                        degraded.fetch_add(u64::from(a.get_ref().degraded), Ordering::Relaxed);
                    }
                    Err(s) => problems.lock().expect("lock").push(format!("Recommend failed: {s}")),
                }
                i += 1;
            }
        }));
    }

    // One process of each role killed and restarted on its address.
    let pause = Duration::from_millis(1_500);
    tokio::time::sleep(pause).await;
    feedback[0].kill();
    tokio::time::sleep(pause).await;
    feedback[0].restart(d);
    rankers[0].kill();
    tokio::time::sleep(pause).await;
    rankers[0].restart(d);
    cowatch[0].kill();
    tokio::time::sleep(pause).await;
    cowatch[0].restart(d);
    recommenders[0].kill();
    tokio::time::sleep(pause).await;
    recommenders[0].restart(d);
    tokio::time::sleep(pause).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    let problems = problems.lock().expect("lock").clone();
    assert!(problems.is_empty(), "{} problems, e.g. {:?}", problems.len(), &problems[..problems.len().min(5)]);
    assert!(recommends.load(Ordering::Relaxed) > 50, "the read load ran");

    // Every event written exactly once: the stream holds each writer event's
    // user once per event pair, and nothing else under that prefix.
    let stream =
        NatsStream::connect(&watchnext_core::config::NatsConfig { url: nats.url(), ..Default::default() }, "check")
            .await
            .expect("connect");
    let last = stream.last_seq().await.expect("last seq");
    let mut chunks = stream.follow(1, 4_096);
    let mut per_event: HashMap<(String, String, i64), u32> = HashMap::new();
    let mut read = 0;
    while read < last {
        let chunk = tokio::time::timeout(Duration::from_secs(20), chunks.recv())
            .await
            .expect("reading the stream")
            .expect("follower")
            .expect("chunk");
        read = chunk.last_seq();
        for e in chunk.events.into_iter().filter(|e| e.user.as_str().starts_with("mp-")) {
            *per_event.entry((e.user.as_str().to_owned(), e.video.as_str().to_owned(), e.timestamp_ms)).or_default() +=
                1;
        }
    }
    let sent = sent_events.load(Ordering::Relaxed) as usize;
    let doubled: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events stored twice: {:?}", &doubled[..doubled.len().min(5)]);
    assert_eq!(per_event.len(), sent, "every event of every batch is in the stream");

    // Both co-watch replicas end with the same tables.
    let queries: Vec<String> = videos.iter().take(15).cloned().collect();
    let mut answers: Vec<Vec<Vec<(String, u32)>>> = vec![Vec::new(); 2];
    for _ in 0..100 {
        for (n, p) in cowatch.iter().enumerate() {
            let mut client = CandidateGeneratorClient::new(channel(&p.url()).await);
            answers[n].clear();
            for q in &queries {
                let request = GenerateRequest { query_video_id: q.clone(), max_candidates: 20, ..Default::default() };
                let r = client.generate(request).await.map(|r| r.into_inner().candidates).unwrap_or_default();
                answers[n].push(r.into_iter().map(|c| (c.video_id, c.score.to_bits())).collect());
            }
        }
        if answers[0] == answers[1] && answers[0].iter().any(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answers[0], answers[1], "the two co-watch replicas answer identically");
    let distinct: HashSet<&String> = answers[0].iter().flatten().map(|(v, _)| v).collect();
    assert!(!distinct.is_empty());
    eprintln!(
        "multi-process: {sent} events written, {} Recommends ({} degraded), stream last sequence {last}",
        recommends.load(Ordering::Relaxed),
        degraded.load(Ordering::Relaxed)
    );
    drop((rankers, cowatch, topic, feedback, recommenders));
}
