//! What can go wrong while importing, and what to do about a bad line.

use std::io;

use watchnext_core::catalog::CatalogError;

/// How many `file:line: problem` messages a report keeps; the rest are only
/// counted.
pub const MAX_PROBLEMS: usize = 20;

/// What an importer does with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop at the first malformed line with [`ImportError::Malformed`]
    /// naming its file and line; nothing has reached the sink by then.
    #[default]
    Fail,
    /// Skip it, count it in [`crate::ImportReport::skipped`] and keep the
    /// first [`MAX_PROBLEMS`] messages in [`crate::ImportReport::problems`].
    Skip,
}

/// An import that could not be completed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    /// A line is malformed (and [`OnError::Fail`] was chosen, or the line is
    /// a header without which nothing after it can be read).
    #[error("{path}:{line}: {problem}")]
    Malformed { path: String, line: u64, problem: String },
    /// A file or folder cannot be used at all (unknown layout, missing file).
    #[error("{path}: {problem}")]
    Unusable { path: String, problem: String },
    /// The catalogue given to the generic importer is invalid.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The event sink refused an event.
    #[error("the event sink failed: {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ImportError {
    pub(crate) fn io(path: &str, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    pub(crate) fn unusable(path: &str, problem: impl Into<String>) -> Self {
        Self::Unusable { path: path.to_owned(), problem: problem.into() }
    }

    pub(crate) fn malformed(path: &str, line: u64, problem: impl Into<String>) -> Self {
        Self::Malformed { path: path.to_owned(), line, problem: problem.into() }
    }
}

/// Applies the caller's [`OnError`] to each malformed line.
#[derive(Debug)]
pub(crate) struct Problems {
    on_error: OnError,
    pub(crate) skipped: u64,
    pub(crate) messages: Vec<String>,
}

impl Problems {
    pub(crate) fn new(on_error: OnError) -> Self {
        Self { on_error, skipped: 0, messages: Vec::new() }
    }

    /// Records a malformed line: an error under [`OnError::Fail`], a counted
    /// skip under [`OnError::Skip`].
    pub(crate) fn line(&mut self, path: &str, line: u64, problem: impl Into<String>) -> Result<(), ImportError> {
        let problem = problem.into();
        match self.on_error {
            OnError::Fail => Err(ImportError::malformed(path, line, problem)),
            OnError::Skip => {
                self.skipped += 1;
                if self.messages.len() < MAX_PROBLEMS {
                    tracing::debug!("skipping {path}:{line}: {problem}");
                    self.messages.push(format!("{path}:{line}: {problem}"));
                }
                Ok(())
            }
        }
    }
}
