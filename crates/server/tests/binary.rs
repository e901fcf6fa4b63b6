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
