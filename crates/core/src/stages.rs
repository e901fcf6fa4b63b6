//! Time per stage of a `Recommend`: one Prometheus histogram,
//! `watchnext_stage_seconds{stage}`, that every part of the request path
//! records into, so an operator (and `watchnext loadtest`) sees where a slow
//! request spent its time.
//!
//! Stages, in request order (the names are the `stage` label's values):
//! - `generate_<source>` — one generator's answer as the recommender waited
//!   for it (the CPU pool's queue, or the gRPC hop of a split deployment,
//!   included);
//! - `merge` — fusing the generators' lists with provenance;
//! - `rank` — the ranker call as the recommender waited for it (the CPU
//!   pool's queue or the gRPC hop included); inside it, in the ranker's
//!   process, `features` (the shared schema over every candidate) and
//!   `onnx` (ONNX Runtime's run);
//! - `combine` — per-task predictions to one score, ordering, diversity;
//! - `impressions` — writing the served list to the feedback log (after the
//!   answer unless `fanout.durable_impressions`).
//!
//! This module names them; the recording is `metrics::histogram!` at each
//! stage (the crate that owns the stage depends on `metrics`, not core).

use crate::event::Source;

/// The histogram's name.
pub const STAGE_SECONDS: &str = "watchnext_stage_seconds";

/// Its bucket bounds, seconds: finer than the request-level histograms,
/// since most stages take well under a millisecond.
pub const STAGE_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.003, 0.005, 0.007_5, 0.01,
    0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
];

pub const MERGE: &str = "merge";
pub const RANK: &str = "rank";
pub const FEATURES: &str = "features";
pub const ONNX: &str = "onnx";
pub const COMBINE: &str = "combine";
pub const IMPRESSIONS: &str = "impressions";

/// The stage label of one generator's answer.
pub fn generate(source: Source) -> &'static str {
    crate::registry::index(source).map_or("generate_unspecified", |i| crate::registry::STAGES[i])
}

/// The stages after the generators', in request order.
pub const AFTER_GENERATORS: &[&str] = &[MERGE, RANK, FEATURES, ONNX, COMBINE, IMPRESSIONS];

/// Every stage in request order, the generators' (`generate_*`, registry
/// order) first; what a report lists first (others follow by name).
pub fn order() -> impl Iterator<Item = &'static str> {
    crate::registry::STAGES.iter().chain(AFTER_GENERATORS).copied()
}
