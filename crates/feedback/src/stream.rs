//! One interface over where events live: [`EventStream`].
//!
//! Two backends implement it: the embedded segment log of this crate
//! ([`FeedbackLog`], the default: one machine, the demo, every test that
//! needs no broker) and NATS JetStream (crate `watchnext-nats`,
//! `event_log.backend = "nats"`). Writers (`Feedback.Record`, the
//! recommender's impressions) and followers (the online generators, the
//! `Feedback.Tail` stream) hold an `Arc<dyn EventStream>` and do not know
//! which one they have.
//!
//! Both number events with dense, increasing sequence numbers starting at 1
//! (the log's record number, the JetStream stream sequence), so a consumer's
//! snapshot records "everything up to sequence N" and resumes at N + 1 on
//! either backend.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::sync::mpsc;
use watchnext_core::event::Event;

use crate::{AppendAck, FeedbackLog, LogError};

/// A boxed future, as the trait's async methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Consecutive events from a stream: `events[i]` has sequence number
/// `first_seq + i`. `caught_up` is true when nothing durable followed the
/// last event at the time it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub first_seq: u64,
    pub events: Vec<Event>,
    pub caught_up: bool,
    /// Durable events after this chunk when it was read: the follower's lag.
    pub behind: u64,
}

impl Chunk {
    /// The sequence number of the last event (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.events.len() as u64 - 1
    }
}

/// Why a stream operation failed, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The embedded log's own failure (its message says what to do).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The batch itself is wrong: sending it again will fail again.
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot be reached or did not confirm the write in time:
    /// nothing is acknowledged; retrying (with the same event ids) is safe.
    #[error("{0}")]
    Unavailable(String),
}

/// A durable, ordered stream of events that many consumers follow.
pub trait EventStream: Send + Sync + std::fmt::Debug + 'static {
    /// `"embedded"` or `"nats"`, for logs and health messages.
    fn backend(&self) -> &'static str;

    /// Appends `events` in order and resolves once they are durable (the
    /// log's fsync, JetStream's acknowledgement). `ids` (one per event, see
    /// [`watchnext_core::event::event_id`]) let a backend store a retried
    /// event once; the embedded log does not deduplicate.
    fn append(&self, events: Vec<Event>, ids: Vec<String>) -> BoxFuture<'static, Result<AppendAck, StreamError>>;

    /// Follows the stream from `from_seq` (1 = the beginning): chunks of at
    /// most `max_chunk` events in order, then every new durable event as it
    /// comes. Reading stops when the receiver is dropped; an error ends the
    /// stream (the caller may follow again from its next sequence number).
    fn follow(&self, from_seq: u64, max_chunk: usize) -> mpsc::Receiver<Result<Chunk, StreamError>>;

    /// The last durable sequence number (0 when empty).
    fn last_seq(&self) -> BoxFuture<'static, Result<u64, StreamError>>;

    /// `Err(reason)` while the stream cannot take writes (a broken log, a
    /// lost broker connection), for health checks.
    fn check_health(&self) -> Result<(), String>;
}

/// How many chunks a follower may have read ahead of its consumer.
const FOLLOW_BUFFER: usize = 2;

impl EventStream for FeedbackLog {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn append(&self, events: Vec<Event>, _ids: Vec<String>) -> BoxFuture<'static, Result<AppendAck, StreamError>> {
        let log = self.clone();
        Box::pin(async move { Ok(FeedbackLog::append(&log, events).await?) })
    }

    fn follow(&self, from_seq: u64, max_chunk: usize) -> mpsc::Receiver<Result<Chunk, StreamError>> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        tokio::spawn(follow_log(self.clone(), from_seq.max(1), max_chunk.max(1), tx));
        rx
    }

    fn last_seq(&self) -> BoxFuture<'static, Result<u64, StreamError>> {
        let last = FeedbackLog::last_seq(self);
        Box::pin(async move { Ok(last) })
    }

    fn check_health(&self) -> Result<(), String> {
        FeedbackLog::check_health(self).map_err(|e| e.to_string())
    }
}

/// Reads at most `max` events: a chunk, possibly empty when caught up.
pub fn read_chunk(reader: &mut crate::LogReader, max: usize) -> Result<Chunk, LogError> {
    let mut events = Vec::new();
    let mut first = reader.next_seq();
    while events.len() < max {
        match reader.next().transpose()? {
            Some((seq, event)) => {
                if events.is_empty() {
                    first = seq;
                }
                events.push(event);
            }
            None => return Ok(Chunk { first_seq: first, events, caught_up: true, behind: 0 }),
        }
    }
    Ok(Chunk { first_seq: first, events, caught_up: false, behind: 0 })
}

/// The embedded log's follower: reads on the blocking pool only while it
/// reads the disk, waits for the writer's next commit (no polling), and
/// stops as soon as its receiver is gone.
async fn follow_log(log: FeedbackLog, from_seq: u64, max: usize, tx: mpsc::Sender<Result<Chunk, StreamError>>) {
    let mut durable = log.subscribe();
    let mut reader = match log.reader(from_seq) {
        Ok(r) => r,
        Err(err) => {
            let _ = tx.send(Err(err.into())).await;
            return;
        }
    };
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let chunk = read_chunk(&mut reader, max);
            (reader, chunk)
        })
        .await;
        let Ok((back, chunk)) = read else { return };
        reader = back;
        let mut chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        };
        chunk.behind = log.last_seq().saturating_sub(chunk.last_seq());
        let caught_up = chunk.caught_up;
        if !chunk.events.is_empty() && tx.send(Ok(chunk)).await.is_err() {
            return; // the follower is gone
        }
        if !caught_up {
            continue;
        }
        if *durable.borrow_and_update() >= reader.next_seq() {
            continue;
        }
        tokio::select! {
            changed = durable.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

/// Shared handle on whichever backend a process uses.
pub type SharedStream = Arc<dyn EventStream>;

#[cfg(test)]
mod tests {
    use watchnext_core::{
        Device, UserId, VideoId,
        event::{Event, EventKind},
    };

    use super::*;

    fn click(video: &str) -> Event {
        Event {
            timestamp_ms: 1,
            request_id: String::new(),
            user: UserId::parse("u", "u1").expect("user id"),
            video: VideoId::parse("v", video).expect("video id"),
            device: Device::Phone,
            kind: EventKind::Click,
        }
    }

    #[tokio::test]
    async fn the_embedded_log_follows_what_is_there_then_what_comes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = FeedbackLog::open(dir.path(), Default::default()).expect("log");
        let stream: SharedStream = Arc::new(log);
        let ack = stream.append(vec![click("a"), click("b"), click("c")], vec![]).await.expect("append");
        assert_eq!((ack.first_seq, ack.last_seq), (1, 3));

        let mut rx = stream.follow(2, 10);
        let first = rx.recv().await.expect("a chunk").expect("readable");
        assert_eq!(first.first_seq, 2);
        assert_eq!(first.events.iter().map(|e| e.video.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert!(first.caught_up);

        stream.append(vec![click("d")], vec![]).await.expect("append");
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the follower wakes on the commit")
            .expect("a chunk")
            .expect("readable");
        assert_eq!((next.first_seq, next.last_seq()), (4, 4));
        assert_eq!(stream.last_seq().await.expect("last"), 4);
        assert_eq!(stream.backend(), "embedded");
        assert!(stream.check_health().is_ok());
    }

    #[tokio::test]
    async fn chunks_are_at_most_the_size_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = FeedbackLog::open(dir.path(), Default::default()).expect("log");
        let stream: SharedStream = Arc::new(log);
        let events: Vec<Event> = (0..5).map(|i| click(&format!("v{i}"))).collect();
        stream.append(events, vec![]).await.expect("append");
        let mut rx = stream.follow(1, 2);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let chunk = rx.recv().await.expect("a chunk").expect("readable");
            assert!(chunk.events.len() <= 2);
            assert_eq!(chunk.first_seq, seen.len() as u64 + 1);
            seen.extend(chunk.events);
        }
    }
}
