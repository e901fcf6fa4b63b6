//! Layered configuration.
//!
//! Sources, later ones winning: built-in defaults ([`Config::default`]) → a
//! TOML file (`--config`, see `deploy/watchnext.example.toml`) →
//! environment variables `WATCHNEXT__SECTION__KEY` (e.g.
//! `WATCHNEXT__SERVER__LISTEN=0.0.0.0:50051`) → command-line flags.
//!
//! Unknown keys are rejected (a typo must not be silently ignored), and
//! [`Config::validate`] checks what types alone cannot; every error names the
//! key and says what is accepted.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

use crate::{event::Source, registry, role::Role};

/// The prefix of configuration environment variables; `__` separates levels.
pub const ENV_PREFIX: &str = "WATCHNEXT__";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(String),
    /// A value has the right type but is not acceptable.
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

/// The whole configuration of a `watchnext` process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub onnx: OnnxConfig,
    pub recommender: RecommenderConfig,
    pub generators: GeneratorsConfig,
    pub ranker: RankerConfig,
    pub feedback: FeedbackConfig,
    pub data: DataConfig,
    pub event_log: EventLogConfig,
    pub endpoints: EndpointsConfig,
    /// `watchnext train`'s settings (tasks, architecture, schedule…), checked
    /// by the trainer; empty means its defaults.
    pub trainer: serde_json::Value,
    /// `watchnext train-sequence`'s settings (history length, sizes,
    /// sampled softmax, schedule), checked by the trainer; empty means its
    /// defaults.
    pub sequence_trainer: serde_json::Value,
}

/// The gRPC and metrics listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address; port 0 picks a free port (logged at start-up).
    pub listen: String,
    /// Prometheus `/metrics` listen address; empty disables the endpoint.
    pub metrics_listen: String,
    /// What this process serves.
    pub role: Role,
    /// How long a SIGTERM waits for in-flight requests before exiting.
    pub shutdown_grace_seconds: u64,
    /// Requests handled at once; beyond it calls get RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
    /// Largest accepted gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// How long a client may take to send a request's whole body after its
    /// headers. A call only counts against `max_concurrent_requests` once
    /// its body is in, so a client that never finishes one holds no slot;
    /// past this it gets DEADLINE_EXCEEDED.
    pub request_body_timeout_ms: u64,
    /// The longest a unary call may run on the server (the client's own
    /// deadline applies when shorter); past it the call is CANCELLED.
    pub request_timeout_seconds: u64,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls open at once on one
    /// connection.
    pub max_streams_per_connection: u32,
    /// `Feedback.Tail` streams open at once in this process; more get
    /// RESOURCE_EXHAUSTED.
    pub max_tail_streams: usize,
    /// HTTP/2 keep-alive: a ping every this many seconds on an idle
    /// connection, which is closed when the ping is not answered within
    /// `keepalive_timeout_seconds` (0 disables pings).
    pub keepalive_interval_seconds: u64,
    pub keepalive_timeout_seconds: u64,
    /// Largest request header block, in bytes.
    pub max_header_list_bytes: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9464".into(),
            role: Role::All,
            shutdown_grace_seconds: 30,
            max_concurrent_requests: 1024,
            max_message_bytes: 16 * 1024 * 1024,
            request_body_timeout_ms: 10_000,
            request_timeout_seconds: 60,
            max_streams_per_connection: 256,
            max_tail_streams: 64,
            keepalive_interval_seconds: 30,
            keepalive_timeout_seconds: 10,
            max_header_list_bytes: 64 * 1024,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,watchnext_ranker=debug`;
    /// `RUST_LOG` overrides it when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Human-readable text or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The operator API.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token every Admin call must present. Empty disables the Admin
    /// service: every call is then refused as UNAUTHENTICATED.
    pub token: String,
}

/// Secrets are never printed, only whether they are set.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "<unset>" } else { "<redacted>" }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig").field("token", &redacted(&self.token)).finish()
    }
}

/// TLS on the gRPC listener and on this process's clients of other roles
/// (see `crates/server/src/tls.rs`). Files are PEM; every one is re-read
/// when it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain of this server. With `key_file`, the gRPC listener
    /// speaks TLS only. Empty: plaintext.
    pub cert_file: String,
    /// The certificate's private key.
    pub key_file: String,
    /// CA certificates whose client certificates identify a **role**
    /// (mutual TLS): such a caller passes the role-to-role policy like the
    /// role token. Empty: no client certificates are asked for.
    pub client_ca_file: String,
    /// Refuse connections that present no client certificate signed by
    /// `client_ca_file` (every caller must then be a role).
    pub require_client_cert: bool,
    /// CA certificates this process trusts when it calls other roles at
    /// `https://` endpoints (needed for any `https://` endpoint: there is
    /// no built-in trust store).
    pub ca_file: String,
    /// The certificate and key this process presents to other roles
    /// (mutual TLS); empty: none.
    pub client_cert_file: String,
    pub client_key_file: String,
    /// How often the files are checked for changes.
    pub reload_seconds: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            require_client_cert: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            reload_seconds: 5,
        }
    }
}

/// Who may call what, and how fast a client may write events
/// (see `crates/server/src/auth.rs`). Every caller presents its credential
/// as `authorization: Bearer <token>`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The roles' shared credential. When set, the role-to-role RPCs
    /// (`Feedback.Tail`, `CandidateGenerator.Generate`, `Ranker.Rank`)
    /// refuse any caller without it, and every watchnext client of another
    /// role (the recommender, log followers) presents it. Empty: those RPCs
    /// are open, as in the single-process default.
    pub role_token: String,
    /// A file whose first line is the role token (overrides `role_token`);
    /// re-read when it changes.
    pub role_token_file: String,
    /// A file of the clients allowed to call `Feedback.Record`, one
    /// `<name> <token>` per line (`#` starts a comment); re-read when it
    /// changes. Empty: any client may record (rate-limited by address).
    pub record_tokens_file: String,
    /// Sustained events per second one client may record (by token name, or
    /// by IP address without tokens); 0 = no limit. The role is not limited.
    pub record_events_per_second: u32,
    /// Events one client may record at once above the sustained rate.
    pub record_burst_events: u32,
    /// Sustained request bytes per second one client may send to
    /// `Feedback.Record`; 0 = no limit. Checked before a body is read, so a
    /// flood costs the server almost nothing once its allowance is spent.
    pub record_bytes_per_second: u64,
    /// Bytes one client may send at once above the sustained rate.
    pub record_burst_bytes: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            role_token: String::new(),
            role_token_file: String::new(),
            record_tokens_file: String::new(),
            record_events_per_second: 50_000,
            record_burst_events: 500_000,
            record_bytes_per_second: 32 << 20,
            record_burst_bytes: 128 << 20,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("role_token", &redacted(&self.role_token))
            .field("role_token_file", &self.role_token_file)
            .field("record_tokens_file", &self.record_tokens_file)
            .field("record_events_per_second", &self.record_events_per_second)
            .field("record_burst_events", &self.record_burst_events)
            .field("record_bytes_per_second", &self.record_bytes_per_second)
            .field("record_burst_bytes", &self.record_burst_bytes)
            .finish()
    }
}

/// ONNX Runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnnxConfig {
    /// Path of `libonnxruntime.so`; empty: `ORT_DYLIB_PATH`, then the copy
    /// `scripts/setup.sh` unpacks under `.ort/`.
    pub library_path: String,
    pub execution_provider: ExecutionProviderKind,
    /// GPU ordinal for `cuda` / `tensorrt`.
    pub device_id: i32,
    /// Threads one inference may use. Keep it low: the rest of the service
    /// needs CPU too, and requests run concurrently on separate sessions.
    pub intra_op_threads: usize,
    /// Whether idle ONNX Runtime threads spin; spinning burns CPU that the
    /// rest of the process needs, so it is off by default.
    pub spinning: bool,
}

impl Default for OnnxConfig {
    fn default() -> Self {
        Self {
            library_path: String::new(),
            execution_provider: ExecutionProviderKind::Cpu,
            device_id: 0,
            intra_op_threads: 1,
            spinning: false,
        }
    }
}

/// Which hardware runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    Cpu,
    Cuda,
    Tensorrt,
}

impl ExecutionProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProviderKind::Cpu => "cpu",
            ExecutionProviderKind::Cuda => "cuda",
            ExecutionProviderKind::Tensorrt => "tensorrt",
        }
    }
}

/// The front door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommenderConfig {
    /// Largest `num_results` a client may ask for.
    pub max_results: u32,
    /// Most merged candidates sent to the ranker per request.
    pub max_candidates: u32,
    /// Fan-out, deadlines and diversity (checked by the recommender crate,
    /// see `crates/recommender/src/config.rs`).
    pub fanout: serde_json::Value,
    /// The combiner's default task weights and inverted tasks.
    pub combiner: serde_json::Value,
    /// Experiment arms (`[[recommender.arms]]`); none = one `default` arm.
    pub arms: serde_json::Value,
}

impl Default for RecommenderConfig {
    fn default() -> Self {
        Self {
            max_results: 100,
            max_candidates: 500,
            fanout: serde_json::Value::Object(serde_json::Map::new()),
            combiner: serde_json::Value::Object(serde_json::Map::new()),
            arms: serde_json::Value::Array(Vec::new()),
        }
    }
}

/// The candidate generators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorsConfig {
    /// Largest `max_candidates` a client may ask one generator for.
    pub max_candidates: u32,
    /// How often the co-watch tables are snapshotted to disk (0 = only at
    /// shutdown); a restart loads the snapshot and replays the log after it.
    pub snapshot_interval_seconds: u64,
    /// How often `catalog.jsonl` is checked for changes (0 = never): a new
    /// catalogue is loaded off the request path and swapped into every
    /// generator, so new videos appear without a restart.
    pub catalog_poll_seconds: u64,
    /// Settings of each generator, `[generators.<name>]` for every name in
    /// the registry ([`crate::registry`]), passed to its crate, which
    /// validates them and names the key on error (see
    /// deploy/watchnext.example.toml). Other keys are refused by
    /// [`Config::validate`].
    #[serde(flatten)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

impl GeneratorsConfig {
    /// The settings of `source`'s generator (`{}` when none are set).
    pub fn section(&self, source: Source) -> serde_json::Value {
        self.sections
            .get(crate::event::source_name(source))
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
    }

    /// The settings of `source`'s generator, to change in place.
    pub fn section_mut(&mut self, source: Source) -> &mut serde_json::Value {
        self.sections
            .entry(crate::event::source_name(source).to_owned())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
    }
}

impl Default for GeneratorsConfig {
    fn default() -> Self {
        let empty = || serde_json::Value::Object(serde_json::Map::new());
        Self {
            max_candidates: 2_000,
            snapshot_interval_seconds: 300,
            catalog_poll_seconds: 10,
            sections: registry::NAMES.iter().map(|n| ((*n).to_owned(), empty())).collect(),
        }
    }
}

/// The ranking model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankerConfig {
    /// Most candidates one Rank call may carry.
    pub max_candidates: u32,
    /// ONNX Runtime sessions per model (requests scored at once).
    pub sessions: usize,
    /// Candidates in the warm-up run of a model being loaded.
    pub warmup_rows: usize,
    /// Models kept loaded: the active one, the rollback target, versions
    /// pinned by experiment arms.
    pub keep_versions: usize,
    /// How often `<data>/models` is checked for a newer model (0 = only at
    /// start-up and on `Admin.ReloadModel`).
    pub model_poll_seconds: u64,
}

impl Default for RankerConfig {
    fn default() -> Self {
        Self { max_candidates: 2_000, sessions: 2, warmup_rows: 256, keep_versions: 4, model_poll_seconds: 10 }
    }
}

/// Feedback ingestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Most events one Record call may carry.
    pub max_batch_events: u32,
    /// Largest encoded event `Record` accepts, in bytes. Every role that
    /// follows the log (`Feedback.Tail`) must be able to decode each event,
    /// so this stays far below `server.max_message_bytes`.
    pub max_event_bytes: u32,
    /// How far ahead of the server's clock an event's timestamp may be
    /// (client clock skew), in seconds.
    pub max_future_seconds: u64,
    /// The range a rating's value must be within.
    pub rating_min: f32,
    pub rating_max: f32,
    /// Most seconds one watch event may report, and the most a video may
    /// last.
    pub max_watch_seconds: f32,
    /// When the video's duration is known: the most seconds watched per
    /// second of video (re-watches and loops in one event).
    pub max_watch_multiple: f32,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 10_000,
            max_event_bytes: 64 * 1024,
            max_future_seconds: 86_400,
            rating_min: -10.0,
            rating_max: 10.0,
            max_watch_seconds: 7.0 * 86_400.0,
            max_watch_multiple: 10.0,
        }
    }
}

/// Where state lives on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Root folder of the feedback log, models, indexes and snapshots.
    pub dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("var") }
    }
}

/// Which event stream holds the feedback log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventLogBackend {
    /// Segment files under `data.dir` (one machine; the default).
    #[default]
    Embedded,
    /// A NATS JetStream stream (`[event_log.nats]`), which every role
    /// writes to and follows itself.
    Nats,
}

/// `[event_log]`: where events are appended and followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EventLogConfig {
    pub backend: EventLogBackend,
    pub nats: NatsConfig,
}

/// `[event_log.nats]`: the JetStream stream and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://…`).
    pub url: String,
    /// JetStream stream name; created on first use when missing.
    pub stream: String,
    /// The one subject events are published on (the stream's subject).
    pub subject: String,
    /// Copies JetStream keeps of each event (1, or 3 on a 3-node cluster).
    pub replicas: u32,
    /// Events older than this are dropped by the stream; 0 keeps them all.
    pub max_age_days: u32,
    /// Window within which a repeated event id is stored once, in seconds.
    pub duplicate_window_seconds: u64,
    /// How long a write waits for JetStream's acknowledgement.
    pub ack_timeout_ms: u64,
    /// A NATS `.creds` file (JWT + NKey seed); empty = none.
    pub credentials_file: String,
    /// A file holding a token (`nats://` token auth); empty = none.
    pub token_file: String,
    /// CA bundle to verify a `tls://` server with; empty = system roots.
    pub ca_file: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "WATCHNEXT_EVENTS".into(),
            subject: "watchnext.events".into(),
            replicas: 1,
            max_age_days: 0,
            duplicate_window_seconds: 120,
            ack_timeout_ms: 5_000,
            credentials_file: String::new(),
            token_file: String::new(),
            ca_file: String::new(),
        }
    }
}

/// Where a split deployment finds the other roles (`http://host:port`).
/// Empty means "in this process" (only valid with `server.role = "all"`).
/// Each may list several URLs, comma-separated, and a host name may
/// resolve to several addresses (a headless Service): calls are spread over
/// every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointsConfig {
    pub ranker: String,
    pub feedback: String,
    /// `endpoints.<name>` for every generator in the registry
    /// ([`crate::registry`]); other keys are refused by [`Config::validate`].
    #[serde(flatten)]
    pub generators: BTreeMap<String, String>,
    /// How often host names are resolved again (replicas come and go).
    pub resolve_seconds: u64,
    /// How often each replica's gRPC health is checked; a replica that is
    /// not SERVING takes no calls until it is again.
    pub probe_interval_ms: u64,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self {
            ranker: String::new(),
            feedback: String::new(),
            generators: registry::NAMES.iter().map(|n| ((*n).to_owned(), String::new())).collect(),
            resolve_seconds: 5,
            probe_interval_ms: 1_000,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `WATCHNEXT__…` variables
    /// from the process environment, then `overrides` (flag values as
    /// `("section.key", value)`), and validates the result.
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        Self::load_with_env(file, Env::prefixed(ENV_PREFIX).split("__"), overrides)
    }

    fn load_with_env(file: Option<&Path>, env: Env, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(env);
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        let config: Config = figment.extract().map_err(|e| ConfigError::Load(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that types alone cannot.
    fn check_event_log(&self) -> Result<(), ConfigError> {
        let n = &self.event_log.nats;
        if self.event_log.backend != EventLogBackend::Nats {
            return Ok(());
        }
        if n.url.trim().is_empty() {
            return Err(invalid("event_log.nats.url", "is empty; e.g. nats://127.0.0.1:4222"));
        }
        let token_ok =
            |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token_ok(&n.stream) {
            return Err(invalid(
                "event_log.nats.stream",
                "must be letters, digits, '_' or '-' (a JetStream stream name)",
            ));
        }
        if n.subject.is_empty() || n.subject.split('.').any(|t| !token_ok(t)) {
            return Err(invalid(
                "event_log.nats.subject",
                "must be dot-separated tokens of letters, digits, '_' or '-' (no wildcards)",
            ));
        }
        if !(1..=5).contains(&n.replicas) {
            return Err(invalid("event_log.nats.replicas", "must be between 1 and 5"));
        }
        if !(1..=86_400).contains(&n.duplicate_window_seconds) {
            return Err(invalid("event_log.nats.duplicate_window_seconds", "must be between 1 and 86400"));
        }
        if !(100..=600_000).contains(&n.ack_timeout_ms) {
            return Err(invalid("event_log.nats.ack_timeout_ms", "must be between 100 and 600000"));
        }
        if !n.credentials_file.is_empty() && !n.token_file.is_empty() {
            return Err(invalid("event_log.nats.token_file", "set either credentials_file or token_file, not both"));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("server.listen", &self.server.listen)?;
        if !self.server.metrics_listen.is_empty() {
            parse_addr("server.metrics_listen", &self.server.metrics_listen)?;
        }
        if self.server.max_concurrent_requests == 0 {
            return Err(invalid("server.max_concurrent_requests", "must be at least 1"));
        }
        let sv = &self.server;
        for (key, value, min, max) in [
            ("server.request_body_timeout_ms", sv.request_body_timeout_ms, 1, 3_600_000),
            ("server.request_timeout_seconds", sv.request_timeout_seconds, 1, 86_400),
            ("server.max_streams_per_connection", u64::from(sv.max_streams_per_connection), 1, 65_536),
            ("server.max_tail_streams", sv.max_tail_streams as u64, 1, 65_536),
            ("server.keepalive_interval_seconds", sv.keepalive_interval_seconds, 0, 86_400),
            ("server.keepalive_timeout_seconds", sv.keepalive_timeout_seconds, 1, 3_600),
            ("server.max_header_list_bytes", u64::from(sv.max_header_list_bytes), 4_096, 16 << 20),
        ] {
            if !(min..=max).contains(&value) {
                return Err(invalid(key, format!("is {value}; must be between {min} and {max}")));
            }
        }
        self.check_event_log()?;
        if !(1..=3_600).contains(&self.endpoints.resolve_seconds) {
            return Err(invalid("endpoints.resolve_seconds", "must be between 1 and 3600"));
        }
        if !(50..=60_000).contains(&self.endpoints.probe_interval_ms) {
            return Err(invalid("endpoints.probe_interval_ms", "must be between 50 and 60000"));
        }
        if self.server.max_message_bytes < 64 * 1024 {
            return Err(invalid("server.max_message_bytes", "must be at least 65536"));
        }
        if !(1..=10_000).contains(&self.recommender.max_results) {
            return Err(invalid("recommender.max_results", "must be between 1 and 10000"));
        }
        if self.recommender.max_candidates < self.recommender.max_results {
            return Err(invalid(
                "recommender.max_candidates",
                format!("must be at least recommender.max_results ({})", self.recommender.max_results),
            ));
        }
        if !(1..=100_000).contains(&self.generators.max_candidates) {
            return Err(invalid("generators.max_candidates", "must be between 1 and 100000"));
        }
        if !(1..=100_000).contains(&self.ranker.max_candidates) {
            return Err(invalid("ranker.max_candidates", "must be between 1 and 100000"));
        }
        if self.ranker.max_candidates < self.recommender.max_candidates {
            return Err(invalid(
                "ranker.max_candidates",
                format!("must be at least recommender.max_candidates ({})", self.recommender.max_candidates),
            ));
        }
        if !(1..=1_000_000).contains(&self.feedback.max_batch_events) {
            return Err(invalid("feedback.max_batch_events", "must be between 1 and 1000000"));
        }
        let f = &self.feedback;
        if f.max_event_bytes < 1024 || f.max_event_bytes as usize > self.server.max_message_bytes / 4 {
            return Err(invalid(
                "feedback.max_event_bytes",
                format!(
                    "is {}; must be at least 1024 and at most a quarter of server.max_message_bytes ({}), so that \
                     every follower of the log can decode any event",
                    f.max_event_bytes,
                    self.server.max_message_bytes / 4
                ),
            ));
        }
        if !(f.rating_min.is_finite() && f.rating_max.is_finite() && f.rating_min < f.rating_max) {
            return Err(invalid("feedback.rating_min", "rating_min and rating_max must be finite with min < max"));
        }
        if !(f.max_watch_seconds.is_finite() && f.max_watch_seconds > 0.0) {
            return Err(invalid("feedback.max_watch_seconds", "must be a finite number > 0"));
        }
        if !(f.max_watch_multiple.is_finite() && f.max_watch_multiple >= 1.0) {
            return Err(invalid("feedback.max_watch_multiple", "must be a finite number >= 1"));
        }
        let a = &self.auth;
        if a.record_events_per_second > 0 && a.record_burst_events < a.record_events_per_second {
            return Err(invalid("auth.record_burst_events", "must be at least auth.record_events_per_second"));
        }
        if a.record_bytes_per_second > 0 && a.record_burst_bytes < self.server.max_message_bytes as u64 {
            return Err(invalid(
                "auth.record_burst_bytes",
                format!(
                    "must be at least server.max_message_bytes ({}), or the largest allowed message could never pass",
                    self.server.max_message_bytes
                ),
            ));
        }
        if !a.role_token.is_empty() && !a.role_token_file.is_empty() {
            return Err(invalid("auth.role_token", "set auth.role_token or auth.role_token_file, not both"));
        }
        let t = &self.tls;
        if t.cert_file.is_empty() != t.key_file.is_empty() {
            return Err(invalid("tls.cert_file", "set tls.cert_file and tls.key_file together"));
        }
        if t.client_cert_file.is_empty() != t.client_key_file.is_empty() {
            return Err(invalid("tls.client_cert_file", "set tls.client_cert_file and tls.client_key_file together"));
        }
        if !t.client_ca_file.is_empty() && t.cert_file.is_empty() {
            return Err(invalid(
                "tls.client_ca_file",
                "mutual TLS needs the server's own tls.cert_file and tls.key_file",
            ));
        }
        if t.require_client_cert && t.client_ca_file.is_empty() {
            return Err(invalid("tls.require_client_cert", "needs tls.client_ca_file"));
        }
        if !(1..=3_600).contains(&t.reload_seconds) {
            return Err(invalid("tls.reload_seconds", "must be between 1 and 3600"));
        }
        if !(1..=64).contains(&self.onnx.intra_op_threads) {
            return Err(invalid("onnx.intra_op_threads", "must be between 1 and 64"));
        }
        if self.onnx.device_id < 0 {
            return Err(invalid("onnx.device_id", "must be >= 0"));
        }
        if self.data.dir.as_os_str().is_empty() {
            return Err(invalid("data.dir", "must not be empty"));
        }
        for name in self.generators.sections.keys() {
            if registry::by_name(name).is_none() {
                return Err(invalid(
                    format!("generators.{name}"),
                    format!("unknown key; generators are {}", registry::names()),
                ));
            }
        }
        for name in self.endpoints.generators.keys() {
            if registry::by_name(name).is_none() {
                return Err(invalid(
                    format!("endpoints.{name}"),
                    format!("unknown key; roles with endpoints are ranker, feedback, {}", registry::names()),
                ));
            }
        }
        let mut endpoints = vec![
            ("endpoints.ranker".to_owned(), &self.endpoints.ranker),
            ("endpoints.feedback".to_owned(), &self.endpoints.feedback),
        ];
        endpoints.extend(self.endpoints.generators.iter().map(|(k, v)| (format!("endpoints.{k}"), v)));
        for (key, value) in endpoints {
            if !(value.is_empty() || value.starts_with("http://") || value.starts_with("https://")) {
                return Err(invalid(key, format!("`{value}` must be a URL such as http://ranker:50051")));
            }
        }
        Ok(())
    }

    /// The gRPC listen address (validated).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.listen", &self.server.listen)
    }

    /// The metrics listen address, or `None` when disabled (validated).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.server.metrics_listen.is_empty() {
            Ok(None)
        } else {
            parse_addr("server.metrics_listen", &self.server.metrics_listen).map(Some)
        }
    }
}

fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| invalid(key, format!("`{value}` is not an address such as 127.0.0.1:50051")))
}

/// Figment's errors carry the key path; render them as "key `a.b`: problem".
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            if key.is_empty() { format!("{}{source}", e.kind) } else { format!("key `{key}`: {}{source}", e.kind) }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Env {
        Env::prefixed("WATCHNEXT_TEST_UNSET_PREFIX__").split("__")
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load_with_env(None, no_env(), &[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.role, Role::All);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("watchnext.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:6000\"\nrole = \"ranker\"\n[recommender]\nmax_results = 50\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("WATCHNEXT__SERVER__LISTEN", "127.0.0.1:7000");
            jail.set_env("WATCHNEXT__ADMIN__TOKEN", "s3cret");
            let config = Config::load(Some(&file), &[]).expect("loads");
            assert_eq!(config.server.listen, "127.0.0.1:7000", "env beats file");
            assert_eq!(config.server.role, Role::Ranker, "file beats defaults");
            assert_eq!(config.recommender.max_results, 50);
            assert_eq!(config.admin.token, "s3cret");
            let config = Config::load(Some(&file), &[("server.listen", "127.0.0.1:8000".into())]).expect("loads");
            assert_eq!(config.server.listen, "127.0.0.1:8000", "flags beat env");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[server]\nlistn = \"x\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env(), &[]).unwrap_err().to_string();
        assert!(err.contains("listn"), "unknown key is reported: {err}");

        std::fs::write(&file, "[onnx]\nexecution_provider = \"tpu\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env(), &[]).unwrap_err().to_string();
        assert!(err.contains("onnx.execution_provider") && err.contains("tpu"), "{err}");

        let err = Config::load_with_env(None, no_env(), &[("server.listen", "nowhere".into())]).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");

        let err = Config::load_with_env(None, no_env(), &[("recommender.max_results", "0".into())]).unwrap_err();
        assert!(err.to_string().contains("recommender.max_results"), "{err}");

        let err = Config::load_with_env(Some(&dir.path().join("missing.toml")), no_env(), &[]).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn generator_sections_and_endpoints_follow_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("watchnext.toml");
        std::fs::write(
            &file,
            "[server]\nrole = \"cowatch\"\n[generators]\nmax_candidates = 900\n\
             [generators.cowatch]\nwindow = 7\n[endpoints]\nsequence = \"http://seq:50051\"\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("WATCHNEXT__ENDPOINTS__TOPIC", "http://topic:50051");
            let config = Config::load(Some(&file), &[]).expect("loads");
            assert_eq!(config.server.role, Role::Generator(Source::Cowatch));
            assert_eq!(config.generators.max_candidates, 900);
            assert_eq!(config.generators.section(Source::Cowatch), serde_json::json!({ "window": 7 }));
            assert_eq!(config.generators.section(Source::Topic), serde_json::json!({}));
            assert_eq!(config.endpoints.generators["sequence"], "http://seq:50051");
            assert_eq!(config.endpoints.generators["topic"], "http://topic:50051", "env reaches the map");
            assert_eq!(config.endpoints.generators["context"], "", "defaults stay");
            Ok(())
        });

        std::fs::write(&file, "[generators.cowatc]\nwindow = 7\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env(), &[]).unwrap_err().to_string();
        assert!(err.contains("generators.cowatc") && err.contains("cowatch"), "{err}");
        std::fs::write(&file, "[endpoints]\nrankr = \"http://r:1\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env(), &[]).unwrap_err().to_string();
        assert!(err.contains("endpoints.rankr"), "{err}");
        std::fs::write(&file, "[endpoints]\ncontext = \"context:1\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env(), &[]).unwrap_err().to_string();
        assert!(err.contains("endpoints.context") && err.contains("must be a URL"), "{err}");
        std::fs::write(&file, "[server]\nrole = \"unspecified\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env(), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown role") && err.contains("cowatch"), "{err}");
    }

    #[test]
    fn the_example_config_in_deploy_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/watchnext.example.toml");
        let config = Config::load_with_env(Some(&example), no_env(), &[]).unwrap();
        assert_eq!(config.server.role, Role::All);
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::*;

    /// The `watchnext.toml: |` blocks of the Kubernetes manifests, de-indented.
    #[test]
    fn the_kubernetes_manifests_carry_valid_configs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
        for (name, backend) in [
            ("base/watchnext.toml", EventLogBackend::Embedded),
            ("overlays/split-cpu/watchnext.toml", EventLogBackend::Nats),
        ] {
            let env = Env::prefixed("WATCHNEXT_TEST_UNSET_PREFIX__").split("__");
            let config =
                Config::load_with_env(Some(&dir.join(name)), env, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.server.listen, "0.0.0.0:50051", "{name}");
            assert_eq!(config.event_log.backend, backend, "{name}");
        }
    }

    #[test]
    fn a_nats_event_log_needs_a_usable_stream_and_subject() {
        let load = |toml: &str| {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(tmp.path(), toml).unwrap();
            let env = Env::prefixed("WATCHNEXT_TEST_UNSET_PREFIX__").split("__");
            Config::load_with_env(Some(tmp.path()), env, &[])
        };
        let ok = load("[event_log]\nbackend = \"nats\"\n").unwrap();
        assert_eq!(ok.event_log.nats.subject, "watchnext.events");
        for (bad, key) in [
            ("[event_log]\nbackend = \"nats\"\n[event_log.nats]\nstream = \"a.b\"\n", "event_log.nats.stream"),
            ("[event_log]\nbackend = \"nats\"\n[event_log.nats]\nsubject = \"events.>\"\n", "event_log.nats.subject"),
            ("[event_log]\nbackend = \"nats\"\n[event_log.nats]\nreplicas = 0\n", "event_log.nats.replicas"),
            ("[event_log]\nbackend = \"nats\"\n[event_log.nats]\nurl = \" \"\n", "event_log.nats.url"),
        ] {
            let err = load(bad).expect_err(bad).to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        // The embedded default ignores the NATS section.
        assert!(load("[event_log.nats]\nreplicas = 0\n").is_ok());
        assert!(load("[event_log]\nbackend = \"kafka\"\n").is_err());
    }
}
