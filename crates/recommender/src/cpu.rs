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
//! **Deadline-aware.** A job comes with the time its caller will wait
//! ([`CpuPool::run_within`]). When the jobs already queued would take
//! longer than that to clear (queued ÷ threads × the recent mean job time),
//! or longer than the pool's own bound (`fanout.cpu_max_queue_wait_ms` in
//! a server, [`CpuPool::with_max_wait`]), the job is refused at once
//! ([`PoolError::TooLate`]) rather than queued to
//! start after its caller has gone; and a queued job whose caller has gone
//! (its deadline fired, its request was cancelled) is skipped by the worker
//! that dequeues it, not run. Under overload the workers spend their time on
//! requests that can still be answered (counted in
//! `watchnext_cpu_jobs_total{outcome}`).
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
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

/// A queued job: runs (true) or finds its caller gone and skips (false).
type Job = Box<dyn FnOnce() -> bool + Send + 'static>;

/// What the workers share with the pool's handle.
#[derive(Debug, Default)]
struct Load {
    /// Jobs sent and not yet taken by a worker.
    queued: AtomicUsize,
    /// Exponentially weighted mean of a job's run time, nanoseconds
    /// (weight 1/16 for each new job); 0 before the first.
    mean_ns: AtomicU64,
}

impl Load {
    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        // A lost update under contention only delays the mean a little.
        let old = self.mean_ns.load(Relaxed);
        let new = if old == 0 { ns } else { old - old / 16 + ns / 16 };
        self.mean_ns.store(new.max(1), Relaxed);
    }
}

/// Why a job did not run to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the CPU pool is busy ({queued} jobs queued, fanout.cpu_queue): overloaded")]
    Busy { queued: usize },
    #[error(
        "the CPU pool's queue ({queued} jobs, ~{:.1} ms to clear) would outlast the call's {:.1} ms: overloaded",
        millis(*.wait),
        millis(*.limit)
    )]
    TooLate { queued: usize, wait: Duration, limit: Duration },
    #[error("the job panicked: {0}")]
    Panicked(String),
    #[error("the CPU pool has stopped")]
    Stopped,
}

/// See the module documentation.
pub struct CpuPool {
    jobs: Sender<Job>,
    threads: usize,
    queue: usize,
    /// The longest any job may expect to wait, whatever its caller allows.
    max_wait: Duration,
    load: Arc<Load>,
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
        Self::with_max_wait(threads, queue, Duration::MAX)
    }

    /// [`Self::new`] refusing any job expected to wait longer than `max_wait`.
    pub fn with_max_wait(threads: usize, queue: usize, max_wait: Duration) -> Arc<Self> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { threads };
        let queue = queue.max(1);
        // A multi-consumer queue: every idle worker waits on it directly and
        // a job wakes one of them (a mutex around a single-consumer
        // receiver cost a second wake-up per job: the next worker taking
        // the lock).
        let (jobs, receiver) = bounded::<Job>(queue);
        let load = Arc::new(Load::default());
        for i in 0..threads {
            let (receiver, load) = (receiver.clone(), load.clone());
            let spawned =
                std::thread::Builder::new().name(format!("watchnext-cpu-{i}")).spawn(move || work(&receiver, &load));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a CPU pool thread");
            }
        }
        Arc::new(Self { jobs, threads, queue, max_wait, load })
    }

    /// The time the jobs queued now would take to clear, from the recent
    /// mean job time (zero when nothing is queued or nothing has run yet).
    pub fn expected_wait(&self) -> (usize, Duration) {
        let queued = self.load.queued.load(Relaxed);
        let rounds = queued.div_ceil(self.threads.max(1)) as u64;
        (queued, Duration::from_nanos(self.load.mean_ns.load(Relaxed).saturating_mul(rounds)))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a worker; the future resolves with its answer. Refused
    /// at once when the queue is full. Dropping the future before the job
    /// starts withdraws it.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl Future<Output = Result<R, PoolError>> + Send + 'static {
        self.run_within(Duration::MAX, f)
    }

    /// [`Self::run`] for a caller that waits at most `limit`: refused at
    /// once ([`PoolError::TooLate`]) when the queue would not clear within
    /// it (or within the pool's own longest wait).
    pub fn run_within<R: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl Future<Output = Result<R, PoolError>> + Send + 'static {
        let limit = limit.min(self.max_wait);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return false;
            }
            let answer = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned())
            });
            let _ = tx.send(answer);
            true
        });
        let (queued, wait) = self.expected_wait();
        let sent = if queued > 0 && wait > limit {
            metrics::counter!("watchnext_cpu_jobs_total", "outcome" => "refused_too_late").increment(1);
            Err(PoolError::TooLate { queued, wait, limit })
        } else {
            self.load.queued.fetch_add(1, Relaxed);
            match self.jobs.try_send(job) {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.load.queued.fetch_sub(1, Relaxed);
                    match e {
                        TrySendError::Full(_) => {
                            metrics::counter!("watchnext_cpu_jobs_total", "outcome" => "refused_full").increment(1);
                            Err(PoolError::Busy { queued: self.queue })
                        }
                        TrySendError::Disconnected(_) => Err(PoolError::Stopped),
                    }
                }
            }
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
        Self::with_max_wait(threads, queue, Duration::MAX)
    }

    /// [`Self::new`] with a longest expected wait for any job.
    pub fn with_max_wait(threads: usize, queue: usize, max_wait: Duration) -> Self {
        Self {
            generators: CpuPool::with_max_wait(threads, queue, max_wait),
            ranker: CpuPool::with_max_wait(threads, queue, max_wait),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn work(receiver: &Receiver<Job>, load: &Load) {
    loop {
        let Ok(job) = receiver.recv() else { return };
        load.queued.fetch_sub(1, Relaxed);
        let started = Instant::now();
        if job() {
            load.observe(started.elapsed());
            metrics::counter!("watchnext_cpu_jobs_total", "outcome" => "ran").increment(1);
        } else {
            metrics::counter!("watchnext_cpu_jobs_total", "outcome" => "skipped_caller_gone").increment(1);
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
    async fn a_job_whose_caller_left_is_not_run() {
        let pool = CpuPool::new(1, 4);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocked = pool.run(move || gate.recv().is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let abandoned = pool.run(move || counter.fetch_add(1, Relaxed));
        assert_eq!(pool.expected_wait().0, 1, "queued behind the blocked job");
        drop(abandoned);
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(true));
        // A later job runs after the abandoned one was taken off the queue.
        assert_eq!(pool.run(|| 5).await, Ok(5));
        assert_eq!(ran.load(Relaxed), 0, "the abandoned job never ran");
        assert_eq!(pool.expected_wait().0, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_queue_that_outlasts_the_callers_deadline_refuses_at_once() {
        let pool = CpuPool::new(1, 64);
        // Teach the pool that a job takes ~20 ms.
        for _ in 0..3 {
            pool.run(|| std::thread::sleep(Duration::from_millis(20))).await.unwrap();
        }
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocked = pool.run(move || gate.recv().is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued: Vec<_> = (0..5).map(|i| pool.run(move || i)).collect();
        let (n, wait) = pool.expected_wait();
        assert_eq!(n, 5);
        assert!(wait >= Duration::from_millis(50), "5 rounds of ~20 ms: {wait:?}");
        let started = std::time::Instant::now();
        let late = pool.run_within(Duration::from_millis(10), || 9).await;
        assert!(matches!(late, Err(PoolError::TooLate { queued: 5, .. })), "{late:?}");
        assert!(started.elapsed() < Duration::from_millis(10), "refused without waiting");
        assert!(late.unwrap_err().to_string().contains("would outlast the call's 10.0 ms"));
        // A caller with time to spare still queues.
        let patient = pool.run_within(Duration::from_secs(30), || 10);
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(true));
        for (i, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await, Ok(i));
        }
        assert_eq!(patient.await, Ok(10));
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
