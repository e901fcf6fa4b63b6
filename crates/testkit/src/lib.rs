//! Test helpers shared by every crate's integration tests: start a real
//! watchnext server on `127.0.0.1:0` (a free loopback port), in this
//! process, with its own temporary data folder, and talk to it with the real
//! generated gRPC clients. Network tests only ever target loopback.

use std::{net::SocketAddr, path::Path};

use tonic::{Request, transport::Channel};
use watchnext_core::Config;
use watchnext_proto::v1::{
    admin_client::AdminClient, candidate_generator_client::CandidateGeneratorClient, feedback_client::FeedbackClient,
    ranker_client::RankerClient, recommender_client::RecommenderClient,
};
use watchnext_server::app::{self, Running};

/// The admin token test servers use.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A configuration for tests: loopback ports chosen by the OS, a data folder
/// under `data_dir`, a known admin token, quiet logs.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.metrics_listen = "127.0.0.1:0".into();
    config.server.shutdown_grace_seconds = 5;
    config.admin.token = ADMIN_TOKEN.into();
    config.data.dir = data_dir.to_path_buf();
    config.log.level = "warn".into();
    config
}

/// A running in-process server and its temporary data folder.
#[derive(Debug)]
pub struct TestServer {
    pub running: Running,
    pub channel: Channel,
    _data: tempfile::TempDir,
}

/// Fills `dir` with a synthetic world (the `toy` preset: 1,000 videos, 500
/// users) and `events` events of its popularity logging policy, as
/// `watchnext world generate` does, and returns the world (its ground truth).
pub fn prepare_world(dir: &Path, seed: u64, events: u64) -> anyhow::Result<watchnext_world::World> {
    let data = watchnext_core::datadir::DataDir::new(dir);
    let config = watchnext_world::WorldConfig::toy().with_seed(seed);
    let world = watchnext_world::World::build(&config)?;
    config.write(&data.world_config())?;
    world.catalog().write(&data.catalog())?;
    let (log, _) = watchnext_feedback::FeedbackLog::open(data.feedback_log(), Default::default())?;
    let mut sink = log.bulk_writer();
    watchnext_world::generate_logs(&world, watchnext_world::LoggingPolicy::default(), events, &mut sink, false)?;
    sink.finish()?;
    Ok(world)
}

/// A small ranking network for tests (the default feature schema, which is
/// what a server without a `[trainer]` section builds features with).
pub fn small_trainer_config(seed: u64) -> watchnext_trainer::config::TrainerConfig {
    watchnext_trainer::config::TrainerConfig {
        embedding_dim: 4,
        bottom: 16,
        experts: 3,
        expert_layers: vec![8, 8],
        tower_layers: vec![4],
        max_epochs: 1,
        batch_size: 512,
        seed,
        ..Default::default()
    }
}

/// Trains a small ranking model on the logged impressions in `dir` (quick:
/// no replay of the serving pipeline, whose own tests live with the trainer
/// and the `train` command) and writes it to `dir/models/<version>`, as
/// `watchnext train` does; returns its directory.
pub fn train_ranker(dir: &Path, version: &str, seed: u64) -> anyhow::Result<std::path::PathBuf> {
    let out = watchnext_core::datadir::DataDir::new(dir).models().join(version);
    let config = watchnext_trainer::config::TrainerConfig {
        examples: watchnext_trainer::config::ExampleSource::Logged,
        ..small_trainer_config(seed)
    };
    let run = watchnext_trainer::pipeline::TrainRun {
        config,
        data_dir: dir.to_owned(),
        out_dir: out.clone(),
        model_version: version.to_owned(),
        progress: false,
        checkpoint_dir: None,
        resume: false,
    };
    watchnext_trainer::pipeline::run_training(&run, &watchnext_trainer::pipeline::LoggedExamples { history_len: 50 })?;
    Ok(out)
}

impl TestServer {
    /// Starts a server with [`test_config`] adjusted by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_with_data(|_| Ok(()), adjust).await
    }

    /// Like [`TestServer::start`], after `prepare` filled the data folder.
    pub async fn start_with_data(
        prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        prepare(data.path())?;
        let mut config = test_config(data.path());
        adjust(&mut config);
        watchnext_server::telemetry::init_logging(&config.log);
        let running = app::start(config).await?;
        let channel = Channel::from_shared(format!("http://{}", running.addr))?.connect().await?;
        Ok(Self { running, channel, _data: data })
    }

    /// Like [`TestServer::start`] for a server whose listener speaks TLS
    /// (`config.tls`): [`TestServer::channel`] is then a plaintext channel
    /// that is never connected; tests make their own TLS channels.
    pub async fn start_tls(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut config = test_config(data.path());
        adjust(&mut config);
        watchnext_server::telemetry::init_logging(&config.log);
        let running = app::start(config).await?;
        let channel = Channel::from_shared(format!("http://{}", running.addr))?.connect_lazy();
        Ok(Self { running, channel, _data: data })
    }

    /// The all-in-one embedded default.
    pub async fn all_in_one() -> anyhow::Result<Self> {
        Self::start(|_| {}).await
    }

    /// The server's data folder (a temporary directory).
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running.metrics_addr
    }

    pub fn recommender(&self) -> RecommenderClient<Channel> {
        RecommenderClient::new(self.channel.clone())
    }

    pub fn generator(&self) -> CandidateGeneratorClient<Channel> {
        CandidateGeneratorClient::new(self.channel.clone())
    }

    pub fn ranker(&self) -> RankerClient<Channel> {
        RankerClient::new(self.channel.clone())
    }

    pub fn feedback(&self) -> FeedbackClient<Channel> {
        FeedbackClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// Stops the server gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.shutdown().await
    }
}

/// Wraps `message` in a request carrying the test admin token.
pub fn with_admin_token<T>(message: T) -> Request<T> {
    with_bearer(message, ADMIN_TOKEN)
}

/// Wraps `message` in a request carrying `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Fetches `http://{addr}/metrics` with a minimal HTTP/1.1 client (enough
/// for a loopback test; no extra dependency).
pub async fn scrape_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    anyhow::ensure!(
        body.starts_with("HTTP/1.1 200"),
        "metrics endpoint answered: {}",
        body.lines().next().unwrap_or("")
    );
    Ok(body)
}

/// A `Command` running the `watchnext` binary built beside the calling test
/// (`target/<profile>/watchnext`, built by the workspace's test build), with
/// ONNX Runtime found as the tests find it (`ORT_DYLIB_PATH`, else the
/// workspace's `.ort/`). For tests that need real processes (kill -9,
/// several replicas); stdout is piped for the announce line.
pub fn watchnext_command() -> std::process::Command {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>").join("watchnext");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p watchnext-server` (scripts/test.sh builds it)",
        bin.display()
    );
    let mut command = std::process::Command::new(bin);
    let ort = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ort/libonnxruntime.so");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() && ort.is_file() {
        command.env("ORT_DYLIB_PATH", ort);
    }
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
    command
}

/// Reads the `grpc=` address from a started `watchnext serve`'s announce line.
pub fn announced_addr(child: &mut std::process::Child) -> String {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("announce line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no grpc= in the announce line {line:?}"))
        .to_owned()
}
