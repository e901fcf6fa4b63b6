//! The `watchnext` process: it wires the roles together and owns everything a
//! service needs around its RPCs.
//!
//! - [`cli`]: the one command-line tool, `watchnext <subcommand>`.
//! - [`app`]: builds the gRPC router for a role (every service in one process
//!   for `all`, the embedded default, or a single role), with health
//!   (`grpc.health.v1`, one status per service), reflection (`v1` and
//!   `v1alpha`), and starts and stops it ([`app::start`], [`app::Running`]).
//! - [`middleware`]: the tower layer every RPC passes through: load shedding
//!   (`RESOURCE_EXHAUSTED` beyond `server.max_concurrent_requests`) and
//!   per-RPC request counts and latency histograms.
//! - [`telemetry`]: `tracing` logs (text or JSON) and the Prometheus
//!   `/metrics` endpoint on its own port.
//! - [`grpc`]: the gRPC face of each role. Handlers validate requests with
//!   core's types, then delegate to the role's library crate; a role whose
//!   machinery is not part of this build answers `FAILED_PRECONDITION` naming
//!   what is missing, never a made-up result.
//!
//! Only this crate knows about all the others: the generators, the ranker
//! and the recommender never import each other.

pub mod app;
pub mod auth;
pub mod cli;
pub mod data;
pub mod demo;
pub mod evaluation;
pub mod examples;
pub mod generators;
pub mod grpc;
pub mod health;
pub mod loadtest;
pub mod middleware;
pub mod providers;
pub mod serving;
pub mod stage_report;
pub mod stream_sync;
pub mod tailer;
pub mod telemetry;
pub mod tls;
pub mod training;
