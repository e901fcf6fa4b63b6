//! Request validation errors. Each crate keeps its own `thiserror` enum for
//! its own failures and maps it exhaustively to a gRPC status; this one is
//! shared because every service validates the same request fields.

use tonic::{Code, Status};

/// A request a client sent is malformed. Always `INVALID_ARGUMENT`: the client
/// must change the request, retrying it unchanged cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {problem}")]
pub struct InvalidRequest {
    /// The request field at fault, as named in the `.proto` (e.g.
    /// `query_video_id`, `events[3].watch.seconds_watched`).
    pub field: String,
    /// What is wrong and what is accepted.
    pub problem: String,
}

impl InvalidRequest {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }

    /// The same error for a field nested under `prefix` (e.g. `events[2]`).
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl From<InvalidRequest> for Status {
    fn from(err: InvalidRequest) -> Self {
        Status::new(Code::InvalidArgument, err.to_string())
    }
}
