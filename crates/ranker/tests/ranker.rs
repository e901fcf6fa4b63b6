//! The ranker on models the trainer wrote for a toy world: every candidate
//! scored in one run with the shared features, gate utilisation recorded,
//! hot reload with warm-up, rollback and pinned versions, broken and
//! foreign-schema models refused while the active one keeps serving, and
//! ranking under concurrent reloads without a failed request.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use watchnext_core::{
    Device, History, Query, RequestContext, RequestId, UserId, VideoId,
    catalog::Catalog,
    event::{Source, Vote},
    features::{DENSE_LEN, FeatureConfig, FeatureSchema, SPARSE_LEN},
    request::RankCandidate,
};
use watchnext_ranker::{RankError, Ranker, RankerSettings};
use watchnext_trainer::experiments;
use watchnext_world::WorldConfig;

fn small_config(seed: u64) -> watchnext_trainer::config::TrainerConfig {
    watchnext_testkit::small_trainer_config(seed)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    models: PathBuf,
    catalog: Arc<Catalog>,
}

fn fixture(versions: &[&str]) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    experiments::world_data(&data, &WorldConfig::toy(), 20_000).expect("toy world");
    let models = data.join("models");
    for (i, v) in versions.iter().enumerate() {
        watchnext_testkit::train_ranker(&data, v, i as u64 + 1).expect("trains");
    }
    let catalog = Arc::new(Catalog::read(&data.join("catalog.jsonl")).expect("catalogue"));
    Fixture { _tmp: tmp, data, models, catalog }
}

fn ranker(f: &Fixture) -> Ranker {
    let runtime = watchnext_onnx::OnnxRuntime::init(&watchnext_core::config::OnnxConfig::default())
        .expect("ONNX Runtime (run scripts/setup.sh)");
    let schema = FeatureSchema::new(small_config(1).features).expect("schema");
    let settings = RankerSettings { warmup_rows: 32, ..RankerSettings::default() };
    let r = Ranker::new(settings, schema, runtime, watchnext_onnx::SessionOptions::default()).expect("ranker");
    r.update_catalog(&f.catalog);
    r
}

fn query(catalog: &Catalog) -> Query {
    Query {
        request_id: RequestId::parse("r", "r1").expect("id"),
        user: UserId::parse("u", "u7").expect("id"),
        query_video: VideoId::parse("v", &catalog.videos()[3].id).expect("id"),
        device: Device::Tv,
        history: History::default(),
        context: RequestContext { time_ms: 1_700_000_000_000, ..RequestContext::default() },
    }
}

fn candidates(catalog: &Catalog, n: usize) -> Vec<RankCandidate> {
    catalog
        .videos()
        .iter()
        .skip(10)
        .take(n)
        .enumerate()
        .map(|(i, v)| RankCandidate {
            video: VideoId::parse("v", &v.id).expect("id"),
            sources: if i % 2 == 0 {
                vec![Vote::new(Source::Topic, 0.5, 1)]
            } else {
                vec![Vote::new(Source::Cowatch, 0.1, 2), Vote::new(Source::Sequence, 0.9, 3)]
            },
        })
        .collect()
}

#[test]
fn scores_every_candidate_in_one_run_with_the_shared_features() {
    let f = fixture(&["m1"]);
    let r = ranker(&f);
    let q = query(&f.catalog);
    let cands = candidates(&f.catalog, 300);
    assert!(matches!(r.rank(&q, &cands, None), Err(RankError::NoModel)));
    let report = r.load_dir(&f.models.join("m1")).expect("loads");
    assert_eq!((report.version.as_str(), report.previous), ("m1", None));

    let scored = r.rank(&q, &cands, None).expect("ranks");
    assert_eq!(scored.model_version, "m1");
    assert_eq!(scored.tasks, ["click", "watch", "like", "dismiss", "rating"]);
    assert_eq!(scored.predictions.len(), 300 * 5);
    assert_eq!(scored.dense.len(), 300 * DENSE_LEN);
    for i in 0..300 {
        let row = scored.row(i);
        for (t, &p) in row.iter().enumerate() {
            assert!(p.is_finite(), "candidate {i} task {t}");
        }
        // click, like and dismiss are probabilities.
        for t in [0, 2, 3] {
            assert!((0.0..=1.0).contains(&row[t]), "candidate {i} task {t}: {}", row[t]);
        }
    }
    // The logged features are the ones the schema code builds, and they
    // differ between candidates (the model sees the candidate).
    let (dense, sparse) = r.features(&q, &cands);
    let seventh = scored.feature_vector(7);
    assert_eq!(seventh.dense, dense[7 * DENSE_LEN..8 * DENSE_LEN]);
    assert_eq!(seventh.sparse, sparse[7 * SPARSE_LEN..8 * SPARSE_LEN]);
    assert_eq!(seventh.schema_hash, r.schema().hash());
    assert_ne!(scored.row(0), scored.row(1));

    // Scoring a candidate alone gives what it got in the batch.
    let alone = r.rank(&q, &cands[5..6], None).expect("ranks one");
    for (a, b) in alone.row(0).iter().zip(scored.row(5)) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }

    // Gate utilisation: every task's mean weights sum to 1 over its experts.
    let model = r.active().expect("active");
    let (utilisation, rows) = model.gate_utilisation();
    assert_eq!(rows, 301);
    assert_eq!(utilisation.len(), 5);
    for task in &utilisation {
        assert_eq!(task.len(), 3);
        assert!((task.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{task:?}");
    }
}

fn break_model(dir: &Path) {
    std::fs::write(dir.join("model.onnx"), b"definitely not onnx").expect("write");
}

#[test]
fn hot_reload_keeps_a_rollback_target_and_refuses_broken_or_foreign_models() {
    let f = fixture(&["m1", "m2"]);
    let r = ranker(&f);
    let q = query(&f.catalog);
    let cands = candidates(&f.catalog, 20);
    // The newest by manifest time is m2.
    assert_eq!(r.reload_newest(&f.models).expect("reload").expect("loaded").version, "m2");
    assert!(r.reload_newest(&f.models).expect("reload").is_none(), "m2 is already active");
    let report = r.load_dir(&f.models.join("m1")).expect("m1");
    assert_eq!(report.previous.as_deref(), Some("m2"));
    assert_eq!(r.rank(&q, &cands, None).expect("ranks").model_version, "m1");
    // A pinned version (an experiment arm) is served while loaded.
    assert_eq!(r.rank(&q, &cands, Some("m2")).expect("pinned").model_version, "m2");
    let err = r.rank(&q, &cands, Some("nope")).expect_err("unknown version");
    assert!(matches!(err, RankError::UnknownVersion(..)) && err.to_string().contains("m1"), "{err}");

    assert_eq!(r.rollback().expect("rollback"), ("m2".to_owned(), "m1".to_owned()));
    assert_eq!(r.rank(&q, &cands, None).expect("ranks").model_version, "m2");

    // A broken graph: refused, m2 keeps serving, the watcher does not retry it.
    let broken = f.models.join("m3");
    copy_dir(&f.models.join("m1"), &broken);
    let mut manifest = watchnext_core::model::ModelManifest::read(&broken).expect("manifest");
    manifest.model_version = "m3".into();
    manifest.created_ms += 60_000;
    manifest.write(&broken).expect("write manifest");
    break_model(&broken);
    let err = r.reload_newest(&f.models).expect_err("broken model");
    assert!(err.to_string().contains("m3"), "{err}");
    assert_eq!(r.active().expect("active").version, "m2");
    assert!(r.reload_newest(&f.models).expect("skips the rejected").is_none());

    // A model of another feature schema: refused with both hashes named.
    let foreign = FeatureSchema::new(FeatureConfig { user_buckets: 77, ..small_config(1).features }).expect("schema");
    let mut manifest = watchnext_core::model::ModelManifest::read(&f.models.join("m1")).expect("manifest");
    manifest.schema = foreign.describe();
    let other = f.models.join("m4");
    copy_dir(&f.models.join("m1"), &other);
    manifest.write(&other).expect("write");
    let err = r.load_dir(&other).expect_err("foreign schema").to_string();
    assert!(err.contains(foreign.hash()) && err.contains(r.schema().hash()), "{err}");
    assert_eq!(r.active().expect("active").version, "m2");
    let _ = &f.data;
}

/// A copy of `from` named `version`, its manifest dated `created_ms`.
fn copy_as(from: &Path, to: &Path, version: &str, created_ms: i64) {
    copy_dir(from, to);
    let mut manifest = watchnext_core::model::ModelManifest::read(to).expect("manifest");
    manifest.model_version = version.into();
    manifest.created_ms = created_ms;
    manifest.write(to).expect("write manifest");
}

#[test]
fn a_refused_newest_model_hides_no_valid_one_and_a_rollback_survives_the_watcher() {
    let f = fixture(&["m1", "m2"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // A broken directory dated a year ahead, and a valid graph dated two
    // days ahead of the clock: both refused, neither hides m2.
    copy_as(&f.models.join("m1"), &f.models.join("future"), "future", now + 365 * 86_400_000);
    break_model(&f.models.join("future"));
    copy_as(&f.models.join("m1"), &f.models.join("ahead"), "ahead", now + 2 * 86_400_000);
    let r = ranker(&f);
    assert_eq!(r.reload_newest(&f.models).expect("an older valid model loads").expect("loaded").version, "m2");
    // So does a restart.
    let restarted = ranker(&f);
    assert_eq!(restarted.reload_newest(&f.models).expect("reload").expect("loaded").version, "m2");
    let err = restarted.load_dir(&f.models.join("ahead")).expect_err("dated in the future").to_string();
    assert!(err.contains("ahead of this machine's clock"), "{err}");

    // An operator goes back to m1: the watcher's next poll leaves it there.
    r.load_dir(&f.models.join("m1")).expect("m1");
    assert!(r.reload_newest(&f.models).expect("poll").is_none());
    assert_eq!(r.active().expect("active").version, "m1");
    assert_eq!(r.rollback().expect("rollback").0, "m2");
    assert_eq!(r.rollback().expect("rollback").0, "m1");
    assert!(r.reload_newest(&f.models).expect("poll").is_none());
    assert_eq!(r.active().expect("active").version, "m1", "the rollback stays");
    // A model newer than any loaded before is picked up; ReloadModel without
    // a directory loads the newest valid one whatever was loaded before.
    let m2_created = watchnext_core::model::ModelManifest::read(&f.models.join("m2")).expect("manifest").created_ms;
    copy_as(&f.models.join("m1"), &f.models.join("m3"), "m3", m2_created + 60_000);
    assert_eq!(r.reload_newest(&f.models).expect("poll").expect("m3").version, "m3");
    r.load_dir(&f.models.join("m1")).expect("m1");
    assert_eq!(r.load_newest(&f.models, None).expect("reload").expect("newest").version, "m3");

    // A caller that gave up before the swap changes nothing; one whose change
    // took effect can no longer withdraw it.
    let gone = watchnext_ranker::Intent::new();
    assert!(gone.withdraw());
    let err = r.load_dir_for(&f.models.join("m2"), Some(&gone)).expect_err("withdrawn");
    assert!(matches!(err, RankError::Withdrawn), "{err}");
    assert!(matches!(r.rollback_for(Some(&gone)), Err(RankError::Withdrawn)));
    assert_eq!(r.active().expect("active").version, "m3", "nothing changed");
    let wanted = watchnext_ranker::Intent::new();
    assert_eq!(r.rollback_for(Some(&wanted)).expect("rollback").0, "m1");
    assert!(!wanted.withdraw(), "already took effect");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn ranking_under_concurrent_reloads_fails_no_request() {
    let f = fixture(&["m1", "m2"]);
    let broken = f.models.join("broken");
    copy_dir(&f.models.join("m1"), &broken);
    break_model(&broken);
    let r = Arc::new(ranker(&f));
    r.load_dir(&f.models.join("m1")).expect("m1");
    let q = query(&f.catalog);
    let cands = candidates(&f.catalog, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (r, q, cands, stop, done) = (r.clone(), q.clone(), cands.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut versions = std::collections::HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let scored = r.rank(&q, &cands, None).expect("no request fails during reloads");
                    assert_eq!(scored.predictions.len(), 200 * 5);
                    versions.insert(scored.model_version);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                versions
            })
        })
        .collect();
    for round in 0..6 {
        let dir = match round % 3 {
            0 => f.models.join("m2"),
            1 => broken.clone(),
            _ => f.models.join("m1"),
        };
        let result = r.load_dir(&dir);
        assert_eq!(result.is_ok(), round % 3 != 1, "round {round}: {result:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        seen.extend(w.join().expect("worker"));
    }
    assert!(done.load(Ordering::Relaxed) > 0);
    assert!(seen.iter().all(|v| v == "m1" || v == "m2"), "{seen:?}");
}
