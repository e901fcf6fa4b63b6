//! ONNX Runtime for watchnext, in one place: the ranker, the sequence
//! generator and the trainer's parity and evaluation code all go through it.
//!
//! - [`library`]: finds `libonnxruntime.so` (config → `ORT_DYLIB_PATH` → the
//!   `.ort/` folder `scripts/setup.sh` fills from the official PyPI wheel) and
//!   says how to fix it when it is missing. We load the library at run time
//!   (`ort`'s `load-dynamic`) because its usual CDN download is unreachable
//!   from many build machines, and so one binary serves CPU and GPU builds of
//!   the library alike.
//! - [`runtime`]: the process-wide environment and the session builder that
//!   applies the configured execution provider (CPU, CUDA, TensorRT), falling
//!   back to CPU with a log line when the requested one is unavailable, and
//!   the thread settings (few intra-op threads, no spinning).
//! - [`pool`]: a pool of sessions of one model, because `Session::run` needs
//!   exclusive access; callers run inference on blocking threads, never on
//!   async workers.
//! - [`graph`]: a small ONNX graph writer (a subset of the standard protobuf
//!   schema, compiled with prost) for the trainer's export and for tests that
//!   build their own graphs.

pub mod graph;
pub mod library;
pub mod pool;
pub mod runtime;

pub use graph::GraphBuilder;
pub use library::locate_library;
pub use pool::SessionPool;
pub use runtime::{OnnxRuntime, SessionOptions};

/// What can go wrong with ONNX Runtime.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The shared library is not where we looked.
    #[error(
        "ONNX Runtime library not found (looked at: {searched}). Run `scripts/setup.sh` to fetch it from PyPI into \
         .ort/, or point ORT_DYLIB_PATH (or onnx.library_path in the config) at libonnxruntime.so"
    )]
    LibraryNotFound { searched: String },
    /// The library exists but could not be loaded or initialised.
    #[error("ONNX Runtime library {path} could not be loaded: {reason}")]
    LibraryLoad { path: String, reason: String },
    /// A model could not be loaded into a session.
    #[error("cannot load ONNX model {model}: {reason}")]
    Model { model: String, reason: String },
    /// Inference failed.
    #[error("ONNX Runtime inference failed: {0}")]
    Run(String),
    /// A model file could not be written.
    #[error("cannot write ONNX model {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

impl From<ort::Error> for OnnxError {
    fn from(err: ort::Error) -> Self {
        OnnxError::Run(err.to_string())
    }
}
