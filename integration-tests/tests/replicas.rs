//! Calls spread over every replica of a role, and a killed replica costs no
//! request: a recommender (this process) with `endpoints.ranker` listing
//! three ranker processes (the real `watchnext` binary) under steady
//! Recommend load; one ranker is killed with SIGKILL half-way.

use std::{
    path::Path,
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use watchnext_core::{Role, event::Source};
use watchnext_proto::v1::{self as pb, RecommendRequest};
use watchnext_testkit::{TestServer, prepare_world, scrape_metrics, train_ranker};

/// A ranker process on `data` (it only reads the models and the catalogue),
/// listening on `listen`.
fn start_ranker(data: &Path, listen: &str) -> (Child, String) {
    let mut child = watchnext_testkit::watchnext_command()
        .args(["serve", "--role", "ranker", "--listen", listen, "--metrics-listen", ""])
        .arg("--data-dir")
        .arg(data)
        .args(["--log-level", "warn"])
        .spawn()
        .expect("spawn watchnext");
    let addr = watchnext_testkit::announced_addr(&mut child);
    (child, addr)
}

/// Child processes killed when the test ends, also when it fails.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls the recommender gave each ranker replica, from its metrics.
async fn calls_per_replica(server: &TestServer, replicas: &[String]) -> Vec<f64> {
    let text = scrape_metrics(server.metrics_addr().expect("metrics")).await.expect("scrape");
    replicas
        .iter()
        .map(|addr| {
            text.lines()
                .filter(|l| l.starts_with("watchnext_replica_calls_total{"))
                .filter(|l| l.contains("target=\"ranker\"") && l.contains(&format!("replica=\"{addr}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_spread_over_three_rankers_and_none_fails_when_one_is_killed() {
    let data = tempfile::tempdir().expect("temp dir");
    prepare_world(data.path(), 11, 20_000).expect("world");
    train_ranker(data.path(), "v1", 11).expect("model");
    let (children, addrs): (Vec<Child>, Vec<String>) = (0..3).map(|_| start_ranker(data.path(), "127.0.0.1:0")).unzip();
    let mut rankers = Children(children);
    let ranker_urls = addrs.iter().map(|a| format!("http://{a}")).collect::<Vec<_>>().join(",");

    let topic = TestServer::start_with_data(
        |dir| prepare_world(dir, 11, 20_000).map(|_| ()),
        |c| c.server.role = Role::Generator(Source::Topic),
    )
    .await
    .expect("topic role");
    let topic_url = format!("http://{}", topic.addr());
    let recommender = TestServer::start(|c| {
        c.server.role = Role::Recommender;
        c.endpoints.generators.insert("topic".into(), topic_url);
        c.endpoints.ranker = ranker_urls;
        c.endpoints.probe_interval_ms = 200;
    })
    .await
    .expect("recommender role");
    let catalog = watchnext_core::catalog::Catalog::read(&data.path().join("catalog.jsonl")).expect("catalogue");
    let videos: Vec<String> = catalog.videos().iter().take(50).map(|v| v.id.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, degraded_after_kill) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let killed = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..4 {
        let (mut client, stop, ok, failed) = (recommender.recommender(), stop.clone(), ok.clone(), failed.clone());
        let (degraded_after_kill, killed, videos) = (degraded_after_kill.clone(), killed.clone(), videos.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0usize;
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let request = RecommendRequest {
                    user_id: format!("load-{t}-{}", i % 20),
                    query_video_id: videos[i % videos.len()].clone(),
                    num_results: 10,
                    device: pb::DeviceType::Phone as i32,
                    ..Default::default()
                };
                i += 1;
                match client.recommend(request).await {
                    Ok(r) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if killed.load(Ordering::Relaxed) && r.get_ref().degraded {
                            errors.push(format!("degraded: {:?}", r.get_ref().degraded_reasons));
                            degraded_after_kill.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(status) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(status.to_string());
                    }
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = calls_per_replica(&recommender, &addrs).await;
    assert!(before.iter().all(|&c| c > 0.0), "every ranker took calls before the kill: {before:?}");

    rankers.0[0].kill().expect("kill");
    rankers.0[0].wait().expect("reap");
    killed.store(true, Ordering::Relaxed);
    let ok_at_kill = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.expect("load task"));
    }
    let after = calls_per_replica(&recommender, &addrs).await;

    assert!(errors.is_empty(), "{} failed or degraded Recommend calls, e.g. {:?}", errors.len(), errors.first());
    assert!(ok.load(Ordering::Relaxed) > ok_at_kill + 20, "the load went on after the kill");
    assert_eq!(degraded_after_kill.load(Ordering::Relaxed), 0, "no list fell back to the fused order");
    for i in 1..3 {
        assert!(after[i] > before[i], "the survivors took the load: before {before:?}, after {after:?}");
    }

    // The killed replica comes back on its address: probed healthy, it takes calls again.
    let (child, _) = start_ranker(data.path(), &addrs[0]);
    rankers.0[0] = child;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut client = recommender.recommender();
    for i in 0..60 {
        let request = RecommendRequest {
            user_id: format!("back-{i}"),
            query_video_id: videos[i % videos.len()].clone(),
            num_results: 10,
            ..Default::default()
        };
        client.recommend(request).await.expect("recommend");
    }
    let back = calls_per_replica(&recommender, &addrs).await;
    assert!(back[0] > after[0], "the restarted replica took calls again: after the kill {after:?}, back {back:?}");
    drop(rankers);
    recommender.stop().await.expect("stop");
    topic.stop().await.expect("stop");
}
