//! The append-only feedback log: what `Feedback.Record` acknowledges.
//!
//! A log is a folder of segment files (format in [`crate::segment`]) plus a
//! `LOCK` file that keeps a second process from opening it. One writer
//! thread owns the newest segment; every [`FeedbackLog`] handle (cheap to
//! clone, `Send + Sync`) sends it encoded batches and waits for the answer.
//! An [`AppendAck`] means every event of the batch is written *and*
//! fsynced: a crash after it cannot lose them. See [`writer`] for group
//! commit and failure handling, [`recovery`] for what `open` repairs,
//! [`reader`] for reading while writing.
//!
//! ```no_run
//! # async fn demo(events: Vec<watchnext_core::event::Event>) -> Result<(), watchnext_feedback::LogError> {
//! use watchnext_feedback::log::{FeedbackLog, LogOptions};
//! let (log, report) = FeedbackLog::open("data/feedback", LogOptions::default())?;
//! let ack = log.append(events).await?; // durable now
//! for item in log.reader(ack.first_seq)? {
//!     let (seq, event) = item?;
//! }
//! # Ok(()) }
//! ```

mod reader;
mod recovery;
mod sink;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering, mpsc},
    thread::JoinHandle,
    time::Duration,
};

pub use reader::{LogReader, ReadProblem};
pub use recovery::{RecoveryReport, SegmentProblem, TruncatedTail};
pub use sink::{BULK_BATCH_BYTES, BulkSummary, LogSink};
use watchnext_core::event::Event;
use writer::{Batch, Reply, Shared, Writer};

use crate::{
    error::LogError,
    segment::{HEADER_LEN, MAX_RECORD_BYTES, encode_event},
};

/// Name of the lock file inside a log folder.
pub const LOCK_FILE: &str = "LOCK";

/// How the log writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A new segment starts before a batch would take the current one past
    /// this size (a single batch larger than this gets a segment of its
    /// own). Smaller segments mean shorter recovery scans and finer-grained
    /// retention; larger ones fewer files. Default 128 MiB.
    pub segment_max_bytes: u64,
    /// After the first batch of a group arrives, how long the writer waits
    /// for more before writing. Zero (the default) writes at once: groups
    /// then form naturally from what queues up during the previous fsync,
    /// which gives the lowest latency. A few milliseconds trade latency for
    /// fewer fsyncs under light concurrent load.
    pub max_batch_wait: Duration,
    /// The writer stops adding batches to a group beyond this many bytes, so
    /// one commit's buffer and latency stay bounded. Default 32 MiB.
    pub max_group_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { segment_max_bytes: 128 << 20, max_batch_wait: Duration::ZERO, max_group_bytes: 32 << 20 }
    }
}

/// The answer to an append: the sequence numbers its events got, dense and
/// in batch order (`last_seq - first_seq + 1` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Counters since the log was opened, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The last durable sequence number (of the whole log, not only this run).
    pub last_seq: u64,
    /// `fdatasync` calls on segments (one per commit).
    pub fsyncs: u64,
    /// Groups written, each with one fsync.
    pub commits: u64,
    /// Batches acknowledged; `batches / commits` is the group-commit factor.
    pub batches: u64,
    /// Events acknowledged.
    pub events: u64,
    /// Segment files in the folder.
    pub segments: u64,
}

/// A handle on an open log; clones share the one writer. The writer thread
/// stops when the last handle is dropped (everything acknowledged is
/// already durable, so nothing needs flushing).
#[derive(Debug, Clone)]
pub struct FeedbackLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// The writer's queue. An unbounded std channel: every sender waits for
    /// its answer, so the queue never holds more than one batch per waiting
    /// caller (two per bulk writer), and sending never blocks an async task.
    /// `Option` only so that `Drop` can close it before joining the thread.
    tx: Option<mpsc::Sender<Batch>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Holds the folder's lock for as long as the log is open.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "feedback log writer thread panicked");
        }
    }
}

impl FeedbackLog {
    /// Opens (or creates) the log in `dir`, recovering it first (see
    /// [`recovery`]), and starts its writer thread.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<(Self, RecoveryReport), LogError> {
        let dir = dir.as_ref().to_path_buf();
        if options.segment_max_bytes <= HEADER_LEN || options.max_group_bytes == 0 {
            return Err(LogError::InvalidOptions(format!(
                "segment_max_bytes must be more than {HEADER_LEN} and max_group_bytes more than 0 (got {} and {})",
                options.segment_max_bytes, options.max_group_bytes
            )));
        }
        fs::create_dir_all(&dir).map_err(LogError::io("creating", dir.as_path()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(LogError::io("opening", lock_path.as_path()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked { dir }),
            Err(TryLockError::Error(source)) => return Err(LogError::Io { what: "locking", path: lock_path, source }),
        }

        let recovered = recovery::recover(&dir)?;
        let report = recovered.report;
        let shared = Arc::new(Shared::default());
        shared.publish_durable(recovered.next_seq - 1);
        shared.segments.store(report.segments as u64, Ordering::Relaxed);
        let writer = Writer::new(
            dir.clone(),
            recovered.file,
            recovered.segment,
            recovered.len,
            recovered.next_seq,
            options,
            Arc::clone(&shared),
        );
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("feedback-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(LogError::io("starting the writer thread for", dir.as_path()))?;
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            last_seq = report.last_seq,
            truncated = report.truncated.is_some(),
            bad_segments = report.bad_segments.len(),
            "feedback log open"
        );
        let inner = Inner { dir, tx: Some(tx), writer: Some(handle), shared, _lock: lock };
        Ok((Self { inner: Arc::new(inner) }, report))
    }

    /// Appends a batch and waits (asynchronously) until it is durable.
    /// Cancelling the future does not cancel the write.
    pub async fn append(&self, events: Vec<Event>) -> Result<AppendAck, LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(encode_batch(&events, Reply::Async(tx))?)?;
        rx.await.map_err(|_| LogError::WriterStopped)?
    }

    /// [`append`](Self::append) for threads that may block (it also works,
    /// blocking the thread, inside an async runtime).
    pub fn append_blocking(&self, events: Vec<Event>) -> Result<AppendAck, LogError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(encode_batch(&events, Reply::Blocking(tx))?)?;
        rx.recv().map_err(|_| LogError::WriterStopped)?
    }

    /// An [`EventSink`](watchnext_core::event::EventSink) for bulk loads.
    pub fn bulk_writer(&self) -> LogSink {
        LogSink::new(self.clone())
    }

    /// Reads the log from sequence number `from_seq` on (1 = everything),
    /// never past what is durable.
    pub fn reader(&self, from_seq: u64) -> Result<LogReader, LogError> {
        let dir = &self.inner.dir;
        crate::segment::list_segments(dir).map_err(LogError::io("listing", dir.as_path()))?;
        Ok(LogReader::new(self.inner.dir.clone(), from_seq, Some(Arc::clone(&self.inner.shared))))
    }

    /// A receiver of the durable watermark (the last fsynced sequence
    /// number): it changes after every commit, so a tailer can read up to
    /// it with [`FeedbackLog::reader`] and then wait for the next change
    /// instead of polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.durable_watch.subscribe()
    }

    /// The last durable sequence number; 0 for an empty log.
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.durable_last_seq()
    }

    /// The log folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// `Err(Broken)` once the log has stopped accepting events (for health checks).
    pub fn check_health(&self) -> Result<(), LogError> {
        match self.inner.shared.broken.get() {
            Some(reason) => Err(LogError::Broken { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> LogStats {
        let s = &self.inner.shared;
        LogStats {
            last_seq: s.durable_last_seq(),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            segments: s.segments.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn send(&self, batch: Batch) -> Result<(), LogError> {
        let tx = self.inner.tx.as_ref().ok_or(LogError::WriterStopped)?;
        tx.send(batch).map_err(|_| LogError::WriterStopped)
    }

    /// Makes the next write fail halfway (tests of the failure path).
    #[cfg(test)]
    pub(crate) fn fail_next_write(&self) {
        self.inner.shared.fail_next_write.store(true, Ordering::Relaxed);
    }
}

/// Encodes a caller's batch (on the caller's thread, so producers encode in parallel).
fn encode_batch(events: &[Event], reply: Reply) -> Result<Batch, LogError> {
    if events.is_empty() {
        return Err(LogError::EmptyBatch);
    }
    let mut payloads = Vec::with_capacity(events.len() * 128);
    let mut lens = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let start = payloads.len();
        encode_event(event, &mut payloads);
        let bytes = payloads.len() - start;
        if bytes > MAX_RECORD_BYTES as usize {
            return Err(LogError::EventTooLarge { index, bytes, max: MAX_RECORD_BYTES });
        }
        lens.push(bytes as u32);
    }
    Ok(Batch { payloads, lens, reply })
}
