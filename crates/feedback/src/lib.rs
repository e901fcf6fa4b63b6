//! The durable feedback log of watchnext and what is built from it. Every
//! impression the recommender serves and every click, watch, like, dismiss
//! and rating a client reports (`Feedback.Record`), and every event the
//! synthetic world or an importer produces, is appended here; the co-watch
//! tables follow the log online, and the trainer reads labelled training
//! rows joined from it.
//!
//! # The log ([`log`])
//!
//! A folder of segment files `seg-<first_seq:020>.wal` plus a `LOCK` file.
//! Each segment is a header followed by records ([`segment`] has the
//! details):
//!
//! ```text
//! header  | "WNXFBLOG" (8) | version u32 = 1 | reserved u32 | first_seq u64 |   24 bytes
//! record  | len u32 | crc32c(seq ++ payload) u32 | seq u64 | payload (len bytes) |
//!           payload = prost-encoded watchnext.v1.FeedbackEvent; all integers little-endian
//! ```
//!
//! Sequence numbers are global, dense and start at 1; the log's order is
//! append order, which is time order.
//!
//! **Group commit.** One writer thread owns the newest segment. Callers
//! ([`FeedbackLog::append`], async, or [`FeedbackLog::append_blocking`])
//! encode their batch and queue it; the writer takes everything queued,
//! writes it with one `write`, calls `fdatasync` once and only then answers
//! all of those callers. An acknowledgement therefore means the whole batch
//! is on disk; a batch is never split across acknowledgements. Under load
//! many batches share one fsync. When a batch would take the segment past
//! `segment_max_bytes`, the segment is fsynced and a new one is created
//! (written under a temporary name, renamed, folder fsynced).
//!
//! **Recovery.** [`FeedbackLog::open`] checks every segment's header and
//! scans the newest segment record by record. At the first record that is
//! short, has an impossible length, a wrong checksum, a wrong sequence
//! number or a payload that is not a valid event, the segment is cut (the
//! cut bytes are kept aside in `<segment>.dropped-<offset>`), and the
//! [`RecoveryReport`] says how much went. Since acknowledgements wait for
//! fsync, a crash can only tear records that were never acknowledged.
//! Damage inside an older segment is never fatal: readers report it and
//! carry on with the next segment. No bad file makes this crate panic.
//!
//! **Reading.** [`LogReader`] streams `(seq, Event)` across segments
//! through a small buffer, from any sequence number, and — through an open
//! log — never past the last fsynced record, so it can run while the log is
//! written. Bulk producers write through [`LogSink`], an
//! [`EventSink`](watchnext_core::event::EventSink) that sends large batches.
//!
//! # One interface over backends ([`stream`])
//!
//! [`EventStream`]: append durably, follow from a sequence number, health.
//! The log above implements it; so does the NATS JetStream backend
//! (`watchnext-nats`), for deployments that outgrow one machine.
//!
//! # The join ([`join`])
//!
//! Impressions ⋈ outcomes → [`TrainingRow`]s, streaming, in one pass over
//! the log with a bounded number of pending rows: an impression opens a row
//! keyed by (request id, user, video); outcomes with the same key within the
//! attribution window (default 6 hours) set its labels (click, watch
//! seconds and fraction, like, dismiss, rating); rows are emitted in
//! impression order once the stream's clock passes their window, or early
//! (counted) when the pending cap is reached. Organic and unmatched events
//! are counted, never turned into rows.
//!
//! # Parquet ([`parquet`])
//!
//! Raw events and training rows to Snappy-compressed Parquet, written
//! crash-safely (temporary file, fsync, rename), and a streaming reader of
//! training-row files for the trainer.

pub mod error;
pub mod join;
pub mod log;
pub mod parquet;
pub mod segment;
pub mod stream;

pub use error::{ExportError, LogError};
pub use join::{JoinOptions, JoinSummary, Joiner, TrainingRow, join_events};
pub use log::{AppendAck, BulkSummary, FeedbackLog, LogOptions, LogReader, LogSink, LogStats, RecoveryReport};
pub use stream::{Chunk, EventStream, SharedStream, StreamError};
