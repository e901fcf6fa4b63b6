//! Errors of the feedback crate. Each message says what went wrong and what
//! to do about it, because it ends up in a log line or a gRPC status read by
//! an operator.

use std::{io, path::PathBuf};

/// A failure of the feedback log (opening, appending, reading).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "feedback log: {what} {path}: {source}; check that the folder exists, is writable and the disk is not full"
    )]
    Io { what: &'static str, path: PathBuf, source: io::Error },

    #[error(
        "feedback log folder {dir} is already open (lock file LOCK is held); stop the other watchnext process using \
         it, or give this one another folder"
    )]
    Locked { dir: PathBuf },

    #[error(
        "feedback log segment {path} is the newest segment but its header is bad ({problem}) while it holds data; \
         the log cannot tell where it continues. Move the file out of the folder (its records will be missing) and \
         open the log again"
    )]
    BadLastSegment { path: PathBuf, problem: String },

    #[error("invalid feedback log options: {0}")]
    InvalidOptions(String),

    #[error("the batch is empty; send at least one event")]
    EmptyBatch,

    #[error(
        "event {index} of the batch encodes to {bytes} bytes, more than the {max} bytes a log record can hold; shrink its features"
    )]
    EventTooLarge { index: usize, bytes: usize, max: u32 },

    #[error("writing the batch to {path} failed: {message}; nothing of it was acknowledged, send it again")]
    WriteFailed { path: PathBuf, message: String },

    #[error(
        "the feedback log stopped accepting events after a failure it cannot undo ({reason}); restart the process: \
         opening the log again keeps every acknowledged event and drops the rest"
    )]
    Broken { reason: String },

    #[error("the feedback log writer thread has stopped; restart the process")]
    WriterStopped,
}

impl LogError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { what, path, source }
    }
}

/// A failure while exporting to, or reading from, a Parquet file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}; check that the folder exists and is writable and the disk is not full")]
    Io { path: PathBuf, source: io::Error },

    #[error("{path}: Parquet: {source}")]
    Parquet { path: PathBuf, source: ::parquet::errors::ParquetError },

    #[error("{path}: building a record batch failed: {source}")]
    Arrow { path: PathBuf, source: arrow_schema::ArrowError },

    #[error("{path} is not a training-row file of this version: {problem}; write it again with watchnext-feedback")]
    NotTrainingRows { path: PathBuf, problem: String },

    #[error("reading the feedback log for the export failed: {0}")]
    Log(#[from] LogError),
}
