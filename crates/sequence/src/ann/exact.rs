//! Exact search: every vector scored, the best `k` kept in a small heap.
//! The ground truth recall is measured against, and the right index for a
//! small catalogue.

use std::collections::BinaryHeap;

use super::kernel::{dot_padded, key_distance, key_node, pack};
use super::{AnnError, AnnIndex, Embeddings, check_query};

/// A full scan over vectors stored flat and padded.
#[derive(Debug, Clone)]
pub struct ExactIndex {
    /// The vectors' dimension.
    dim: usize,
    /// Floats per stored vector (`dim` padded for the kernel).
    stride: usize,
    /// The caller's ids by position.
    ids: Vec<u32>,
    /// Vector `i` is `vectors[i * stride..][..stride]`.
    vectors: Vec<f32>,
}

impl ExactIndex {
    /// Copies the vectors.
    pub fn build(embeddings: &Embeddings) -> Self {
        let (stride, vectors) = embeddings.padded_data();
        Self { dim: embeddings.dim(), stride, ids: embeddings.ids().to_vec(), vectors }
    }
}

impl AnnIndex for ExactIndex {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn memory_bytes(&self) -> usize {
        self.vectors.len() * 4 + self.ids.len() * 4
    }

    fn search_into(&self, query: &[f32], k: usize, _ef: usize, out: &mut Vec<(u32, f32)>) -> Result<(), AnnError> {
        check_query(self.dim, query)?;
        out.clear();
        let k = k.min(self.ids.len());
        if k == 0 {
            return Ok(());
        }
        let mut q = vec![0.0; self.stride];
        q[..self.dim].copy_from_slice(query);
        // A max-heap of (−score, position): its top is the worst kept, and
        // ties go to the lower position on every run.
        let mut heap = BinaryHeap::with_capacity(k + 1);
        for (i, v) in self.vectors.chunks_exact(self.stride).enumerate() {
            let key = pack(-dot_padded(&q, v), i as u32);
            if heap.len() < k {
                heap.push(key);
            } else if heap.peek().is_some_and(|&worst| key < worst) {
                heap.pop();
                heap.push(key);
            }
        }
        out.extend(
            heap.into_sorted_vec().into_iter().map(|key| (self.ids[key_node(key) as usize], -key_distance(key))),
        );
        Ok(())
    }
}
