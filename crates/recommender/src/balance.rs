//! Client-side load balancing over every replica of a role.
//!
//! A Kubernetes ClusterIP Service gives one virtual address, and a gRPC
//! client keeps one long-lived HTTP/2 connection to it, so every call of a
//! recommender lands on the one pod that connection reached: extra ranker
//! replicas take no load. [`Balanced`] instead talks to each replica
//! itself:
//!
//! - **Who.** The configured URLs (`endpoints.ranker = "http://a:50051,
//!   http://b:50051"`, or one headless-Service name that resolves to every
//!   ready pod) are resolved with DNS now and every `resolve_every`; each
//!   address is a replica with its own lazily connected channel. Addresses
//!   that appear are added, those that vanish are dropped.
//! - **Where each call goes.** Power of two choices: of two replicas picked
//!   at random among those that are up, the one with fewer calls in flight.
//! - **Down and up again.** A call that fails in transport (connection
//!   refused or reset: a killed pod) marks its replica down at once, so the
//!   caller's retry goes elsewhere; every `probe_every` each replica is
//!   asked for gRPC health of the role's service, which takes a replica
//!   that stopped serving out and brings a recovered one back. When every
//!   replica is down the calls still go out (round robin), so a stale mark
//!   never blocks a role that came back.
//!
//! Calls stay one HTTP/2 stream each on the chosen replica's channel; the
//! caller's timeout, metadata and streaming are untouched.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use tonic::{body::Body, transport::Channel};
use tower::{Service, ServiceExt};

/// Builds the channel endpoint of one replica address (TLS settings, the
/// original host name for certificate checks).
pub type MakeEndpoint = Arc<dyn Fn(&Target, SocketAddr) -> Result<tonic::transport::Endpoint, String> + Send + Sync>;

/// A boxed error, as tonic's generated clients accept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often replicas are re-resolved and probed.
#[derive(Debug, Clone)]
pub struct BalanceOptions {
    pub resolve_every: Duration,
    pub probe_every: Duration,
    /// The gRPC health service name asked of each replica (e.g.
    /// `watchnext.v1.Ranker`); empty: the process status.
    pub health_service: String,
}

/// One configured URL: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `http://host:port` / `https://host:port` (default ports 80 / 443).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.trim().parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme = uri.scheme_str().ok_or_else(|| format!("`{url}` has no scheme (http:// or https://)"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{url}`: the scheme must be http or https"));
        }
        let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self { scheme: scheme.to_owned(), host, port })
    }
}

/// A replica: one address, its channel, whether it is up, its load.
#[derive(Debug)]
pub struct Replica {
    pub addr: SocketAddr,
    channel: Channel,
    up: AtomicBool,
    in_flight: AtomicUsize,
    calls: AtomicU64,
}

/// What [`Balanced::replicas`] reports about each replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub addr: SocketAddr,
    pub up: bool,
    pub calls: u64,
}

/// A `tower::Service` over every replica of a role; cheap to clone (clones
/// share the replicas). Must be created inside a Tokio runtime.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").field("label", &self.shared.label).finish_non_exhaustive()
    }
}

struct Shared {
    label: String,
    targets: Vec<Target>,
    make: MakeEndpoint,
    options: BalanceOptions,
    replicas: ArcSwap<Vec<Arc<Replica>>>,
    /// Serialises resolutions (the refresher's and a first call's).
    resolving: tokio::sync::Mutex<()>,
    seed: AtomicU64,
}

impl Balanced {
    /// Balances over `urls` (comma-separated in configuration) and starts
    /// re-resolving and probing them in the background; `label` names the
    /// role in logs, errors and metrics.
    pub fn new(label: &str, urls: &[String], make: MakeEndpoint, options: BalanceOptions) -> Result<Self, String> {
        let targets = urls.iter().map(|u| Target::parse(u)).collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(format!("{label}: no URL"));
        }
        let shared = Arc::new(Shared {
            label: label.to_owned(),
            targets,
            make,
            options,
            replicas: ArcSwap::from_pointee(Vec::new()),
            resolving: tokio::sync::Mutex::new(()),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        });
        tokio::spawn(refresh(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// Each known replica, its state and the calls it was given.
    pub fn replicas(&self) -> Vec<ReplicaState> {
        self.shared
            .replicas
            .load()
            .iter()
            .map(|r| ReplicaState {
                addr: r.addr,
                up: r.up.load(Ordering::Relaxed),
                calls: r.calls.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Resolves now (as the refresher does), for callers that must not wait.
    pub async fn resolve(&self) {
        self.shared.resolve().await;
    }
}

impl Shared {
    /// Re-resolves every target; keeps replicas whose address remains.
    async fn resolve(&self) {
        let _one = self.resolving.lock().await;
        let mut found: Vec<(usize, SocketAddr)> = Vec::new();
        let mut failed = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
                Ok(addrs) => found.extend(addrs.map(|a| (i, a))),
                Err(err) => failed.push(format!("{}: {err}", t.host)),
            }
        }
        if found.is_empty() {
            if !failed.is_empty() {
                tracing::warn!(target = %self.label, errors = ?failed, "no replica address resolved; keeping the known ones");
            }
            return;
        }
        found.sort();
        found.dedup_by_key(|(_, a)| *a);
        let current = self.replicas.load();
        let mut next = Vec::with_capacity(found.len());
        for (target, addr) in found {
            if let Some(existing) = current.iter().find(|r| r.addr == addr) {
                next.push(existing.clone());
                continue;
            }
            match (self.make)(&self.targets[target], addr) {
                Ok(endpoint) => {
                    tracing::info!(target = %self.label, %addr, "replica added");
                    next.push(Arc::new(Replica {
                        addr,
                        channel: endpoint.connect_lazy(),
                        up: AtomicBool::new(true),
                        in_flight: AtomicUsize::new(0),
                        calls: AtomicU64::new(0),
                    }));
                }
                Err(err) => tracing::error!(target = %self.label, %addr, %err, "cannot build a channel to the replica"),
            }
        }
        for gone in current.iter().filter(|r| !next.iter().any(|n| n.addr == r.addr)) {
            tracing::info!(target = %self.label, addr = %gone.addr, "replica removed (no longer resolved)");
        }
        self.publish_gauge(&next);
        self.replicas.store(Arc::new(next));
    }

    fn publish_gauge(&self, replicas: &[Arc<Replica>]) {
        let up = replicas.iter().filter(|r| r.up.load(Ordering::Relaxed)).count();
        metrics::gauge!("watchnext_replicas_up", "target" => self.label.clone()).set(up as f64);
        metrics::gauge!("watchnext_replicas_known", "target" => self.label.clone()).set(replicas.len() as f64);
    }

    /// A small xorshift over a shared seed: cheap, good enough to spread.
    fn random(&self) -> u64 {
        let mut x = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    /// Power of two choices among the replicas that are up; any replica
    /// (round robin) when none is.
    fn pick(&self) -> Option<Arc<Replica>> {
        let replicas = self.replicas.load();
        let up: Vec<&Arc<Replica>> = replicas.iter().filter(|r| r.up.load(Ordering::Relaxed)).collect();
        if up.is_empty() {
            return (!replicas.is_empty()).then(|| replicas[self.random() as usize % replicas.len()].clone());
        }
        let a = up[self.random() as usize % up.len()];
        let b = up[self.random() as usize % up.len()];
        let load = |r: &Replica| r.in_flight.load(Ordering::Relaxed);
        Some(if load(b) < load(a) { b.clone() } else { a.clone() })
    }

    fn mark(&self, replica: &Replica, up: bool, why: &str) {
        if replica.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(target = %self.label, addr = %replica.addr, "replica is serving again");
            } else {
                tracing::warn!(target = %self.label, addr = %replica.addr, why, "replica marked down");
            }
            self.publish_gauge(&self.replicas.load());
        }
    }
}

/// Re-resolves every `resolve_every` and probes every `probe_every`, until
/// the last [`Balanced`] is dropped.
async fn refresh(shared: Weak<Shared>) {
    let (resolve_every, probe_every) = match shared.upgrade() {
        Some(s) => {
            s.resolve().await;
            (s.options.resolve_every, s.options.probe_every)
        }
        None => return,
    };
    let mut last_resolve = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(probe_every).await;
        let Some(s) = shared.upgrade() else { return };
        if last_resolve.elapsed() >= resolve_every {
            s.resolve().await;
            last_resolve = tokio::time::Instant::now();
        }
        let replicas = s.replicas.load_full();
        let probes = replicas.iter().map(|r| probe(&s, r.clone()));
        futures_util::future::join_all(probes).await;
    }
}

/// One health check of one replica: SERVING → up, anything else → down.
async fn probe(shared: &Shared, replica: Arc<Replica>) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(replica.channel.clone());
    let mut request =
        tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: shared.options.health_service.clone() });
    let timeout = shared.options.probe_every.max(Duration::from_millis(200));
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, health.check(request)).await;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    match answer {
        Ok(Ok(r)) if r.get_ref().status == serving => shared.mark(&replica, true, ""),
        Ok(Ok(_)) => shared.mark(&replica, false, "health: not serving"),
        Ok(Err(status)) => shared.mark(&replica, false, status.message()),
        Err(_) => shared.mark(&replica, false, "health check timed out"),
    }
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen replica's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            if shared.replicas.load().is_empty() {
                shared.resolve().await;
            }
            let Some(replica) = shared.pick() else {
                let hosts: Vec<String> = shared.targets.iter().map(|t| format!("{}:{}", t.host, t.port)).collect();
                return Err(Box::new(tonic::Status::unavailable(format!(
                    "no replica of {} could be resolved ({}); check endpoints.{} and DNS",
                    shared.label,
                    hosts.join(", "),
                    shared.label
                ))) as BoxError);
            };
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
            replica.calls.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(
                "watchnext_replica_calls_total",
                "target" => shared.label.clone(),
                "replica" => replica.addr.to_string()
            )
            .increment(1);
            let mut channel = replica.channel.clone();
            let result = match channel.ready().await {
                Ok(ready) => ready.call(request).await,
                Err(err) => Err(err),
            };
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
            result.map_err(|err| {
                // Refused, reset or cut mid-call: the replica is gone. Say
                // UNAVAILABLE (tonic would say UNKNOWN for a reset) so that
                // callers can tell it from an answer.
                let mut why = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                shared.mark(&replica, false, &why);
                Box::new(tonic::Status::unavailable(format!(
                    "transport error: {} replica {}: {why}",
                    shared.label, replica.addr
                ))) as BoxError
            })
        })
    }
}

/// Whether a failed call was lost in transport (refused, reset,
/// unreachable, no replica, or the connection cut while the answer's body
/// was being read — tonic reports that last one as UNKNOWN "h2 protocol
/// error" after our balancer has handed the response over): safe to send
/// again, elsewhere, for the idempotent Rank and Generate calls that
/// retry.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() == tonic::Code::Unknown {
        return status.message().starts_with("h2 protocol error");
    }
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    status.message().starts_with("transport error") || status.message().starts_with("no replica")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_default_ports_and_bad_urls_are_named() {
        assert_eq!(
            Target::parse("http://ranker:50051").unwrap(),
            Target { scheme: "http".into(), host: "ranker".into(), port: 50051 }
        );
        assert_eq!(Target::parse("https://ranker").unwrap().port, 443);
        assert_eq!(Target::parse(" http://[::1]:7 ").unwrap().host, "::1");
        for bad in ["ranker:50051", "ftp://x:1", "not a url"] {
            assert!(Target::parse(bad).unwrap_err().contains(bad.trim()), "{bad}");
        }
    }

    #[test]
    fn only_transport_failures_are_retried() {
        assert!(is_transport_failure(&tonic::Status::unavailable("transport error: ranker replica 1.2.3.4:5: reset")));
        assert!(is_transport_failure(&tonic::Status::unavailable("no replica of ranker could be resolved")));
        // An answer from a replica is never sent again, whatever it says.
        assert!(!is_transport_failure(&tonic::Status::unavailable("the event stream is unavailable")));
        assert!(!is_transport_failure(&tonic::Status::resource_exhausted("transport error")));
        // The replica died while its answer was being read (seen in CI).
        let cut = tonic::Status::unknown("h2 protocol error: error reading a body from connection");
        assert!(is_transport_failure(&cut));
        assert!(!is_transport_failure(&tonic::Status::unknown("a handler's own error")));
    }

    fn options() -> BalanceOptions {
        BalanceOptions {
            resolve_every: Duration::from_secs(60),
            probe_every: Duration::from_secs(60),
            health_service: String::new(),
        }
    }

    fn make() -> MakeEndpoint {
        Arc::new(|t: &Target, addr: SocketAddr| {
            tonic::transport::Endpoint::from_shared(format!("{}://{addr}", t.scheme)).map_err(|e| e.to_string())
        })
    }

    #[tokio::test]
    async fn picks_spread_over_up_replicas_and_fall_back_to_any_when_all_are_down() {
        let urls = vec!["http://127.0.0.1:1".to_owned(), "http://127.0.0.1:2".to_owned()];
        let b = Balanced::new("ranker", &urls, make(), options()).unwrap();
        b.resolve().await;
        let replicas = b.shared.replicas.load_full();
        assert_eq!(replicas.len(), 2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.insert(b.shared.pick().unwrap().addr);
        }
        assert_eq!(seen.len(), 2, "both replicas get picks");
        b.shared.mark(&replicas[0], false, "test");
        assert!((0..100).all(|_| b.shared.pick().unwrap().addr == replicas[1].addr), "a down replica gets none");
        b.shared.mark(&replicas[1], false, "test");
        assert!(b.shared.pick().is_some(), "all down: calls still go somewhere");
        let states = b.replicas();
        assert!(states.iter().all(|s| !s.up));
    }

    #[tokio::test]
    async fn a_refused_call_marks_its_replica_down_and_says_unavailable() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let b = Balanced::new("ranker", &[format!("http://127.0.0.1:{port}")], make(), options()).unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(b.clone());
        let status = client.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(is_transport_failure(&status), "{status:?}");
        assert!(!b.replicas()[0].up, "marked down");
    }
}
