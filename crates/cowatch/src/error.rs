//! Errors of the co-watch generator: a bad configuration (naming the field)
//! and snapshot problems (naming the file and what is wrong with it).
//! Observing events and generating candidates never fail.

use std::{io, path::PathBuf};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CowatchError {
    /// A configuration field is out of range.
    #[error("cowatch.{field} {problem}")]
    Config {
        /// The field's name, as in the config file.
        field: String,
        problem: String,
    },
    /// The snapshot file could not be read or written.
    #[error("co-watch snapshot {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The file is not a co-watch snapshot at all.
    #[error("{} is not a co-watch snapshot (it does not start with the snapshot magic bytes)", path.display())]
    NotASnapshot { path: PathBuf },
    /// A snapshot written by another format version.
    #[error("co-watch snapshot {} has format version {found}; this build reads versions 1 to {supported}", path.display())]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
    /// The snapshot is damaged (truncated, bit flips, impossible values);
    /// nothing of it was loaded.
    #[error(
        "co-watch snapshot {} is corrupt ({problem}); nothing was loaded — delete it to rebuild the tables from the \
         feedback log",
        path.display()
    )]
    Corrupt { path: PathBuf, problem: String },
}
