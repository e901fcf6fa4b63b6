//! One bounded pool of threads for a request's CPU work in this process:
//! in-process generators (the sequence model's encoder and ANN search above
//! all) and the in-process ranker's ONNX Runtime call.
//!
//! Why a pool of its own: CPU work on tokio's async workers stalls every
//! other task on that worker, and awaited inline it cannot be interrupted,
//! so a generator's deadline could not fire. Here each piece of work is a
//! job; the request awaits its answer with a timeout, and a job whose
//! request gave up still finishes but its answer is dropped.
//!
//! **Bounded.** `threads` workers (default: one per core) take jobs from a
//! queue of at most `queue` jobs. A job that finds the queue full is refused
//! at once ([`PoolError::Busy`]) instead of waiting: under overload the
//! pipeline answers degraded (a generator left out, or the fused order
//! instead of the ranker's) rather than queueing into everyone's deadline.
//! A panicking job is caught and reported ([`PoolError::Panicked`]); the
//! worker lives on.
//!
//! **Two pools** ([`CpuPools`]), one for generators and one for the ranker,
//! each `fanout.cpu_threads` wide: a generator's job takes microseconds (the
//! sequence model a few milliseconds) under a 50 ms deadline, a ranker's
//! milliseconds; in one queue, generator jobs waited behind other
//! requests' ranker jobs and missed their deadlines under load (measured:
//! degraded answers in `reloading_models_under_load_fails_no_request` with
//! the test suite running beside it).

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job did not run to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the CPU pool is busy ({queued} jobs queued, fanout.cpu_queue): overloaded")]
    Busy { queued: usize },
    #[error("the job panicked: {0}")]
    Panicked(String),
    #[error("the CPU pool has stopped")]
    Stopped,
}

/// See the module documentation.
pub struct CpuPool {
    jobs: SyncSender<Job>,
    threads: usize,
    queue: usize,
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuPool").field("threads", &self.threads).field("queue", &self.queue).finish()
    }
}

impl CpuPool {
    /// `threads` workers (0: one per core) and room for `queue` waiting jobs
    /// (at least 1). The workers stop when the pool is dropped.
    pub fn new(threads: usize, queue: usize) -> Arc<Self> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { threads };
        let queue = queue.max(1);
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(format!("watchnext-cpu-{i}")).spawn(move || work(&receiver));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a CPU pool thread");
            }
        }
        Arc::new(Self { jobs, threads, queue })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a worker; the future resolves with its answer. Refused
    /// at once when the queue is full.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl Future<Output = Result<R, PoolError>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let answer = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned())
            });
            let _ = tx.send(answer);
        });
        let sent = match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(PoolError::Busy { queued: self.queue }),
            Err(TrySendError::Disconnected(_)) => Err(PoolError::Stopped),
        };
        async move {
            sent?;
            match rx.await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(panic)) => Err(PoolError::Panicked(panic)),
                Err(_) => Err(PoolError::Stopped),
            }
        }
    }
}

/// The process's two pools (see the module documentation).
#[derive(Debug, Clone)]
pub struct CpuPools {
    pub generators: Arc<CpuPool>,
    pub ranker: Arc<CpuPool>,
}

impl CpuPools {
    /// Both `threads` wide (0: one per core), each queueing up to `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> Self {
        Self { generators: CpuPool::new(threads, queue), ranker: CpuPool::new(threads, queue) }
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking the next job.
        let next = receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_jobs_off_the_runtime_and_refuses_beyond_the_queue() {
        let pool = CpuPool::new(1, 2);
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        let here = std::thread::current().id();
        let there = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(here, there, "on a worker, not the runtime's thread");

        // One worker held up, two jobs queued: the next is refused at once.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocked = pool.run(move || gate.recv().is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..2).map(|i| pool.run(move || i)).collect();
        let refused = pool.run(|| 9).await;
        assert_eq!(refused, Err(PoolError::Busy { queued: 2 }));
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(true));
        for (i, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await, Ok(i));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_job_is_reported_and_the_worker_lives_on() {
        let pool = CpuPool::new(1, 4);
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert_eq!(err, PoolError::Panicked("boom".into()));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_timeout_can_fire_while_a_job_runs() {
        let pool = CpuPool::new(1, 4);
        let slow = pool.run(|| std::thread::sleep(Duration::from_millis(300)));
        let started = std::time::Instant::now();
        assert!(tokio::time::timeout(Duration::from_millis(20), slow).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(200), "the caller was not held by the job");
    }
}
