//! The layout of a data folder (`data.dir`), in one place:
//!
//! ```text
//! <data.dir>/
//!   catalog.jsonl     the video catalogue (core::catalog)
//!   world.json        the synthetic world's config, when the data is simulated:
//!                     rebuilding the world from it recovers all ground truth
//!   feedback/         the feedback log: segment files and a LOCK file
//!   exports/          Parquet exports (events, training rows)
//!   models/           trained model directories
//! ```

use std::path::{Path, PathBuf};

/// A data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn catalog(&self) -> PathBuf {
        self.root.join(crate::catalog::CATALOG_FILE)
    }

    pub fn world_config(&self) -> PathBuf {
        self.root.join("world.json")
    }

    pub fn feedback_log(&self) -> PathBuf {
        self.root.join("feedback")
    }

    pub fn exports(&self) -> PathBuf {
        self.root.join("exports")
    }

    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Sequence-model directories, one per version.
    pub fn sequence_models(&self) -> PathBuf {
        self.root.join("sequence")
    }
}
