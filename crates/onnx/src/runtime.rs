//! The process-wide ONNX Runtime environment and session creation.
//!
//! ONNX Runtime is loaded once per process (the dynamic library and its
//! environment are global state in ONNX Runtime itself), so [`OnnxRuntime`]
//! is a shared handle obtained with [`OnnxRuntime::init`]. Sessions are
//! created per model with [`SessionOptions`], which carry the execution
//! provider and thread settings from config.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use ort::session::{Session, builder::GraphOptimizationLevel, builder::SessionBuilder};
use watchnext_core::config::{ExecutionProviderKind, OnnxConfig};

use crate::{OnnxError, library::locate_library};

/// How to build sessions: execution provider and threads.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub provider: ExecutionProviderKind,
    pub device_id: i32,
    pub intra_op_threads: usize,
    pub spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self::from(&OnnxConfig::default())
    }
}

impl From<&OnnxConfig> for SessionOptions {
    fn from(config: &OnnxConfig) -> Self {
        Self {
            provider: config.execution_provider,
            device_id: config.device_id,
            intra_op_threads: config.intra_op_threads,
            spinning: config.spinning,
        }
    }
}

/// A model loaded into a session, with the provider that actually runs it.
#[derive(Debug)]
pub struct LoadedSession {
    pub session: Session,
    /// `Cpu` when a requested GPU provider was unavailable.
    pub provider: ExecutionProviderKind,
}

/// Handle on the loaded ONNX Runtime library and its environment.
pub struct OnnxRuntime {
    env: ort::environment::Environment,
    library: PathBuf,
}

impl std::fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntime").field("library", &self.library).finish_non_exhaustive()
    }
}

/// The process's runtime: the first successful `init` wins. A failure is not
/// cached, so a later call (after the user fixed the path) can succeed.
static RUNTIME: OnceLock<Arc<OnnxRuntime>> = OnceLock::new();
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl OnnxRuntime {
    /// Loads the library named by `config.library_path` (or found by
    /// [`locate_library`]) and creates the environment, once per process.
    pub fn init(config: &OnnxConfig) -> Result<Arc<Self>, OnnxError> {
        if let Some(rt) = RUNTIME.get() {
            return Ok(rt.clone());
        }
        let _guard = INIT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rt) = RUNTIME.get() {
            return Ok(rt.clone());
        }
        let library = locate_library(&config.library_path)?;
        let load_err = |reason: String| OnnxError::LibraryLoad { path: library.display().to_string(), reason };
        let builder = ort::init_from(&library).map_err(|e| load_err(e.to_string()))?;
        let env = builder.with_name("watchnext").with_telemetry(false).build().map_err(|e| load_err(e.to_string()))?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        let rt = Arc::new(Self { env, library });
        Ok(RUNTIME.get_or_init(|| rt).clone())
    }

    /// Path of the shared library in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    fn builder(&self, opts: &SessionOptions) -> Result<SessionBuilder, ort::Error> {
        Ok(Session::builder(&self.env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(opts.intra_op_threads)?
            .with_inter_threads(1)?
            .with_intra_op_spinning(opts.spinning)?
            .with_inter_op_spinning(false)?)
    }

    /// Loads a model from bytes with the requested provider, falling back
    /// to CPU (with a warning) when that provider is unavailable.
    pub fn load(&self, model_name: &str, bytes: &[u8], opts: &SessionOptions) -> Result<LoadedSession, OnnxError> {
        let model_err = |e: ort::Error| OnnxError::Model { model: model_name.to_owned(), reason: e.to_string() };
        if opts.provider != ExecutionProviderKind::Cpu {
            match self.load_on_gpu(bytes, opts) {
                Ok(session) => {
                    tracing::info!(model = model_name, provider = opts.provider.name(), "execution provider active");
                    return Ok(LoadedSession { session, provider: opts.provider });
                }
                Err(reason) => tracing::warn!(
                    model = model_name,
                    requested = opts.provider.name(),
                    %reason,
                    "execution provider unavailable; falling back to CPU"
                ),
            }
        }
        let session = self.builder(opts).map_err(model_err)?.commit_from_memory(bytes).map_err(model_err)?;
        tracing::debug!(model = model_name, provider = "cpu", "execution provider active");
        Ok(LoadedSession { session, provider: ExecutionProviderKind::Cpu })
    }

    /// Loads a model file (see [`OnnxRuntime::load`]).
    pub fn load_file(&self, path: &Path, opts: &SessionOptions) -> Result<LoadedSession, OnnxError> {
        let bytes = std::fs::read(path)
            .map_err(|e| OnnxError::Model { model: path.display().to_string(), reason: e.to_string() })?;
        self.load(&path.display().to_string(), &bytes, opts)
    }

    #[cfg_attr(not(any(feature = "cuda", feature = "tensorrt")), allow(clippy::unused_self))]
    fn load_on_gpu(&self, bytes: &[u8], opts: &SessionOptions) -> Result<Session, String> {
        let provider = gpu_provider(opts)?;
        let builder = self.builder(opts).map_err(|e| e.to_string())?;
        let mut builder = builder.with_execution_providers([provider]).map_err(|e| e.to_string())?;
        builder.commit_from_memory(bytes).map_err(|e| e.to_string())
    }
}

/// The requested GPU provider, or why it cannot be had in this build or with
/// this library.
fn gpu_provider(opts: &SessionOptions) -> Result<ort::ep::ExecutionProviderDispatch, String> {
    #[allow(unused_imports)]
    use ort::ep::ExecutionProvider as _;
    match opts.provider {
        ExecutionProviderKind::Cpu => Err("cpu requested".into()),
        #[cfg(feature = "cuda")]
        ExecutionProviderKind::Cuda => {
            if !ort::ep::CUDA::is_available().map_err(|e| e.to_string())? {
                return Err("this ONNX Runtime library has no CUDA support (install the onnxruntime-gpu wheel: \
                            scripts/setup.sh --gpu)"
                    .into());
            }
            Ok(ort::ep::CUDA::default().with_device_id(opts.device_id).build().error_on_failure())
        }
        #[cfg(feature = "tensorrt")]
        ExecutionProviderKind::Tensorrt => {
            if !ort::ep::TensorRT::is_available().map_err(|e| e.to_string())? {
                return Err("this ONNX Runtime library has no TensorRT support (install the onnxruntime-gpu \
                            wheel: scripts/setup.sh --gpu, and TensorRT)"
                    .into());
            }
            Ok(ort::ep::TensorRT::default().with_device_id(opts.device_id).build().error_on_failure())
        }
        #[allow(unreachable_patterns)]
        other => Err(format!("watchnext was built without the `{}` feature", other.name())),
    }
}
