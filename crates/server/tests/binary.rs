//! The `watchnext` binary as an operator runs it: start `serve` on a free
//! loopback port, find the address on stdout, check health over gRPC, stop
//! it with SIGTERM and expect a clean exit; and a missing ONNX Runtime
//! library stops start-up with instructions.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_watchnext");

#[test]
fn serve_starts_reports_health_and_stops_cleanly_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn watchnext");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("announce line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no grpc= in {line:?}"))
        .to_owned();

    let health = Command::new(BIN).args(["health", "--addr", &format!("http://{addr}")]).output().expect("health");
    let report = String::from_utf8_lossy(&health.stdout);
    assert!(health.status.success(), "health failed: {report}");
    assert!(report.contains("process: SERVING"), "{report}");
    assert!(report.contains("watchnext.v1.Recommender"), "{report}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "graceful shutdown exits 0, got {status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signal handlers exist before the announce line, in every role: SIGHUP
/// and SIGTERM sent the moment it appears reload and drain instead of
/// killing the process (each would end it under its default action).
/// Several starts, since the race this guards against was a matter of
/// scheduling; a ranker, since a role without a recommender once had no
/// SIGHUP handler at all.
#[test]
fn signals_right_after_the_announce_line_are_handled_not_fatal() {
    for (attempt, role) in ["all", "ranker", "all", "cowatch", "all"].into_iter().enumerate() {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(data.path())
            .args(["serve", "--role", role, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--log-level", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchnext");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("announce line");
        assert!(line.starts_with("watchnext listening"), "{line:?}");
        let pid = child.id().to_string();
        for signal in ["-HUP", "-TERM"] {
            assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "attempt {attempt} ({role}): did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "attempt {attempt} ({role}): a signal took its default action: {status}");
    }
}

#[test]
fn a_missing_onnx_runtime_library_says_how_to_fix_it() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/setup.sh") && err.contains("/nonexistent/libonnxruntime.so"), "{err}");
}

#[test]
fn a_bad_config_value_names_the_key() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "not-an-address"])
        .env("WATCHNEXT__SERVER__METRICS_LISTEN", "")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");

    let out =
        Command::new(BIN).args(["serve"]).env("WATCHNEXT__ONNX__EXECUTION_PROVIDER", "tpu").output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("execution_provider") && err.contains("tpu"), "{err}");
}

#[test]
fn sighup_reloads_the_combiner_weights_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watchnext.toml");
    std::fs::write(&config, "[recommender.combiner.weights]\nclick = 1.0\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--log-level", "info"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watchnext");
    let mut announce = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut announce).expect("announce line");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let pid = child.id().to_string();
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line containing {needle:?}");
    };
    std::fs::write(&config, "[recommender.combiner.weights]\nclick = 2.0\nwatch = 0.5\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    wait_for("combiner weights reloaded");
    // A bad value is refused, naming the key; the server keeps running.
    std::fs::write(&config, "[recommender.combiner.weights]\nclick = -1.0\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let line = wait_for("was not applied");
    assert!(line.contains("combiner.weights.click"), "{line}");
    assert!(child.try_wait().expect("wait").is_none(), "still serving");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert!(child.wait().expect("wait").success());
}
