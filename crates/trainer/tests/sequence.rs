//! The sequence model: it learns next-watch structure, its ONNX encoder
//! computes what the trainer computes, and the sequence generator serves an
//! exported model, falls back to the feedback stream's history, refuses a
//! broken model while the old one keeps serving, and swaps models under
//! load without losing a request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use watchnext_core::{
    Device, History, Query, RequestContext, RequestId, UserId, VideoId,
    event::{Event, EventKind},
    generator::Generator,
    request::HistoryEntry,
};
use watchnext_sequence::{
    SequenceConfig, SequenceGenerator,
    model::{ENCODER_FILE, HISTORY_INPUT, SequenceModel, USER_OUTPUT},
};
use watchnext_trainer::sequence::{
    SequenceNet, SequenceTrainerConfig, Sequences, encoder_graph, hit_rates, train_sequence, write_sequence_model,
};

fn runtime() -> Arc<watchnext_onnx::OnnxRuntime> {
    watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())
        .expect("ONNX Runtime (run scripts/setup.sh)")
}

fn watch(t: i64, user: &str, video: u32) -> Event {
    Event {
        timestamp_ms: t,
        request_id: String::new(),
        user: UserId::parse("u", user).expect("test setup"),
        video: VideoId::parse("v", &format!("v{video:03}")).expect("test setup"),
        device: Device::Phone,
        kind: EventKind::Watch { seconds_watched: 10.0, video_duration_seconds: 20.0 },
    }
}

/// `users` users, each walking a chain: after video v comes v + 1 (mod
/// `videos`) with probability 0.9, otherwise a random video.
fn chain_events(videos: u32, users: usize, length: usize, seed: u64) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut t = 0;
    for u in 0..users {
        let mut v = rng.random_range(0..videos);
        for _ in 0..length {
            t += 1;
            events.push(watch(t, &format!("user{u:04}"), v));
            v = if rng.random::<f32>() < 0.9 { (v + 1) % videos } else { rng.random_range(0..videos) };
        }
    }
    events
}

fn small_config() -> SequenceTrainerConfig {
    SequenceTrainerConfig {
        history_len: 8,
        dim: 16,
        attention_dim: 16,
        hidden: 32,
        sampled_negatives: 64,
        batch_size: 128,
        learning_rate: 5e-3,
        max_epochs: 8,
        patience: 2,
        validation_users: 100,
        validation_k: 10,
        ..SequenceTrainerConfig::default()
    }
}

fn trained(seed: u64) -> (SequenceNet, Sequences, watchnext_trainer::sequence::SequenceReport) {
    let events = chain_events(200, 400, 25, 1);
    let config = SequenceTrainerConfig { seed, ..small_config() };
    let data = Sequences::from_events(&events, &config);
    let (net, report) = train_sequence(&data, &config, false).expect("test setup");
    (net, data, report)
}

#[test]
fn learns_which_video_comes_next() {
    let (net, data, report) = trained(7);
    assert_eq!(data.videos.len(), 200);
    assert_eq!(data.validation.len(), 100);
    // An untrained network is near chance (10 of 200 → 0.05).
    let fresh = SequenceNet::new(&small_config(), data.videos.len()).expect("test setup");
    let before = hit_rates(&fresh, &data, &data.validation, &[10]).expect("test setup")[0];
    let after = hit_rates(&net, &data, &data.validation, &[10]).expect("test setup")[0];
    // The successor follows 90% of the time; a model that learnt the chain
    // finds it in its top 10 for nearly all of those.
    assert!(before < 0.2, "untrained HR@10 {before}");
    assert!(after > 0.8, "trained HR@10 {after}; report {report:?}");
    assert!(
        report.epochs.first().expect("test setup").train_loss > report.epochs.last().expect("test setup").train_loss
    );
    assert!(report.best_epoch >= 1);
}

#[test]
fn the_onnx_encoder_matches_the_training_encoder() {
    let config = small_config();
    let net = SequenceNet::new(&config, 50).expect("test setup");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Full, short (padded) and one-item histories, and ids at both ends.
    let mut histories: Vec<Vec<u32>> = (0..30)
        .map(|i| {
            let len = 1 + i % (config.history_len + 3);
            (0..len).map(|_| rng.random_range(0..50)).collect()
        })
        .collect();
    histories.push(vec![0]);
    histories.push(vec![49; 20]);
    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
    let expected = net.user_vectors(&refs).expect("test setup");

    let bytes = encoder_graph(&net, "parity").expect("test setup");
    let mut loaded = runtime().load("encoder", &bytes, &watchnext_onnx::SessionOptions::default()).expect("test setup");
    let l = config.history_len;
    let mut input = Vec::new();
    for h in &histories {
        let h = &h[h.len().saturating_sub(l)..];
        input.extend(std::iter::repeat_n(0i64, l - h.len()));
        input.extend(h.iter().map(|&r| i64::from(r) + 1));
    }
    let tensor = ort::value::Tensor::from_array(([histories.len(), l], input)).expect("test setup");
    let outputs = loaded.session.run(ort::inputs![HISTORY_INPUT => tensor]).expect("test setup");
    let (shape, got) = outputs[USER_OUTPUT].try_extract_tensor::<f32>().expect("test setup");
    assert_eq!(shape.to_vec(), vec![histories.len() as i64, config.dim as i64]);
    assert_eq!(got.len(), expected.len());
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert!((a - b).abs() <= 1e-5, "value {i}: onnx {a} vs candle {b}");
    }
    for row in got.chunks(config.dim) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "user vector norm {norm}");
    }
}

fn query(user: &str, video: u32, history: &[u32]) -> Query {
    Query {
        request_id: RequestId::parse("r", "r1").expect("test setup"),
        user: UserId::parse("u", user).expect("test setup"),
        query_video: VideoId::parse("v", &format!("v{video:03}")).expect("test setup"),
        device: Device::Tv,
        history: History(
            history
                .iter()
                .map(|&v| HistoryEntry {
                    video: VideoId::parse("v", &format!("v{v:03}")).expect("test setup"),
                    watched_at_ms: 0,
                    seconds_watched: 5.0,
                })
                .collect(),
        ),
        context: RequestContext::default(),
    }
}

fn generator(index: &str) -> SequenceGenerator {
    let config = SequenceConfig { index: index.into(), sessions: 2, ..SequenceConfig::default() };
    SequenceGenerator::new(config, runtime(), watchnext_onnx::SessionOptions::default()).expect("test setup")
}

#[test]
fn the_generator_serves_an_exported_model_and_learns_histories_from_the_stream() {
    let (net, data, report) = trained(7);
    let root = tempfile::tempdir().expect("test setup");
    let dir = root.path().join("seq-a");
    write_sequence_model(&dir, &net, &data, "seq-a", &report).expect("test setup");
    let g = generator("flat_hnsw");
    assert!(g.ready().is_err());
    let cold = g.generate(&query("x", 10, &[8, 9]), 10);
    assert!(cold.candidates.is_empty() && cold.note.contains("train-sequence"), "{cold:?}");

    let installed = g.reload_newest(root.path()).expect("test setup").expect("a model to load");
    assert_eq!(installed.version, "seq-a");
    assert!(g.ready().is_ok());
    assert!(g.reload_newest(root.path()).expect("test setup").is_none(), "the same version is not reloaded");

    // A newer directory with a broken encoder: refused once, then skipped;
    // a restarted generator falls back to seq-a instead of serving nothing.
    let broken = root.path().join("seq-b");
    std::fs::create_dir_all(&broken).expect("test setup");
    for entry in std::fs::read_dir(&dir).expect("test setup").flatten() {
        std::fs::copy(entry.path(), broken.join(entry.file_name())).expect("test setup");
    }
    let manifest_path = broken.join(watchnext_sequence::model::MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("test setup")).expect("test setup");
    manifest["version"] = "seq-b".into();
    manifest["created_ms"] = (manifest["created_ms"].as_i64().expect("test setup") + 60_000).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("test setup")).expect("test setup");
    std::fs::write(broken.join(watchnext_sequence::model::ENCODER_FILE), b"not onnx").expect("test setup");
    assert!(g.reload_newest(root.path()).is_err(), "the broken newer model is refused");
    assert_eq!(g.current().expect("serving").version, "seq-a");
    assert!(g.reload_newest(root.path()).expect("skips the refused").is_none());
    let restarted = generator("flat_hnsw");
    assert_eq!(restarted.reload_newest(root.path()).expect("falls back").expect("a model").version, "seq-a");

    // Watching 8, 9, then 10: the chain continues with 11.
    let out = g.generate(&query("x", 10, &[8, 9]), 10);
    assert_eq!(out.version, "seq-a");
    let names: Vec<&str> = out.candidates.iter().map(|c| c.video.as_str()).collect();
    assert!(names.contains(&"v011"), "{names:?}");
    assert!(!names.iter().any(|n| ["v008", "v009", "v010"].contains(n)), "history proposed: {names:?}");
    assert!(out.candidates.windows(2).all(|w| w[0].score >= w[1].score));

    // No history in the request: the user's watches from the stream.
    let none = g.generate(&query("streamer", 999, &[]), 10);
    assert!(none.candidates.is_empty() && none.note.contains("cold user"), "{none:?}");
    g.observe(&[watch(1, "streamer", 40), watch(2, "streamer", 41)]);
    let from_stream = g.generate(&query("streamer", 42, &[]), 10);
    let names: Vec<&str> = from_stream.candidates.iter().map(|c| c.video.as_str()).collect();
    assert!(names.contains(&"v043"), "{names:?}");
    assert!(!names.contains(&"v041"));

    // An unknown query video still gets a list from the history, with a note.
    let unknown = g.generate(&query("x", 999, &[20, 21]), 5);
    assert!(!unknown.candidates.is_empty() && unknown.note.contains("unknown"), "{unknown:?}");
}

#[test]
fn a_broken_model_is_refused_and_the_old_one_keeps_serving() {
    let (net, data, report) = trained(7);
    let root = tempfile::tempdir().expect("test setup");
    write_sequence_model(&root.path().join("good"), &net, &data, "good", &report).expect("test setup");
    let g = generator("exact");
    g.load_dir(&root.path().join("good")).expect("test setup");

    let bad = root.path().join("bad");
    write_sequence_model(&bad, &net, &data, "bad", &report).expect("test setup");
    std::fs::write(bad.join(ENCODER_FILE), b"not an onnx graph").expect("test setup");
    let err = g.load_dir(&bad).unwrap_err().to_string();
    assert!(err.contains("bad"), "{err}");
    assert_eq!(g.current().expect("test setup").version, "good");
    assert_eq!(g.generate(&query("x", 10, &[9]), 5).version, "good");

    // An encoder whose vectors do not match the manifest is refused at warm-up.
    let wrong = root.path().join("wrong");
    write_sequence_model(&wrong, &net, &data, "wrong", &report).expect("test setup");
    let other =
        SequenceNet::new(&SequenceTrainerConfig { dim: 8, ..small_config() }, data.videos.len()).expect("test setup");
    std::fs::write(wrong.join(ENCODER_FILE), encoder_graph(&other, "wrong").expect("test setup")).expect("test setup");
    let err = g.load_dir(&wrong).unwrap_err().to_string();
    assert!(err.contains("shape") || err.contains("values"), "{err}");
    assert_eq!(g.current().expect("test setup").version, "good");
}

#[test]
fn swapping_models_under_load_loses_no_request() {
    let (net_a, data, report) = trained(7);
    let (net_b, _, _) = trained(8);
    let root = tempfile::tempdir().expect("test setup");
    write_sequence_model(&root.path().join("a"), &net_a, &data, "a", &report).expect("test setup");
    write_sequence_model(&root.path().join("b"), &net_b, &data, "b", &report).expect("test setup");
    let model_a = SequenceModel::read(&root.path().join("a")).expect("test setup");
    let model_b = SequenceModel::read(&root.path().join("b")).expect("test setup");
    let g = Arc::new(generator("hnsw_rs"));
    g.install(model_a.clone()).expect("test setup");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (g, stop, answered) = (g.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut versions = std::collections::HashSet::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let v = (w * 50 + i) % 200;
                    let out = g.generate(&query("load", v, &[(v + 198) % 200, (v + 199) % 200]), 10);
                    assert_eq!(out.candidates.len(), 10, "an answer lost during a swap: {out:?}");
                    assert!(out.note.is_empty(), "{}", out.note);
                    versions.insert(out.version);
                    answered.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                versions
            })
        })
        .collect();
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(30));
        g.install(if round % 2 == 0 { model_b.clone() } else { model_a.clone() }).expect("test setup");
    }
    std::thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        seen.extend(w.join().expect("a worker panicked"));
    }
    assert!(answered.load(Ordering::Relaxed) > 100);
    assert_eq!(seen, ["a".to_owned(), "b".to_owned()].into_iter().collect(), "both models served");
    assert_eq!(g.current().expect("test setup").version, "a");
}
