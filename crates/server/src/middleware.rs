//! The tower layer every gRPC call passes through.
//!
//! - **Whole bodies first.** Every watchnext RPC takes one request message,
//!   so the layer receives a call's whole body before the call runs or
//!   counts against any limit, within `server.request_body_timeout_ms`
//!   (DEADLINE_EXCEEDED past it). A client that sends headers and never
//!   finishes its body holds a stream on its own connection (at most
//!   `server.max_streams_per_connection`), never a slot other clients need.
//!   Reflection (a bidirectional stream) passes through untouched.
//! - **Access** ([`crate::auth`]): the caller's credential is checked
//!   against the RPC's policy from the headers, before the body is read;
//!   a `Feedback.Record` caller over its byte allowance is refused before
//!   its body is read too, and charged for the body it sends. The caller
//!   travels to the service as a request extension ([`crate::auth::Caller`]).
//! - **Load shedding.** At most `server.max_concurrent_requests` calls run at
//!   once; one more is answered `RESOURCE_EXHAUSTED` at once instead of
//!   queueing (a queue only turns overload into timeouts for everyone).
//!   Health checks and reflection are never shed, so an overloaded pod is not
//!   also declared dead by its liveness probe.
//! - **Deadlines.** A call whose client deadline (`grpc-timeout`) passes
//!   before its answer is answered `DEADLINE_EXCEEDED` by this layer, a
//!   moment before the deadline (1/50 of it, 2–20 ms), rather than
//!   `CANCELLED` by the transport's own timer (tonic's choice of code): a
//!   client sees the status gRPC defines for a deadline, with a message
//!   saying what to do.
//! - **Metrics.** `watchnext_grpc_requests_total{rpc, code}` and
//!   `watchnext_grpc_request_duration_seconds{rpc}`. Every watchnext RPC is
//!   unary, so the gRPC status of a failed call is in the response headers
//!   (a "trailers-only" response) and a call without one succeeded.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::auth::{Auth, Policy};

/// Metric names, shared with the tests and dashboards.
pub const REQUESTS_TOTAL: &str = "watchnext_grpc_requests_total";
pub const REQUEST_DURATION: &str = "watchnext_grpc_request_duration_seconds";

/// Adds body buffering, load shedding and per-RPC metrics.
#[derive(Debug, Clone)]
pub struct RpcLayer {
    permits: Arc<Semaphore>,
    body_timeout: Duration,
    auth: Arc<Auth>,
}

impl RpcLayer {
    pub fn new(max_concurrent: usize, body_timeout: Duration, auth: Arc<Auth>) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent)), body_timeout, auth }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, permits: self.permits.clone(), body_timeout: self.body_timeout, auth: self.auth.clone() }
    }
}

/// See [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
    permits: Arc<Semaphore>,
    body_timeout: Duration,
    auth: Arc<Auth>,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || streaming_request(path)
}

/// RPCs whose request is a stream (its body ends when the client is done).
fn streaming_request(path: &str) -> bool {
    path.starts_with("/grpc.reflection.")
}

fn record(path: &str, code: tonic::Code, started: Instant) {
    // Unknown paths would let any client create label values; fold them.
    let rpc = if code == tonic::Code::Unimplemented { "unknown".to_owned() } else { path.to_owned() };
    let code = format!("{code:?}");
    metrics::counter!(REQUESTS_TOTAL, "rpc" => rpc.clone(), "code" => code).increment(1);
    metrics::histogram!(REQUEST_DURATION, "rpc" => rpc).record(started.elapsed().as_secs_f64());
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A `grpc-timeout` value as a duration (`100m`, `2S`, `500u`…); `None`
/// when absent or malformed (then the call has no deadline).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3_600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// How long before the client's deadline this layer answers
/// DEADLINE_EXCEEDED: ahead of the transport's own timer on the same clock.
fn deadline_margin(deadline: Duration) -> Duration {
    (deadline / 50).clamp(Duration::from_millis(2), Duration::from_millis(20))
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for RpcService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let (permits, body_timeout, auth) = (self.permits.clone(), self.body_timeout, self.auth.clone());
        // The ready service is the one polled; keep a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let ext = request.extensions();
            let (peer, tls_role) = match ext.get::<crate::tls::TlsPeer>() {
                Some(tls) => (Some(tls.remote_addr.ip()), tls.verified_client),
                None => (
                    ext.get::<tonic::transport::server::TcpConnectInfo>().and_then(|i| i.remote_addr()).map(|a| a.ip()),
                    false,
                ),
            };
            let caller = match auth.admit(&path, request.headers(), peer, tls_role) {
                Ok(caller) => caller,
                Err(status) => {
                    record(&path, status.code(), started);
                    return Ok(status.into_http());
                }
            };
            let limited = crate::auth::policy(&path) == Policy::Record;
            if limited && let Err(status) = auth.check_bytes(&caller) {
                record(&path, status.code(), started);
                return Ok(status.into_http());
            }
            let mut request = if streaming_request(&path) {
                request
            } else {
                let (parts, body) = request.into_parts();
                let received = tokio::time::timeout(body_timeout, http_body_util::BodyExt::collect(body)).await;
                let bytes = match received {
                    Ok(Ok(collected)) => collected.to_bytes(),
                    Ok(Err(err)) => {
                        record(&path, tonic::Code::Cancelled, started);
                        let status = tonic::Status::cancelled(format!("the request body could not be read: {err}"));
                        return Ok(status.into_http());
                    }
                    Err(_) => {
                        record(&path, tonic::Code::DeadlineExceeded, started);
                        let status = tonic::Status::deadline_exceeded(format!(
                            "the request body did not arrive within {} ms of its headers \
                             (server.request_body_timeout_ms)",
                            body_timeout.as_millis()
                        ));
                        return Ok(status.into_http());
                    }
                };
                if limited && let Err(status) = auth.charge_bytes(&caller, bytes.len()) {
                    record(&path, status.code(), started);
                    return Ok(status.into_http());
                }
                http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)))
            };
            request.extensions_mut().insert(caller);
            let permit = if exempt(&path) { None } else { Some(permits.try_acquire_owned()) };
            let _permit = match permit {
                Some(Err(_)) => {
                    record(&path, tonic::Code::ResourceExhausted, started);
                    let status = tonic::Status::resource_exhausted(
                        "server overloaded: too many requests in flight (server.max_concurrent_requests); retry \
                         with backoff",
                    );
                    return Ok(status.into_http());
                }
                Some(Ok(permit)) => Some(permit),
                None => None,
            };
            let deadline = if exempt(&path) { None } else { grpc_timeout(request.headers()) };
            let response = match deadline {
                None => inner.call(request).await?,
                Some(deadline) => {
                    let left = deadline.saturating_sub(deadline_margin(deadline)).saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, inner.call(request)).await {
                        Ok(response) => response?,
                        Err(_) => {
                            record(&path, tonic::Code::DeadlineExceeded, started);
                            let status = tonic::Status::deadline_exceeded(format!(
                                "the client's deadline ({} ms) passed before the answer: the server is busy or the \
                                 deadline is shorter than this call takes; retry with backoff or a longer deadline",
                                deadline.as_millis()
                            ));
                            return Ok(status.into_http());
                        }
                    }
                }
            };
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from);
            record(&path, code, started);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt as _;

    use super::*;

    fn req(path: &str) -> http::Request<tonic::body::Body> {
        http::Request::builder().uri(path).body(tonic::body::Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn a_stalled_body_holds_no_slot_and_times_out() {
        let inner = tower::service_fn(|_r: http::Request<tonic::body::Body>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
        let mut svc = RpcLayer::new(1, Duration::from_millis(200), Auth::open()).layer(inner);
        let stalled = || {
            let never = tokio_stream::pending::<Result<http_body::Frame<bytes::Bytes>, Infallible>>();
            let body = tonic::body::Body::new(http_body_util::StreamBody::new(never));
            http::Request::builder().uri("/watchnext.v1.Feedback/Record").body(body).expect("request")
        };
        let waiting: Vec<_> = (0..3).map(|_| tokio::spawn(svc.clone().call(stalled()))).collect::<Vec<_>>();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Three bodies are still on their way: the only slot is free for a whole call.
        let ok = svc.ready().await.expect("ready").call(req("/watchnext.v1.Ranker/Rank")).await.expect("response");
        assert!(ok.headers().get("grpc-status").is_none(), "served while others stall: {:?}", ok.headers());
        for call in waiting {
            let response = call.await.expect("join").expect("response");
            assert_eq!(
                response.headers().get("grpc-status").map(|v| v.to_str().ok()),
                Some(Some("4")),
                "DEADLINE_EXCEEDED"
            );
        }
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded_not_cancelled() {
        let inner = tower::service_fn(|_r: http::Request<tonic::body::Body>| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
        let mut svc = RpcLayer::new(4, Duration::from_secs(5), Auth::open()).layer(inner);
        let with_deadline = |path: &str, timeout: &str| {
            http::Request::builder()
                .uri(path)
                .header("grpc-timeout", timeout)
                .body(tonic::body::Body::empty())
                .expect("request")
        };
        let started = Instant::now();
        let late = svc.ready().await.expect("ready").call(with_deadline("/watchnext.v1.Ranker/Rank", "100m"));
        let late = late.await.expect("response");
        assert_eq!(late.headers().get("grpc-status").map(|v| v.to_str().ok()), Some(Some("4")), "DEADLINE_EXCEEDED");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90) && waited < Duration::from_millis(350), "{waited:?}");
        // Time to spare: answered normally; health checks are never cut.
        let ok = svc.ready().await.expect("ready").call(with_deadline("/watchnext.v1.Ranker/Rank", "5S"));
        assert!(ok.await.expect("response").headers().get("grpc-status").is_none());
        let health = svc.ready().await.expect("ready").call(with_deadline("/grpc.health.v1.Health/Check", "100m"));
        assert!(health.await.expect("response").headers().get("grpc-status").is_none());
    }

    #[test]
    fn grpc_timeout_units_and_margins() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(deadline_margin(Duration::from_millis(10)), Duration::from_millis(2));
        assert_eq!(deadline_margin(Duration::from_millis(500)), Duration::from_millis(10));
        assert_eq!(deadline_margin(Duration::from_secs(60)), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn sheds_calls_beyond_the_limit_but_never_health_checks() {
        // Non-health calls wait at this gate until the test opens it.
        let gate = Arc::new(Semaphore::new(0));
        let inner_gate = gate.clone();
        let inner = tower::service_fn(move |r: http::Request<tonic::body::Body>| {
            let gate = inner_gate.clone();
            async move {
                if !r.uri().path().starts_with("/grpc.health.") {
                    let _ = gate.acquire().await.expect("gate open");
                }
                Ok::<_, Infallible>(http::Response::new(String::new()))
            }
        });
        let mut svc = RpcLayer::new(1, Duration::from_secs(5), Auth::open()).layer(inner);

        let first = tokio::spawn(svc.ready().await.expect("ready").call(req("/watchnext.v1.Ranker/Rank")));
        // The slot is taken once the first call's (empty) body is in.
        while svc.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let shed = svc.ready().await.expect("ready").call(req("/watchnext.v1.Ranker/Rank")).await.expect("response");
        assert_eq!(shed.headers().get("grpc-status").map(|v| v.to_str().ok()), Some(Some("8")), "RESOURCE_EXHAUSTED");

        let health = svc.ready().await.expect("ready").call(req("/grpc.health.v1.Health/Check")).await.expect("ok");
        assert!(health.headers().get("grpc-status").is_none(), "health is never shed");

        gate.add_permits(1);
        let first = first.await.expect("join").expect("response");
        assert!(first.headers().get("grpc-status").is_none());
        // The permit came back: the next call runs.
        gate.add_permits(1);
        let again = svc.ready().await.expect("ready").call(req("/watchnext.v1.Ranker/Rank")).await.expect("response");
        assert!(again.headers().get("grpc-status").is_none());
    }
}
