//! Who may call what, and how fast a client may write.
//!
//! # Credentials
//! Every caller presents its credential as `authorization: Bearer <token>`:
//! - the **role token** (`auth.role_token`, or the first line of
//!   `auth.role_token_file`) is the roles' shared secret: the recommender
//!   and the log followers present it to the other roles
//!   ([`watchnext_recommender::clients::RoleCredential`]);
//! - **client tokens** (`auth.record_tokens_file`, one `<name> <token>` per
//!   line) let named clients write events;
//! - a **client certificate** verified against `tls.client_ca_file` (mutual
//!   TLS, `crate::tls`) makes its connection a role, like the role token.
//!
//! Token files are re-read when they change ([`Auth::watch_files`]); a file
//! that cannot be read or parsed keeps the credentials in force and is
//! logged. Tokens are compared in constant time (no early exit) and are
//! never logged or printed (`Debug` says only whether one is set).
//!
//! # Policy ([`policy`])
//! | RPC | without a role token configured | with one |
//! |---|---|---|
//! | `Feedback.Tail`, `CandidateGenerator.Generate`, `Ranker.Rank` | open | role token only |
//! | `Feedback.Record` | open, or client tokens when a file is set | the same, and the role token |
//! | `Recommender.Recommend`, health, reflection | open | open |
//! | `Admin.*` | `admin.token` (its own interceptor) | the same |
//!
//! A missing or wrong credential is UNAUTHENTICATED, with the header to send.
//!
//! # Record rate limits
//! Each client (its token's name, or its IP address when Record is open) has
//! two token buckets: request bytes (`auth.record_bytes_per_second`, burst
//! `record_burst_bytes`), checked by the RPC layer *before* a body is read,
//! and events (`record_events_per_second`, burst `record_burst_events`),
//! charged once the batch is decoded. A call passes while the bucket holds
//! at least one unit, and may take it into debt (so the largest allowed
//! message always passes once); until it holds one unit again the
//! client's calls are RESOURCE_EXHAUSTED with the wait before a retry can
//! pass. Callers with the role token are not limited: the
//! recommender's impressions are the deployment's own traffic.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use tonic::Status;
use watchnext_core::config::AuthConfig;
use watchnext_recommender::clients::RoleCredential;

/// RPC paths of the role-to-role calls.
const ROLE_PATHS: [&str; 3] =
    ["/watchnext.v1.Feedback/Tail", "/watchnext.v1.CandidateGenerator/Generate", "/watchnext.v1.Ranker/Rank"];
/// The event-writing RPC.
pub const RECORD_PATH: &str = "/watchnext.v1.Feedback/Record";

/// What an RPC asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Anyone (Recommend, health, reflection; Admin checks its own token).
    Open,
    /// The role token, when one is configured.
    Role,
    /// A client token when a token file is configured (the role token too);
    /// rate-limited per client.
    Record,
}

/// The policy of the RPC at `path`.
pub fn policy(path: &str) -> Policy {
    if ROLE_PATHS.contains(&path) {
        Policy::Role
    } else if path == RECORD_PATH {
        Policy::Record
    } else {
        Policy::Open
    }
}

/// Who is calling, as far as the credentials tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presented the role token.
    Role,
    /// Presented the client token of this name.
    Client(Arc<str>),
    /// No (known) credential; from this address when known.
    Anonymous(Option<IpAddr>),
}

impl Caller {
    /// The rate-limit key (none for the role).
    fn limit_key(&self) -> Option<String> {
        match self {
            Caller::Role => None,
            Caller::Client(name) => Some(format!("client:{name}")),
            Caller::Anonymous(Some(ip)) => Some(format!("ip:{ip}")),
            Caller::Anonymous(None) => Some("ip:unknown".into()),
        }
    }
}

/// The tokens in force.
#[derive(Default)]
struct Credentials {
    role: String,
    /// `(name, token)`; `None` while Record is open to anyone.
    clients: Option<Vec<(Arc<str>, String)>>,
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token bucket per client.
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets kept before full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    fn new(per_second: u64, burst: u64) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: per_second as f64,
            burst: burst.max(per_second) as f64,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The wait before `key` may call again; `None` when it may now.
    fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let level = buckets.get_mut(key).map_or(self.burst, |b| self.refill(b, now));
        self.refused(level)
    }

    /// A bucket holding less than one unit (event or byte) refuses; the
    /// wait is until it holds one again.
    fn refused(&self, level: f64) -> Option<Duration> {
        (level < 1.0).then(|| Duration::from_secs_f64((1.0 - level) / self.per_second))
    }

    fn refill(&self, bucket: &mut (f64, Instant), now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.1).as_secs_f64();
        bucket.0 = (bucket.0 + elapsed * self.per_second).min(self.burst);
        bucket.1 = now;
        bucket.0
    }

    /// Takes `amount` from `key`'s bucket if it holds at least one unit (it
    /// may go into debt by this one take); else the wait before a retry can pass.
    fn take(&self, key: &str, amount: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (level, at)| {
                *level + now.saturating_duration_since(*at).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let level = self.refill(bucket, now);
        if let Some(wait) = self.refused(level) {
            return Err(wait);
        }
        bucket.0 -= amount;
        Ok(())
    }
}

/// A file and the modification time it had when last read.
#[derive(Debug, Clone)]
struct Watched {
    path: PathBuf,
    modified: Option<SystemTime>,
}

/// The credentials and rate limits of one process.
pub struct Auth {
    credentials: ArcSwap<Credentials>,
    /// What this process's clients present to the other roles.
    outgoing: RoleCredential,
    role_file: Option<Mutex<Watched>>,
    clients_file: Option<Mutex<Watched>>,
    events: Option<RateLimiter>,
    bytes: Option<RateLimiter>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.credentials.load();
        f.debug_struct("Auth")
            .field("role_token", &if c.role.is_empty() { "<unset>" } else { "<redacted>" })
            .field("record_clients", &c.clients.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The role token in `text`: its first line, trimmed.
fn parse_role_file(text: &str, path: &Path) -> anyhow::Result<String> {
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(!token.is_empty(), "{}: the first line must hold the role token", path.display());
    Ok(token)
}

/// `<name> <token>` lines; `#` starts a comment.
fn parse_clients_file(text: &str, path: &Path) -> anyhow::Result<Vec<(Arc<str>, String)>> {
    let mut out: Vec<(Arc<str>, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("{}:{}: expected `<name> <token>`", path.display(), i + 1);
        };
        anyhow::ensure!(token.len() >= 16, "{}:{}: tokens must be at least 16 characters", path.display(), i + 1);
        anyhow::ensure!(
            out.iter().all(|(n, _)| &**n != name),
            "{}:{}: client `{name}` is listed twice",
            path.display(),
            i + 1
        );
        out.push((name.into(), token.to_owned()));
    }
    Ok(out)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

impl Auth {
    /// Reads the configured token files (an unreadable one is an error at
    /// start-up).
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Arc<Self>> {
        let watched = |p: &str| {
            (!p.is_empty()).then(|| {
                let path = PathBuf::from(p);
                Mutex::new(Watched { modified: modified(&path), path })
            })
        };
        let role_file = watched(&config.role_token_file);
        let clients_file = watched(&config.record_tokens_file);
        let role = match &role_file {
            Some(w) => {
                let path = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).path.clone();
                parse_role_file(&read(&path)?, &path)?
            }
            None => config.role_token.clone(),
        };
        let clients = match &clients_file {
            Some(w) => {
                let path = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).path.clone();
                Some(parse_clients_file(&read(&path)?, &path)?)
            }
            None => None,
        };
        let outgoing = RoleCredential::new(&role).map_err(|e| anyhow::anyhow!("auth.role_token: {e}"))?;
        Ok(Arc::new(Self {
            credentials: ArcSwap::from_pointee(Credentials { role, clients }),
            outgoing,
            role_file,
            clients_file,
            events: RateLimiter::new(u64::from(config.record_events_per_second), u64::from(config.record_burst_events)),
            bytes: RateLimiter::new(config.record_bytes_per_second, config.record_burst_bytes),
        }))
    }

    /// No credentials and no limits (tests, in-process tools).
    pub fn open() -> Arc<Self> {
        let config = AuthConfig { record_events_per_second: 0, record_bytes_per_second: 0, ..AuthConfig::default() };
        Self::from_config(&config).unwrap_or_else(|_| unreachable!("no files to read"))
    }

    /// What this process's clients of other roles present.
    pub fn outgoing(&self) -> &RoleCredential {
        &self.outgoing
    }

    /// Whether a role token is configured.
    pub fn has_role_token(&self) -> bool {
        !self.credentials.load().role.is_empty()
    }

    /// Who presents `headers` from `peer`. A connection whose client
    /// certificate was verified against `tls.client_ca_file` is a role
    /// ([`Auth::identify_tls`]).
    pub fn identify(&self, headers: &http::HeaderMap, peer: Option<IpAddr>) -> Caller {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes);
        let Some(presented) = presented else { return Caller::Anonymous(peer) };
        let c = self.credentials.load();
        if !c.role.is_empty() && constant_time_eq(presented, c.role.as_bytes()) {
            return Caller::Role;
        }
        // Every token is compared, so timing does not tell which one was close.
        let mut found = None;
        for (name, token) in c.clients.iter().flatten() {
            if constant_time_eq(presented, token.as_bytes()) {
                found = Some(name.clone());
            }
        }
        found.map_or(Caller::Anonymous(peer), Caller::Client)
    }

    /// Like [`Auth::identify`], for a connection that presented a verified
    /// client certificate (`tls_role`): a role whatever its headers say.
    pub fn identify_tls(&self, headers: &http::HeaderMap, peer: Option<IpAddr>, tls_role: bool) -> Caller {
        if tls_role { Caller::Role } else { self.identify(headers, peer) }
    }

    /// The caller of the RPC at `path`, or why it may not call it.
    pub fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
        tls_role: bool,
    ) -> Result<Caller, Status> {
        let caller = self.identify_tls(headers, peer, tls_role);
        match policy(path) {
            Policy::Open => Ok(caller),
            Policy::Role => {
                if caller == Caller::Role || !self.has_role_token() {
                    Ok(caller)
                } else {
                    Err(Status::unauthenticated(format!(
                        "{path} is a role-to-role call: send `authorization: Bearer <role token>` \
                         (auth.role_token of the deployment) or connect with a client certificate signed by the \
                         server's tls.client_ca_file"
                    )))
                }
            }
            Policy::Record => {
                let open = self.credentials.load().clients.is_none();
                if open || !matches!(caller, Caller::Anonymous(_)) {
                    Ok(caller)
                } else {
                    Err(Status::unauthenticated(
                        "Feedback.Record needs a client token: send `authorization: Bearer <token>` with a token \
                         listed in auth.record_tokens_file",
                    ))
                }
            }
        }
    }

    /// Refuses `caller` while its byte allowance is in debt (before its
    /// body is read).
    pub fn check_bytes(&self, caller: &Caller) -> Result<(), Status> {
        let (Some(limiter), Some(key)) = (&self.bytes, caller.limit_key()) else { return Ok(()) };
        match limiter.wait(&key, Instant::now()) {
            None => Ok(()),
            Some(wait) => Err(limited("bytes", "auth.record_bytes_per_second; the body was not read", wait)),
        }
    }

    /// Charges `bytes` of request body to `caller`.
    pub fn charge_bytes(&self, caller: &Caller, bytes: usize) -> Result<(), Status> {
        let (Some(limiter), Some(key)) = (&self.bytes, caller.limit_key()) else { return Ok(()) };
        limiter
            .take(&key, bytes as f64, Instant::now())
            .map_err(|wait| limited("bytes", "auth.record_bytes_per_second", wait))
    }

    /// Charges `events` recorded events to `caller`.
    pub fn charge_events(&self, caller: &Caller, events: usize) -> Result<(), Status> {
        let (Some(limiter), Some(key)) = (&self.events, caller.limit_key()) else { return Ok(()) };
        limiter
            .take(&key, events as f64, Instant::now())
            .map_err(|wait| limited("events", "auth.record_events_per_second", wait))
    }

    /// Re-reads the token files whose modification time changed. A file
    /// that cannot be read or parsed leaves the credentials in force.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let changed = |w: &Option<Mutex<Watched>>| -> Option<PathBuf> {
            let w = w.as_ref()?;
            let w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (modified(&w.path) != w.modified).then(|| w.path.clone())
        };
        let (role_path, clients_path) = (changed(&self.role_file), changed(&self.clients_file));
        if role_path.is_none() && clients_path.is_none() {
            return Ok(false);
        }
        let now = self.credentials.load();
        let role = match &role_path {
            Some(path) => parse_role_file(&read(path)?, path)?,
            None => now.role.clone(),
        };
        let clients = match &clients_path {
            Some(path) => Some(parse_clients_file(&read(path)?, path)?),
            None => now.clients.clone(),
        };
        self.outgoing.set(&role).map_err(|e| anyhow::anyhow!("auth.role_token_file: {e}"))?;
        self.credentials.store(Arc::new(Credentials { role, clients }));
        for (file, path) in [(&self.role_file, role_path), (&self.clients_file, clients_path)] {
            if let (Some(w), Some(path)) = (file, path) {
                w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).modified = modified(&path);
            }
        }
        Ok(true)
    }

    /// Re-reads changed token files every `interval` (nothing to do without files).
    pub fn watch_files(self: &Arc<Self>, interval: Duration) {
        if self.role_file.is_none() && self.clients_file.is_none() {
            return;
        }
        reload_every(self, interval, "auth: token files", Self::reload);
    }
}

/// Calls `reload` on `target` every `interval` on the blocking pool while
/// `target` lives, logging what happened (`what` names the files). A
/// failed reload keeps what is in force.
pub(crate) fn reload_every<T: Send + Sync + 'static>(
    target: &Arc<T>,
    interval: Duration,
    what: &'static str,
    reload: fn(&T) -> anyhow::Result<bool>,
) {
    let target = Arc::downgrade(target);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(target) = target.upgrade() else { return };
            match tokio::task::spawn_blocking(move || reload(&target)).await {
                Ok(Ok(true)) => tracing::info!("{what} re-read"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    error = %format!("{e:#}"),
                    "{what} changed but do not load; what was in force stays"
                ),
                Err(e) => tracing::error!(error = %e, "{what}: reload panicked"),
            }
        }
    });
}

fn limited(what: &str, key: &str, wait: Duration) -> Status {
    Status::resource_exhausted(format!(
        "this client is over its Feedback.Record allowance of {what} ({key}); retry in {} ms",
        wait.as_millis().max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    const ROLE: &str = "role-secret-0123456789";
    const ALICE: &str = "alice-token-0123456789";

    fn with_files(dir: &Path, clients: &str) -> Arc<Auth> {
        std::fs::write(dir.join("role"), format!("{ROLE}\n")).unwrap();
        std::fs::write(dir.join("clients"), clients).unwrap();
        let config = AuthConfig {
            role_token_file: dir.join("role").display().to_string(),
            record_tokens_file: dir.join("clients").display().to_string(),
            ..AuthConfig::default()
        };
        Auth::from_config(&config).unwrap()
    }

    #[test]
    fn the_policy_follows_the_rpc() {
        assert_eq!(policy("/watchnext.v1.Feedback/Tail"), Policy::Role);
        assert_eq!(policy("/watchnext.v1.Ranker/Rank"), Policy::Role);
        assert_eq!(policy("/watchnext.v1.CandidateGenerator/Generate"), Policy::Role);
        assert_eq!(policy(RECORD_PATH), Policy::Record);
        assert_eq!(policy("/watchnext.v1.Recommender/Recommend"), Policy::Open);
        assert_eq!(policy("/grpc.health.v1.Health/Check"), Policy::Open);
    }

    #[test]
    fn callers_are_identified_and_admitted_by_policy() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_files(dir.path(), "# who may write\nalice alice-token-0123456789  # the app\n\n");
        let ip: Option<IpAddr> = Some("10.0.0.7".parse().unwrap());
        assert_eq!(auth.identify(&bearer(ROLE), ip), Caller::Role);
        assert_eq!(auth.identify(&bearer(ALICE), ip), Caller::Client("alice".into()));
        assert_eq!(auth.identify(&bearer("alice-token-012345678"), ip), Caller::Anonymous(ip), "a prefix is not it");
        assert_eq!(auth.identify(&http::HeaderMap::new(), ip), Caller::Anonymous(ip));

        let tail = "/watchnext.v1.Feedback/Tail";
        assert_eq!(auth.admit(tail, &bearer(ROLE), ip, false).unwrap(), Caller::Role);
        let refused = auth.admit(tail, &bearer(ALICE), ip, false).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("role token"), "{}", refused.message());
        assert_eq!(auth.admit(RECORD_PATH, &bearer(ALICE), ip, false).unwrap(), Caller::Client("alice".into()));
        assert_eq!(auth.admit(RECORD_PATH, &bearer(ROLE), ip, false).unwrap(), Caller::Role);
        let refused = auth.admit(RECORD_PATH, &http::HeaderMap::new(), ip, false).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(auth.admit("/watchnext.v1.Recommender/Recommend", &http::HeaderMap::new(), ip, false).is_ok());
        // A verified client certificate is a role, whatever the headers say.
        assert_eq!(auth.admit(tail, &http::HeaderMap::new(), ip, true).unwrap(), Caller::Role);
        // Secrets never reach Debug output.
        let shown = format!("{auth:?} {:?}", auth.outgoing());
        assert!(!shown.contains(ROLE) && !shown.contains(ALICE), "{shown}");

        // Without any configuration everything is open.
        let open = Auth::open();
        assert!(open.admit(tail, &http::HeaderMap::new(), ip, false).is_ok());
        assert!(open.admit(RECORD_PATH, &http::HeaderMap::new(), ip, false).is_ok());
        assert!(!open.outgoing().is_set());
    }

    #[test]
    fn bad_token_files_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("alice\n", ":1: expected `<name> <token>`"),
            ("alice short\n", ":1: tokens must be at least 16"),
            ("a aaaaaaaaaaaaaaaaaaaa\n\na bbbbbbbbbbbbbbbbbbbbbbbb\n", ":3: client `a` is listed twice"),
        ] {
            std::fs::write(dir.path().join("clients"), text).unwrap();
            let config = AuthConfig {
                record_tokens_file: dir.path().join("clients").display().to_string(),
                ..AuthConfig::default()
            };
            let err = Auth::from_config(&config).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let config =
            AuthConfig { role_token_file: dir.path().join("missing").display().to_string(), ..Default::default() };
        assert!(Auth::from_config(&config).unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn changed_files_are_re_read_and_a_broken_one_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_files(dir.path(), "alice alice-token-0123456789\n");
        assert!(!auth.reload().unwrap(), "nothing changed");
        let set_mtime = |name: &str, secs: u64| {
            let f = std::fs::File::options().write(true).open(dir.path().join(name)).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
        };
        std::fs::write(dir.path().join("clients"), "bob bob-token-0123456789ab\n").unwrap();
        set_mtime("clients", 1_000);
        std::fs::write(dir.path().join("role"), "new-role-secret-0123456789\n").unwrap();
        set_mtime("role", 1_000);
        assert!(auth.reload().unwrap());
        let ip = None;
        assert_eq!(auth.identify(&bearer(ALICE), ip), Caller::Anonymous(None), "alice was removed");
        assert_eq!(auth.identify(&bearer("bob-token-0123456789ab"), ip), Caller::Client("bob".into()));
        assert_eq!(auth.identify(&bearer("new-role-secret-0123456789"), ip), Caller::Role);
        assert!(auth.outgoing().is_set());

        std::fs::write(dir.path().join("clients"), "broken\n").unwrap();
        set_mtime("clients", 2_000);
        assert!(auth.reload().is_err());
        assert_eq!(
            auth.identify(&bearer("bob-token-0123456789ab"), ip),
            Caller::Client("bob".into()),
            "still in force"
        );
    }

    #[test]
    fn the_rate_limiter_allows_the_burst_then_the_rate_and_keys_are_separate() {
        let limiter = RateLimiter::new(10, 20).unwrap();
        let t0 = Instant::now();
        // The burst, taken in one go, then one more request into debt is refused.
        assert!(limiter.take("a", 20.0, t0).is_ok());
        let wait = limiter.take("a", 1.0, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.wait("a", t0).is_some());
        // Another client has its own bucket.
        assert!(limiter.take("b", 5.0, t0).is_ok());
        // Half a second later 5 tokens came back: one request of any size may go into debt.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.wait("a", t1).is_none());
        assert!(limiter.take("a", 50.0, t1).is_ok());
        let wait = limiter.take("a", 1.0, t1).unwrap_err();
        assert!(wait >= Duration::from_secs(4), "45 in debt at 10/s: {wait:?}");
        // A full bucket never exceeds the burst.
        let t2 = t1 + Duration::from_secs(3_600);
        assert!(limiter.take("a", 20.0, t2).is_ok());
        assert!(limiter.take("a", 1.0, t2).is_err());
        assert!(RateLimiter::new(0, 10).is_none(), "0 = no limit");
    }

    #[test]
    fn the_role_is_not_limited_and_clients_are() {
        let config = AuthConfig {
            role_token: ROLE.into(),
            record_events_per_second: 1,
            record_burst_events: 2,
            ..AuthConfig::default()
        };
        let auth = Auth::from_config(&config).unwrap();
        for _ in 0..10 {
            assert!(auth.charge_events(&Caller::Role, 1_000).is_ok());
        }
        let anon = Caller::Anonymous(Some("10.0.0.1".parse().unwrap()));
        assert!(auth.charge_events(&anon, 2).is_ok());
        let refused = auth.charge_events(&anon, 1).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("auth.record_events_per_second"), "{}", refused.message());
        assert!(auth.charge_events(&Caller::Anonymous(Some("10.0.0.2".parse().unwrap())), 2).is_ok());
    }
}
