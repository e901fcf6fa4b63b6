//! The sequence-model candidate generator of watchnext: from a user's recent
//! watches, a user vector, and the videos whose embeddings are nearest it.
//!
//! - [`model`] — the contract with the trainer (`watchnext_trainer::sequence`
//!   trains the model): one directory per version with the encoder as ONNX,
//!   the vocabulary and the video embeddings; crash-safe writes.
//! - [`generator`] — [`SequenceGenerator`]: loads a model directory, warms
//!   the encoder up, builds the index off the request path and swaps it in
//!   atomically; per request, encodes the history with ONNX Runtime and
//!   searches the index.
//! - [`ann`] — the nearest-neighbour layer: one trait ([`ann::AnnIndex`]),
//!   `hnsw_rs` behind it as the default the product asked for, an HNSW of
//!   our own that is several times faster, and exact search for ground
//!   truth and small catalogues.

pub mod ann;
pub mod generator;
pub mod model;

pub use generator::{InstallReport, Loaded, SequenceConfig, SequenceError, SequenceGenerator};
