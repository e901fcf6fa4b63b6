//! The context generator's errors. Serving never fails (an unusable request
//! gets a fallback or empty list with a note); only building a generator
//! from a bad configuration does.

/// What can go wrong setting up a [`crate::ContextGenerator`].
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A configuration value is out of range; `field` is its key.
    #[error("context generator config: `{field}` {problem}")]
    Config {
        /// The key at fault, as spelled in the configuration.
        field: &'static str,
        /// What is wrong and what is accepted.
        problem: String,
    },
}

impl ContextError {
    pub(crate) fn config(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Config { field, problem: problem.into() }
    }
}
