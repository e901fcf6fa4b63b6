//! Logs and metrics.
//!
//! Logs go to stderr through `tracing`, as text or one JSON object per line
//! (`log.format`), filtered by `RUST_LOG` or `log.level`. Metrics are
//! recorded with the `metrics` facade into one process-wide Prometheus
//! recorder and served at `GET /metrics` on `server.metrics_listen`, apart
//! from the gRPC port so scraping never competes with traffic.

use std::{net::SocketAddr, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};
use watchnext_core::config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber. Later calls are no-ops (tests
/// start many servers in one process).
pub fn init_logging(config: &LogConfig) {
    // ONNX Runtime logs every arena allocation at INFO, and hnsw_rs every
    // build parameter: keep them to warnings unless the level names them.
    let mut level = config.level.clone();
    for noisy in ["ort", "hnsw_rs"] {
        if !config.level.contains(noisy) {
            level.push_str(&format!(",{noisy}=warn"));
        }
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info,ort=warn,hnsw_rs=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    // Already initialised by an earlier server in this process: keep it.
    drop(result);
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(watchnext_core::stages::STAGE_SECONDS.to_owned()),
                    watchnext_core::stages::STAGE_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host program's); then
        // our handle still renders what *we* record through it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = prometheus();
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { handle.render() }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Binds the metrics listener.
pub async fn bind_metrics(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
