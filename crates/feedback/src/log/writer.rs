//! The one thread that owns the newest segment file.
//!
//! Callers hand it [`Batch`]es over a channel. It blocks for the first one,
//! then takes whatever else is already queued (and, with
//! [`LogOptions::max_batch_wait`](super::LogOptions::max_batch_wait), what
//! arrives within that wait), frames all of it into one buffer, writes it
//! with one `write` and makes it durable with one `fdatasync`; only then
//! does it answer every caller of the group (group commit). While it waits
//! on the disk, new batches queue up and form the next group, so the number
//! of fsyncs falls as the load rises.
//!
//! Failure rules:
//! - A failed `write` is cut off again (`set_len` to the last durable
//!   length); every caller of the group gets [`LogError::WriteFailed`] and
//!   the log goes on.
//! - A failed `fdatasync`, or a failed cut, leaves the file in a state the
//!   writer cannot know (after a failed fsync Linux may already have
//!   dropped the dirty pages), so the log marks itself broken: this and
//!   every later caller gets [`LogError::Broken`], and a restart recovers.
//! - A failed segment creation fails the batches that needed it; the next
//!   batch tries again.

use std::{
    fs::File,
    io::{self, Seek, SeekFrom, Write},
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError},
    },
    time::Instant,
};

use super::{AppendAck, LogOptions, recovery::create_segment};
use crate::{
    error::LogError,
    segment::{FRAME_LEN, HEADER_LEN, SegmentFile, frame_record},
};

pub(crate) type AckResult = Result<AppendAck, LogError>;

/// One caller's batch, already encoded (callers encode in parallel; the
/// writer only frames and checksums).
#[derive(Debug)]
pub(crate) struct Batch {
    /// The prost-encoded events, back to back.
    pub payloads: Vec<u8>,
    /// The length of each event in `payloads`, in order.
    pub lens: Vec<u32>,
    pub reply: Reply,
}

impl Batch {
    /// Bytes the batch takes in a segment.
    pub fn framed_len(&self) -> u64 {
        self.payloads.len() as u64 + (FRAME_LEN * self.lens.len()) as u64
    }
}

/// Where the answer to a batch goes: a tokio oneshot for async callers, a
/// std channel for blocking ones (it works from any thread, inside a tokio
/// runtime or not).
#[derive(Debug)]
pub(crate) enum Reply {
    Async(tokio::sync::oneshot::Sender<AckResult>),
    Blocking(SyncSender<AckResult>),
}

impl Reply {
    fn send(self, result: AckResult) {
        // A caller that went away (a cancelled request) no longer needs the answer.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// State the writer publishes to every handle. Atomics rather than a lock:
/// each value is written by the writer alone and read independently.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Publishes the durable watermark to tailers ([`FeedbackLog::subscribe`](super::FeedbackLog::subscribe)),
    /// so they wait for new records instead of polling.
    pub durable_watch: tokio::sync::watch::Sender<u64>,
    /// The last sequence number that is on disk and fsynced: readers never
    /// go past it, and [`FeedbackLog::last_seq`](super::FeedbackLog::last_seq) reports it.
    pub durable_last_seq: AtomicU64,
    pub fsyncs: AtomicU64,
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub segments: AtomicU64,
    /// Why the log stopped accepting writes; set once, never cleared.
    pub broken: OnceLock<String>,
    /// Tests set this to make the next write fail halfway.
    #[cfg(test)]
    pub fail_next_write: std::sync::atomic::AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            durable_watch: tokio::sync::watch::Sender::new(0),
            durable_last_seq: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            broken: OnceLock::new(),
            #[cfg(test)]
            fail_next_write: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Shared {
    /// Sets the durable watermark and wakes tailers.
    pub fn publish_durable(&self, seq: u64) {
        self.durable_last_seq.store(seq, Ordering::Release);
        self.durable_watch.send_replace(seq);
    }

    pub fn durable_last_seq(&self) -> u64 {
        self.durable_last_seq.load(Ordering::Acquire)
    }
}

/// Why a commit failed; every caller of the group gets its own
/// [`LogError`] made from it (an `io::Error` cannot be cloned).
#[derive(Debug)]
enum CommitFailure {
    WriteFailed { path: PathBuf, message: String },
    Broken(String),
}

impl CommitFailure {
    fn to_error(&self) -> LogError {
        match self {
            CommitFailure::WriteFailed { path, message } => {
                LogError::WriteFailed { path: path.clone(), message: message.clone() }
            }
            CommitFailure::Broken(reason) => LogError::Broken { reason: reason.clone() },
        }
    }
}

/// A batch framed into the commit buffer, waiting for the fsync.
#[derive(Debug)]
struct Pending {
    reply: Reply,
    ack: AppendAck,
}

#[derive(Debug)]
pub(crate) struct Writer {
    pub dir: PathBuf,
    /// The newest segment, positioned at `len`.
    pub file: File,
    pub segment: SegmentFile,
    /// Bytes of the newest segment that are written and fsynced.
    pub len: u64,
    /// The sequence number the next framed record gets.
    pub next_seq: u64,
    pub options: LogOptions,
    pub shared: Arc<Shared>,
    /// Framed records of the commit in progress.
    pub buf: Vec<u8>,
    /// The callers whose records are in `buf`.
    pending: Vec<Pending>,
}

impl Writer {
    pub fn new(
        dir: PathBuf,
        file: File,
        segment: SegmentFile,
        len: u64,
        next_seq: u64,
        options: LogOptions,
        shared: Arc<Shared>,
    ) -> Self {
        Self { dir, file, segment, len, next_seq, options, shared, buf: Vec::new(), pending: Vec::new() }
    }

    /// Serves batches until every sender is gone.
    pub fn run(mut self, rx: Receiver<Batch>) {
        while let Ok(first) = rx.recv() {
            let group = self.gather(first, &rx);
            self.commit_group(group);
        }
        tracing::debug!(last_seq = self.next_seq - 1, "feedback log writer stopped");
    }

    /// The first batch plus everything queued behind it (up to the group limits).
    fn gather(&self, first: Batch, rx: &Receiver<Batch>) -> Vec<Batch> {
        let mut bytes = first.framed_len();
        let mut group = vec![first];
        let deadline = Instant::now() + self.options.max_batch_wait;
        while bytes < self.options.max_group_bytes {
            let next = match rx.try_recv() {
                Ok(batch) => batch,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(batch) => batch,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            bytes += next.framed_len();
            group.push(next);
        }
        group
    }

    fn commit_group(&mut self, group: Vec<Batch>) {
        for batch in group {
            if let Some(reason) = self.shared.broken.get() {
                batch.reply.send(Err(LogError::Broken { reason: reason.clone() }));
                continue;
            }
            let used = self.len + self.buf.len() as u64;
            if used > HEADER_LEN && used + batch.framed_len() > self.options.segment_max_bytes {
                // Seal the current segment with what is framed so far, then start the next one.
                self.commit();
                if let Some(reason) = self.shared.broken.get() {
                    batch.reply.send(Err(LogError::Broken { reason: reason.clone() }));
                    continue;
                }
                if let Err(err) = self.rotate() {
                    tracing::error!(error = %err, "feedback log: cannot start a new segment");
                    batch.reply.send(Err(err));
                    continue;
                }
            }
            let first_seq = self.next_seq;
            let mut at = 0usize;
            for &len in &batch.lens {
                let end = at + len as usize;
                frame_record(&mut self.buf, self.next_seq, &batch.payloads[at..end]);
                at = end;
                self.next_seq += 1;
            }
            let ack = AppendAck { first_seq, last_seq: self.next_seq - 1 };
            self.pending.push(Pending { reply: batch.reply, ack });
        }
        self.commit();
    }

    /// Writes and fsyncs the framed records, then answers their callers.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = self.write_and_sync();
        let pending = std::mem::take(&mut self.pending);
        match result {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                let events = self.next_seq - pending[0].ack.first_seq;
                self.shared.publish_durable(self.next_seq - 1);
                self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.batches.fetch_add(pending.len() as u64, Ordering::Relaxed);
                self.shared.events.fetch_add(events, Ordering::Relaxed);
                for p in pending {
                    p.reply.send(Ok(p.ack));
                }
            }
            Err(failure) => {
                // Nothing of the group is kept: its sequence numbers are handed out again.
                self.next_seq = pending[0].ack.first_seq;
                for p in pending {
                    p.reply.send(Err(failure.to_error()));
                }
            }
        }
        self.buf.clear();
    }

    fn write_and_sync(&mut self) -> Result<(), CommitFailure> {
        if let Err(err) = self.write_buf() {
            let path = self.segment.path.clone();
            tracing::error!(segment = %path.display(), error = %err, "feedback log: write failed; cutting it off");
            let cut = self.file.set_len(self.len).and_then(|()| self.file.seek(SeekFrom::Start(self.len)));
            return match cut {
                Ok(_) => Err(CommitFailure::WriteFailed { path, message: err.to_string() }),
                Err(cut_err) => Err(self.mark_broken(format!(
                    "writing {} failed ({err}) and cutting the partial write off failed too ({cut_err})",
                    path.display()
                ))),
            };
        }
        if let Err(err) = self.file.sync_data() {
            return Err(self.mark_broken(format!("fsync of {} failed ({err})", self.segment.path.display())));
        }
        Ok(())
    }

    fn write_buf(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.shared.fail_next_write.swap(false, Ordering::Relaxed) {
            self.file.write_all(&self.buf[..self.buf.len() / 2])?;
            return Err(io::Error::other("injected write failure"));
        }
        self.file.write_all(&self.buf)
    }

    fn mark_broken(&self, reason: String) -> CommitFailure {
        tracing::error!(%reason, "feedback log: broken; restart the process to recover it");
        CommitFailure::Broken(self.shared.broken.get_or_init(|| reason).clone())
    }

    /// Starts the segment whose first record is `next_seq`. The current one
    /// is fully fsynced at this point (every commit is).
    fn rotate(&mut self) -> Result<(), LogError> {
        let (file, segment) = create_segment(&self.dir, self.next_seq)?;
        tracing::debug!(segment = %segment.path.display(), "feedback log: new segment");
        self.file = file;
        self.segment = segment;
        self.len = HEADER_LEN;
        self.shared.segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
