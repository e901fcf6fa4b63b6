//! The world's errors.

use std::path::PathBuf;

/// Anything that can go wrong building, saving, or running a world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// A configuration value is out of range; `field` is its dotted path
    /// (`catalog.clickbait_fraction`).
    #[error("world config: {field} {problem}")]
    Config { field: String, problem: String },
    /// A configuration file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A configuration file is not valid JSON for [`crate::WorldConfig`].
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// A video id shown to a live user is not in the world's catalogue.
    #[error("video `{id}` (shown at position {position}) is not in the world's catalogue")]
    UnknownVideo { id: String, position: usize },
    /// A live response was given for a request that is not outstanding.
    #[error("request `{request_id}` is not outstanding (already answered, or not drawn from this population)")]
    NotOutstanding { request_id: String },
    /// The event sink refused an event.
    #[error("event sink: {0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

impl WorldError {
    pub(crate) fn config(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Config { field: field.into(), problem: problem.into() }
    }
}
