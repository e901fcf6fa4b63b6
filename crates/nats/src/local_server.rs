//! A `nats-server` child process with JetStream on a loopback port and a
//! store in a temporary folder: for tests and the multi-process harness,
//! never for production.
//!
//! The binary is `$WATCHNEXT_NATS_SERVER`, else `nats-server` on `PATH`,
//! else `/usr/sbin/nats-server`. When none exists, [`LocalNats::start`]
//! returns `None` — unless `WATCHNEXT_REQUIRE_NATS=1` (CI sets it), where
//! it panics, so a machine without the broker cannot pass by skipping.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `nats-server`; killed when dropped.
#[derive(Debug)]
pub struct LocalNats {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
    binary: PathBuf,
}

/// The `nats-server` binary to run, if any.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WATCHNEXT_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
}

impl LocalNats {
    /// Starts a server, or `None` (after saying why on stderr) when there
    /// is no binary and `WATCHNEXT_REQUIRE_NATS` is not `1`.
    pub fn start() -> Option<Self> {
        let Some(binary) = binary() else {
            assert!(
                std::env::var("WATCHNEXT_REQUIRE_NATS").as_deref() != Ok("1"),
                "WATCHNEXT_REQUIRE_NATS=1 but no nats-server: install it (apt install nats-server) or set \
                 WATCHNEXT_NATS_SERVER"
            );
            eprintln!("skipped: no nats-server on this machine (apt install nats-server, or WATCHNEXT_NATS_SERVER)");
            return None;
        };
        let store = tempfile::tempdir().expect("a temporary folder for the JetStream store");
        let port = free_port();
        let child = spawn(&binary, port, &store);
        let server = Self { child, port, store, binary };
        server.wait_ready();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would) and leaves its store in place.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.binary, self.port, &self.store);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {addr} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &PathBuf, port: u16, store: &tempfile::TempDir) -> Child {
    Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}
