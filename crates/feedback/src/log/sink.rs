//! Bulk loads (the synthetic world, the importers): an
//! [`EventSink`] that encodes events as they come, sends them to the writer
//! in large batches and keeps a couple of batches in flight, so encoding
//! the next batch overlaps with writing and fsyncing the previous one.

use std::{
    collections::VecDeque,
    sync::mpsc::{Receiver, sync_channel},
};

use watchnext_core::event::{Event, EventSink};

use super::{
    AppendAck, FeedbackLog,
    writer::{AckResult, Batch, Reply},
};
use crate::{
    error::LogError,
    segment::{MAX_RECORD_BYTES, encode_event},
};

/// Encoded bytes gathered before a batch goes to the writer. Large enough
/// that fsyncs are rare (a few hundred for 10 million events), small enough
/// to keep memory flat.
pub const BULK_BATCH_BYTES: usize = 4 << 20;

/// Batches sent but not yet acknowledged before `push` waits for the oldest.
const MAX_IN_FLIGHT: usize = 2;

/// What a bulk load wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkSummary {
    pub events: u64,
    /// Sequence numbers of the first and last event written; `None` when
    /// nothing was written.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

/// The log's [`EventSink`] for bulk loads, from [`FeedbackLog::bulk_writer`].
/// Call [`finish`](Self::finish): only then is everything durable, and only
/// then are errors of the last batches seen. Events still buffered when it
/// is dropped without `finish` are lost (and a warning says so).
#[derive(Debug)]
pub struct LogSink {
    log: FeedbackLog,
    /// Encoded events of the batch being filled.
    payloads: Vec<u8>,
    lens: Vec<u32>,
    /// Answers still to come, oldest first.
    in_flight: VecDeque<Receiver<AckResult>>,
    /// Events pushed so far, for error messages.
    pushed: u64,
    summary: BulkSummary,
}

impl LogSink {
    pub(crate) fn new(log: FeedbackLog) -> Self {
        Self {
            log,
            payloads: Vec::with_capacity(BULK_BATCH_BYTES + (64 << 10)),
            lens: Vec::new(),
            in_flight: VecDeque::new(),
            pushed: 0,
            summary: BulkSummary::default(),
        }
    }

    /// Writes what is buffered, waits until every batch is durable and says
    /// what was written.
    pub fn finish(mut self) -> Result<BulkSummary, LogError> {
        self.send_buffer()?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(self.summary)
    }

    fn send_buffer(&mut self) -> Result<(), LogError> {
        if self.lens.is_empty() {
            return Ok(());
        }
        let (tx, rx) = sync_channel(1);
        let batch = Batch {
            payloads: std::mem::replace(&mut self.payloads, Vec::with_capacity(BULK_BATCH_BYTES + (64 << 10))),
            lens: std::mem::take(&mut self.lens),
            reply: Reply::Blocking(tx),
        };
        self.log.send(batch)?;
        self.in_flight.push_back(rx);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), LogError> {
        let Some(rx) = self.in_flight.pop_front() else { return Ok(()) };
        let AppendAck { first_seq, last_seq } = rx.recv().map_err(|_| LogError::WriterStopped)??;
        self.summary.events += last_seq - first_seq + 1;
        self.summary.first_seq.get_or_insert(first_seq);
        self.summary.last_seq = Some(last_seq);
        Ok(())
    }
}

impl EventSink for LogSink {
    type Error = LogError;

    fn push(&mut self, event: Event) -> Result<(), LogError> {
        let start = self.payloads.len();
        encode_event(&event, &mut self.payloads);
        let len = self.payloads.len() - start;
        if len > MAX_RECORD_BYTES as usize {
            self.payloads.truncate(start);
            let index = usize::try_from(self.pushed).unwrap_or(usize::MAX);
            return Err(LogError::EventTooLarge { index, bytes: len, max: MAX_RECORD_BYTES });
        }
        self.lens.push(len as u32);
        self.pushed += 1;
        if self.payloads.len() >= BULK_BATCH_BYTES {
            self.send_buffer()?;
        }
        Ok(())
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        if !self.lens.is_empty() {
            tracing::warn!(
                events = self.lens.len(),
                "feedback log bulk writer dropped without finish(); its buffered events were not written"
            );
        }
    }
}
