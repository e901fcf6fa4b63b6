//! The gRPC face of each role: request validation with core's types, then
//! delegation to the role's machinery. Until a role's machinery is part of
//! the build, its RPCs validate the request and then answer
//! `FAILED_PRECONDITION` with a message naming what is missing.

pub mod admin;
pub mod feedback;
pub mod generator;
pub mod ranker;
pub mod recommender;

use std::time::{SystemTime, UNIX_EPOCH};

/// The server's clock in Unix epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The status for an RPC whose machinery this build does not have yet.
pub(crate) fn missing(what: &str) -> tonic::Status {
    tonic::Status::failed_precondition(what.to_owned())
}

/// How a CPU pool refusal reaches a client: a full pool, or one whose
/// queue would outlast the call's deadline, is overload (RESOURCE_EXHAUSTED,
/// retry with backoff); a panicking job is a bug.
pub(crate) fn pool_status(err: watchnext_recommender::cpu::PoolError) -> tonic::Status {
    use watchnext_recommender::cpu::PoolError;
    match err {
        PoolError::Busy { .. } | PoolError::TooLate { .. } => {
            tonic::Status::resource_exhausted(format!("{err}; retry with backoff"))
        }
        PoolError::Panicked(_) | PoolError::Stopped => tonic::Status::internal(err.to_string()),
    }
}
