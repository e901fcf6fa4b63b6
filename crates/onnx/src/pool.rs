//! A pool of sessions of one model.
//!
//! `ort`'s `Session::run` takes `&mut self`, so concurrent requests need one
//! session each. The pool holds a fixed number of sessions (memory for the
//! weights is shared by ONNX Runtime's prepacking only per session, so keep
//! the pool about as large as the number of threads that run inference) and
//! hands them out; a caller that finds none free waits on a condition
//! variable. Call [`SessionPool::run`] from a blocking thread
//! (`tokio::task::spawn_blocking` or a dedicated pool), never from an async
//! worker.

use std::sync::{Condvar, Mutex, PoisonError};

use ort::session::Session;
use watchnext_core::config::ExecutionProviderKind;

use crate::{OnnxError, OnnxRuntime, SessionOptions};

/// Sessions of one model, checked out one caller at a time.
#[derive(Debug)]
pub struct SessionPool {
    /// Free sessions. A plain mutex: it is held only to push or pop.
    free: Mutex<Vec<Session>>,
    available: Condvar,
    size: usize,
    provider: ExecutionProviderKind,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl SessionPool {
    /// Loads `size` sessions of the model in `bytes`.
    pub fn new(
        runtime: &OnnxRuntime,
        model_name: &str,
        bytes: &[u8],
        opts: &SessionOptions,
        size: usize,
    ) -> Result<Self, OnnxError> {
        let size = size.max(1);
        let mut sessions = Vec::with_capacity(size);
        let mut provider = opts.provider;
        for _ in 0..size {
            let loaded = runtime.load(model_name, bytes, opts)?;
            provider = loaded.provider;
            sessions.push(loaded.session);
        }
        let input_names = sessions[0].inputs().iter().map(|o| o.name().to_owned()).collect();
        let output_names = sessions[0].outputs().iter().map(|o| o.name().to_owned()).collect();
        Ok(Self { free: Mutex::new(sessions), available: Condvar::new(), size, provider, input_names, output_names })
    }

    /// Runs `f` with exclusive use of one session, waiting for one if all are busy.
    pub fn run<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        let session = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(s) = free.pop() {
                    break s;
                }
                free = self.available.wait(free).unwrap_or_else(PoisonError::into_inner);
            }
        };
        // Return the session even if `f` panics, so the pool never shrinks.
        struct Return<'a> {
            pool: &'a SessionPool,
            session: Option<Session>,
        }
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                if let Some(s) = self.session.take() {
                    self.pool.free.lock().unwrap_or_else(PoisonError::into_inner).push(s);
                    self.pool.available.notify_one();
                }
            }
        }
        let mut guard = Return { pool: self, session: None };
        let session = guard.session.insert(session);
        f(session)
    }

    /// Number of sessions.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The execution provider the sessions actually run on.
    pub fn provider(&self) -> ExecutionProviderKind {
        self.provider
    }

    /// The model's input names, in graph order.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// The model's output names, in graph order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }
}
