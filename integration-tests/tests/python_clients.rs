//! Clients in another language: Python (grpcio, from `.venv`, which
//! `scripts/setup.sh` creates) talks to a real server over loopback.

use std::{path::PathBuf, process::Command};

use watchnext_testkit::TestServer;

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(venv.exists(), "{} is missing: run scripts/setup.sh (the test command does)", venv.display());
    venv
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_reflection_v1alpha_drives_the_api_without_protos() {
    let server = TestServer::all_in_one().await.unwrap();
    let addr = server.addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg(script("reflection_check.py")).arg(addr).output().expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("INVALID_ARGUMENT"), "{stdout}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_recommends_and_records_feedback() {
    let server = TestServer::start_with_data(
        |dir| {
            watchnext_testkit::prepare_world(dir, 3, 40_000)?;
            watchnext_testkit::train_ranker(dir, "py-model", 1)?;
            Ok(())
        },
        |_| {},
    )
    .await
    .unwrap();
    let addr = server.addr().to_string();
    // The generators replay the log in the background: give them a moment.
    let mut last = String::new();
    for _ in 0..20 {
        let addr = addr.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(python())
                .arg(script("example_client.py"))
                .args([addr.as_str(), "u12", "v3"])
                .output()
                .expect("run python")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        last = format!("stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            assert!(stdout.contains("model py-model"), "{last}");
            assert!(stdout.contains("2 events durable") && stdout.contains("INVALID_ARGUMENT"), "{last}");
            server.stop().await.unwrap();
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    panic!("the Python client never succeeded; last run:\n{last}");
}
