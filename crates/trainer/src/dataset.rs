//! Training examples: labelled impressions as columnar, in-memory arrays,
//! in impression time order, with their features built by the shared schema
//! (`watchnext_core::features`) exactly as the ranker will build them.
//!
//! HELPER-OWNED: see the task description; the types below are the
//! interface the model and the evaluation code rely on.

use watchnext_core::features::{DENSE_LEN, SPARSE_LEN};

/// Columnar examples, `len` rows, time ordered.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    pub len: usize,
    /// Task names, in `labels`/`mask` column order.
    pub tasks: Vec<String>,
    /// `len × DENSE_LEN`, row-major.
    pub dense: Vec<f32>,
    /// `len × SPARSE_LEN`, row-major.
    pub sparse: Vec<i64>,
    /// `len × tasks`: the (transformed) label of each task.
    pub labels: Vec<f32>,
    /// `len × tasks`: 1 where the label is observed, 0 where it is not
    /// (e.g. no rating given).
    pub mask: Vec<f32>,
    /// 1-based position the impression was shown at.
    pub position: Vec<u32>,
    /// `Device::index()` of the request.
    pub device: Vec<u8>,
    /// Index into `watchnext_core::event::SOURCES` of the first generator
    /// that proposed the candidate (0 = unspecified).
    pub source: Vec<u8>,
    /// Impression time (Unix epoch ms).
    pub timestamp_ms: Vec<i64>,
    /// Index into `users` / `videos` (for evaluation against ground truth and
    /// per-request metrics).
    pub user: Vec<u32>,
    pub video: Vec<u32>,
    /// Index into `requests` (rows of one shown list share it).
    pub request: Vec<u32>,
    pub users: Vec<String>,
    pub videos: Vec<String>,
    pub requests: Vec<String>,
}

impl Examples {
    pub fn dense_row(&self, i: usize) -> &[f32] {
        &self.dense[i * DENSE_LEN..(i + 1) * DENSE_LEN]
    }

    pub fn sparse_row(&self, i: usize) -> &[i64] {
        &self.sparse[i * SPARSE_LEN..(i + 1) * SPARSE_LEN]
    }
}
