//! Durability of `Feedback.Record` across a crash: a client streams batches
//! from several tasks into `watchnext serve --role feedback`, the process is
//! killed with SIGKILL mid-stream, restarted on the same data folder, and the
//! log must hold every acknowledged event, only events that were really sent
//! (nothing invented after a torn tail), with dense sequence numbers; and the
//! restarted server keeps appending after them.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::transport::Channel;
use watchnext_proto::v1::{
    FeedbackEvent, RecordRequest, Watch, feedback_client::FeedbackClient, feedback_event::Event,
};

const BIN: &str = env!("CARGO_BIN_EXE_watchnext");
const TASKS: usize = 4;
const BATCH: usize = 50;

fn start(data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--role", "feedback", "--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .arg("--data-dir")
        .arg(data)
        .args(["--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn watchnext");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("announce");
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")).expect("grpc= in announce").to_owned();
    (child, format!("http://{addr}"))
}

/// Event `i` of batch `b` of task `t`; the request id is its identity.
fn event(t: usize, b: usize, i: usize) -> FeedbackEvent {
    FeedbackEvent {
        request_id: format!("t{t}-b{b}-e{i}"),
        user_id: format!("user-{t}"),
        video_id: format!("video-{b}-{i}"),
        timestamp_ms: 1_700_000_000_000 + (b * BATCH + i) as i64,
        event: Some(Event::Watch(Watch { seconds_watched: i as f32, video_duration_seconds: 100.0 })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_kill_9_and_nothing_is_invented() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, url) = start(data.path());
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();

    let acked: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut client = FeedbackClient::new(channel.clone());
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0.. {
                let events = (0..BATCH).map(|i| event(t, b, i)).collect();
                match client.record(RecordRequest { events }).await {
                    Ok(r) => {
                        assert_eq!(r.into_inner().accepted as usize, BATCH);
                        acked.lock().unwrap().push((t, b));
                    }
                    Err(_) => return b, // the server is gone: batches sent = b + 1 at most
                }
            }
            unreachable!()
        }));
    }
    // Let a good number of batches through, then kill without warning.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(std::time::Instant::now() < deadline, "too few acks");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let mut sent_batches = Vec::new();
    for task in tasks {
        sent_batches.push(task.await.unwrap() + 1);
    }
    let acked: HashSet<(usize, usize)> = acked.lock().unwrap().iter().copied().collect();

    // Restart on the same folder: recovery runs, and appends continue.
    let (mut child, url) = start(data.path());
    let mut client = FeedbackClient::connect(url).await.unwrap();
    let after = client.record(RecordRequest { events: vec![event(99, 0, 0)] }).await.unwrap().into_inner();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(child.wait().unwrap().success());

    // Read everything back.
    let log_dir = data.path().join("feedback");
    let reader = watchnext_feedback::LogReader::open(&log_dir, 1).unwrap();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut expected_seq = 1;
    let mut last_index: HashMap<usize, (usize, usize)> = HashMap::new();
    for item in reader {
        let (seq, e) = item.expect("readable record");
        assert_eq!(seq, expected_seq, "dense sequence numbers");
        expected_seq += 1;
        assert!(seen.insert(e.request_id.clone(), seq).is_none(), "duplicate {}", e.request_id);
        // Parse "t{t}-b{b}-e{i}" and check it was really sent, in order per task.
        let parts: Vec<usize> = e.request_id.split('-').map(|p| p[1..].parse().expect("numeric id part")).collect();
        let (t, b, i) = (parts[0], parts[1], parts[2]);
        if t == 99 {
            continue;
        }
        assert!(t < TASKS && b < sent_batches[t] && i < BATCH, "invented event {}", e.request_id);
        assert_eq!(e, watchnext_core::event::Event::from_proto(&event(t, b, i), 0).unwrap(), "content intact");
        let next = match last_index.get(&t) {
            None => (0, 0),
            Some(&(pb, pi)) if pi + 1 == BATCH => (pb + 1, 0),
            Some(&(pb, pi)) => (pb, pi + 1),
        };
        assert_eq!((b, i), next, "task {t}'s events are in the order sent, without gaps");
        last_index.insert(t, (b, i));
    }
    for &(t, b) in &acked {
        for i in 0..BATCH {
            assert!(seen.contains_key(&format!("t{t}-b{b}-e{i}")), "acknowledged event t{t}-b{b}-e{i} lost");
        }
    }
    let after_seq = seen["t99-b0-e0"];
    assert_eq!(after_seq, after.last_sequence, "the restarted server's ack names the record's sequence");
    assert_eq!(after_seq, expected_seq - 1, "appends continue right after the recovered log");
    assert!(acked.len() >= 200);
}
