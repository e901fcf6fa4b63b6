//! The topic generator's errors. Serving never fails (an unusable request
//! gets an empty list with a note); only building a generator from a bad
//! configuration does.

/// What can go wrong setting up a [`crate::TopicGenerator`].
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// A configuration value is out of range; `field` is its key.
    #[error("topic generator config: `{field}` {problem}")]
    Config {
        /// The key at fault, as spelled in the configuration.
        field: &'static str,
        /// What is wrong and what is accepted.
        problem: String,
    },
}

impl TopicError {
    pub(crate) fn config(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Config { field, problem: problem.into() }
    }
}
