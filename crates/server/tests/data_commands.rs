//! The data commands as a user runs them: `world generate`, `import`,
//! `export`, on real folders.

use std::{path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_watchnext");

fn watchnext(data: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["--log-level", "warn"])
        .args(args)
        .output()
        .expect("run watchnext");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A toy world's data folder under `root` and a config file whose
/// `[trainer]` section asks for a small network.
fn toy_world_and_small_network(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = root.join("sim");
    let (ok, out) = watchnext(&data, &["world", "generate", "--preset", "toy", "--events", "30000"]);
    assert!(ok, "{out}");
    let config = root.join("watchnext.toml");
    std::fs::write(
        &config,
        "[trainer]\nembedding_dim = 4\nbottom = 16\nexperts = 3\nexpert_layers = [8, 8]\ntower_layers = [4]\n",
    )
    .expect("write the config file");
    (data, config)
}

fn segments(data: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(data.join("feedback"))
        .expect("log folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), std::fs::read(&p).expect("read")))
        .collect();
    files.sort();
    files
}

#[test]
fn world_generate_is_deterministic_refuses_a_used_folder_and_exports_training_rows() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = (root.path().join("a"), root.path().join("b"), root.path().join("c"));
    let generate = ["world", "generate", "--preset", "toy", "--events", "20000", "--seed", "7"];
    for dir in [&a, &b] {
        let (ok, out) = watchnext(dir, &generate);
        assert!(ok, "{out}");
        assert!(out.contains("20000 events"), "{out}");
    }
    assert!(a.join("catalog.jsonl").is_file() && a.join("world.json").is_file());
    assert_eq!(segments(&a), segments(&b), "same seed, byte-identical log");
    assert_eq!(std::fs::read(a.join("catalog.jsonl")).unwrap(), std::fs::read(b.join("catalog.jsonl")).unwrap());
    let (ok, _) = watchnext(&c, &["world", "generate", "--preset", "toy", "--events", "20000", "--seed", "8"]);
    assert!(ok);
    assert_ne!(segments(&a), segments(&c), "another seed, another log");

    let (ok, out) = watchnext(&a, &generate);
    assert!(!ok && out.contains("already holds 20000 events"), "{out}");

    let (ok, out) = watchnext(&a, &["export", "training-rows"]);
    assert!(ok, "{out}");
    let rows = watchnext_feedback::parquet::read_training_rows(a.join("exports/training_rows.parquet")).unwrap();
    assert!(!rows.is_empty());
    assert!(out.contains(&format!("{} training rows", rows.len())), "{out}");
    assert!(rows.iter().all(|r| r.position >= 1 && !r.request_id.is_empty()));
    assert!(rows.iter().any(|r| r.click) && rows.iter().any(|r| !r.click));

    let (ok, out) = watchnext(&a, &["export", "events", "--out", root.path().join("e.parquet").to_str().unwrap()]);
    assert!(ok && out.contains("exported 20000 events"), "{out}");
}

#[test]
fn import_movielens_from_the_shared_data_keeps_every_rating() {
    let ml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ml-latest-small");
    if !ml.is_dir() {
        eprintln!("skipping: {} is not present", ml.display());
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (ok, out) = watchnext(data.path(), &["import", "movielens", ml.to_str().unwrap()]);
    assert!(ok, "{out}");
    let events: Vec<_> =
        watchnext_feedback::LogReader::open(data.path().join("feedback"), 1).unwrap().map(|r| r.unwrap().1).collect();
    let ratings = events.iter().filter(|e| e.kind.name() == "rating").count();
    assert_eq!(ratings, 100_836);
    let users: std::collections::HashSet<_> = events.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users.len(), 610);
    let catalog = watchnext_core::catalog::Catalog::read(&data.path().join("catalog.jsonl")).unwrap();
    assert_eq!(catalog.len(), 9_742);
    assert!(events.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms), "time order");

    let (ok, out) = watchnext(data.path(), &["import", "obd", ml.to_str().unwrap()]);
    assert!(!ok && out.contains("already holds"), "{out}");
}

#[test]
fn a_bad_import_path_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out) = watchnext(data.path(), &["import", "movielens", "/no/such/folder"]);
    assert!(!ok);
    assert!(out.contains("/no/such/folder"), "{out}");
}

#[test]
fn train_then_eval_as_a_user_runs_them() {
    let root = tempfile::tempdir().unwrap();
    let (data, config) = toy_world_and_small_network(root.path());
    let config = config.to_str().unwrap();

    let (ok, out) = watchnext(&data, &["--config", config, "eval"]);
    assert!(!ok && out.contains("run `watchnext train` first"), "{out}");

    let (ok, out) = watchnext(&data, &["--config", config, "train", "--epochs", "1", "--version", "m1", "--quiet"]);
    assert!(ok, "{out}");
    assert!(out.contains("trained m1") && out.contains("click    test AUC"), "{out}");
    let model = data.join("models/m1");
    assert!(model.join("model.onnx").is_file() && model.join("manifest.json").is_file());

    let (ok, out) = watchnext(&data, &["--config", config, "eval", "--quiet"]);
    assert!(ok, "{out}");
    assert!(out.contains("m1 on") && out.contains("NDCG@10 vs true relevance"), "{out}");
    assert!(model.join("report/report.md").is_file());

    let (ok, out) = watchnext(&data, &["--config", config, "train", "--epochs", "0"]);
    assert!(!ok && out.contains("trainer.max_epochs"), "{out}");
    let (ok, out) = watchnext(&data, &["--config", config, "eval", "--model", root.path().to_str().unwrap()]);
    assert!(!ok && out.contains("manifest.json"), "{out}");
}

#[test]
fn train_sequence_then_eval_generators_as_a_user_runs_them() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("sim");
    let (ok, out) = watchnext(&data, &["world", "generate", "--preset", "toy", "--events", "30000"]);
    assert!(ok, "{out}");
    let config = root.path().join("watchnext.toml");
    std::fs::write(&config, "[sequence_trainer]\nhistory_len = 8\ndim = 16\nhidden = 32\nmax_epochs = 2\n").unwrap();
    let config = config.to_str().unwrap();

    let (ok, out) = watchnext(&data, &["--config", config, "train-sequence", "--version", "s1", "--quiet"]);
    assert!(ok, "{out}");
    assert!(out.contains("trained sequence model s1") && out.contains("HR@50"), "{out}");
    let model = data.join("sequence/s1");
    for file in ["encoder.onnx", "videos.txt", "video_embeddings.f32", "manifest.json"] {
        assert!(model.join(file).is_file(), "{file} missing");
    }
    // Each version is written once.
    let (ok, out) = watchnext(&data, &["--config", config, "train-sequence", "--version", "s1", "--quiet"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = watchnext(&data, &["--config", config, "train-sequence", "--epochs", "0"]);
    assert!(!ok && out.contains("sequence_trainer.max_epochs"), "{out}");

    let (ok, out) = watchnext(&data, &["--config", config, "eval", "generators", "--users", "200"]);
    assert!(ok, "{out}");
    for method in ["| topic |", "| cowatch |", "| sequence |", "| context |", "| popularity baseline |"] {
        assert!(out.contains(method), "{method} missing: {out}");
    }
}

#[test]
fn eval_pipeline_reports_the_final_list_beside_its_generators_and_baselines() {
    let root = tempfile::tempdir().unwrap();
    let (data, config) = toy_world_and_small_network(root.path());
    let config = config.to_str().unwrap();
    let report = root.path().join("report");
    let eval = |weights: &str| {
        watchnext(
            &data,
            &[
                "--config",
                config,
                "eval",
                "pipeline",
                "--protocol",
                "leave-last-out",
                "--cases",
                "60",
                "--bootstrap",
                "50",
                "--truth-cases",
                "20",
                "--epochs",
                "1",
                "--weights",
                weights,
                "--quiet",
                "--out",
                report.to_str().unwrap(),
            ],
        )
    };

    // A weight for a task the model does not have is refused, naming the tasks.
    let (ok, out) = eval("click=1,watch_time=0");
    assert!(!ok && out.contains("`watch_time` is not a task") && out.contains("\"watch\""), "{out}");

    let (ok, out) = eval("click=1,watch=0");
    assert!(ok, "{out}");
    assert!(out.contains("final list / ") && out.contains("popularity baseline"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    let protocol = &json[0];
    assert_eq!(protocol["protocol"], "leave-last-out");
    let cases = protocol["cases"].as_u64().unwrap();
    assert!(cases > 0 && cases <= 60, "{cases}");
    let methods: Vec<&str> =
        protocol["scores"]["methods"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    for expected in [
        "cowatch generator",
        "merged candidates (fused order)",
        "final list",
        "final list, weights click=1,watch=0",
        "popularity baseline",
        "item co-occurrence baseline",
    ] {
        assert!(methods.contains(&expected), "{expected} missing from {methods:?}");
    }
    for m in protocol["scores"]["methods"].as_array().unwrap() {
        for i in m["hit"].as_array().unwrap() {
            let (lo, mean, hi) = (i["low"].as_f64().unwrap(), i["mean"].as_f64().unwrap(), i["high"].as_f64().unwrap());
            assert!(lo <= mean && mean <= hi && (0.0..=1.0).contains(&mean), "{m}");
        }
        // The synthetic world grades every list against its truth.
        assert!(m["truth_ndcg"].is_array(), "{m}");
    }
    let union = protocol["union_recall"].as_f64().unwrap();
    for c in protocol["contributions"].as_array().unwrap() {
        let (found, alone) = (c["in_union"].as_f64().unwrap(), c["only_this"].as_f64().unwrap());
        assert!(alone <= found && found <= union + 1e-12, "{c}");
    }
    assert!(!protocol["ratios"].as_array().unwrap().is_empty());
    let lines = std::fs::read_to_string(report.join("leave-last-out/cases.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, cases);
    assert!(std::fs::read_to_string(report.join("report.md")).unwrap().contains("only this generator proposed it"));
}
