//! The watchnext trainer: the multi-task ranking model of Zhao et al.
//! (RecSys 2019) — a shared bottom layer, a Multi-gate Mixture-of-Experts
//! with one softmax gate and one tower per task, a shallow tower that learns
//! selection (position) bias in training and is dropped at serving, and gate
//! dropout against gate polarisation — trained on the data layer's labelled
//! impressions, exported to ONNX with a manifest (the model contract of
//! `watchnext_core::model`), and evaluated offline on the exported artifact.
//!
//! # Why candle
//! Training is written with `candle` (Hugging Face's tensor library with
//! reverse-mode autodiff, `candle-nn` for AdamW and initialisers): it is
//! pure Rust (no libtorch download), actively maintained, and its CPU
//! matmuls (the `gemm` crate) reach a good share of this machine's fp32
//! peak. `burn` was the alternative; its autodiff backend adds a graph layer
//! per op that costs more for a model of many small matmuls, and its API
//! changes faster. What candle lacks (gathering embedding rows with
//! gradients, fused experts) is expressed with `index_select` and one wide
//! matmul per expert layer (experts are batched as one `[E, in, out]`
//! tensor).
//!
//! # Layout
//! - [`config`] — tasks (label, kind, transform, loss and combiner weights,
//!   which are debiased), architecture (MMoE or shared bottom), sizes, gate
//!   dropout, position mode (shallow tower, plain input, absent), optimiser
//!   and schedule.
//! - [`replay`] — training examples from a point-in-time replay of the
//!   serving pipeline: at each logged moment, the candidates the generators
//!   would have proposed (same merge as Recommend), with provenance, labelled
//!   by what the user watched next; logged impressions mixed in.
//! - [`dataset`] — labelled examples as columnar arrays, features built by
//!   the shared schema with point-in-time user history (from the replay, or
//!   from the logged impressions alone), split by time into train /
//!   validation / test.
//! - [`model`] — the network (candle), its forward pass for training (with
//!   bias logits, feature and gate dropout) and for serving (no position).
//! - [`train`] — the loop: time-ordered mini-batches, AdamW, per-epoch
//!   validation, early stopping, checkpoints, resume.
//! - [`export`] — the serving graph as ONNX, written with
//!   `watchnext_onnx::graph`, and the manifest.
//! - [`evaluate`] — offline metrics of an exported model run by ONNX Runtime.

pub mod config;
pub mod dataset;
pub mod evaluate;
pub mod experiments;
pub mod export;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod sequence;
pub mod train;
