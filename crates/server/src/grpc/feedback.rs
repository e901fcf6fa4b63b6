//! `watchnext.v1.Feedback`: durable ingestion of user feedback.
//!
//! A batch is validated whole (core's event rules), appended to the event
//! stream and acknowledged only once it is durable: the embedded log's
//! group commit has fsynced it, or NATS JetStream has acknowledged every
//! event (each with its `event_id` as `Nats-Msg-Id`, so a retried batch is
//! stored once). Failures map to statuses that tell the client whether to
//! retry.
//!
//! `Tail` streams the log from a sequence number, then follows new commits.
//! Each stream's reading runs apart from its sending (on the embedded log,
//! on the blocking pool only while it reads the disk), so a client that reads nothing parks no thread:
//! its stream waits on the bounded channel (back-pressure) and costs a task.
//! At most `server.max_tail_streams` run at once (RESOURCE_EXHAUSTED beyond),
//! and a stream ends as soon as its client goes away.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use watchnext_core::{
    config::FeedbackConfig,
    event::{Event, parse_batch},
};
use watchnext_feedback::{LogError, SharedStream, StreamError};
use watchnext_proto::v1::{RecordRequest, RecordResponse, TailRequest, TailResponse, feedback_server::Feedback};

/// Default and largest events per `Tail` response.
const TAIL_BATCH: u32 = 4_096;
const TAIL_BATCH_MAX: u32 = 65_536;

/// Largest `TailResponse` sent, in encoded bytes: half of tonic's default
/// decoding limit (4 MiB), so a follower with default settings can read
/// every message. An event alone in its message may exceed it only if it was
/// logged before `feedback.max_event_bytes` existed.
const TAIL_MESSAGE_BYTES: usize = 2 << 20;

/// Splits a chunk of events (the first numbered `first_seq`) into responses
/// of at most `max_bytes` encoded bytes each (at least one event each).
fn responses(first_seq: u64, events: &[Event], max_bytes: usize) -> Vec<TailResponse> {
    let mut out = Vec::new();
    let mut current = TailResponse { first_sequence: first_seq, events: Vec::new() };
    let mut bytes = 0usize;
    for (i, event) in events.iter().enumerate() {
        let wire = event.to_proto();
        // The event's field tag and length prefix cost a few bytes more.
        let size = prost::Message::encoded_len(&wire) + 8;
        if !current.events.is_empty() && bytes + size > max_bytes {
            let next = TailResponse { first_sequence: first_seq + i as u64, events: Vec::new() };
            out.push(std::mem::replace(&mut current, next));
            bytes = 0;
        }
        current.events.push(wire);
        bytes += size;
    }
    if !current.events.is_empty() {
        out.push(current);
    }
    out
}

/// Feeds one `Tail` stream until its client goes away or the stream fails.
async fn stream_log(
    stream: SharedStream,
    from_seq: u64,
    batch: usize,
    tx: tokio::sync::mpsc::Sender<Result<TailResponse, Status>>,
) {
    let mut chunks = stream.follow(from_seq.max(1), batch);
    loop {
        let read = tokio::select! {
            read = chunks.recv() => read,
            () = tx.closed() => return,
        };
        let chunk = match read {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => {
                tracing::error!(%err, "Feedback.Tail: reading the log failed; the stream ends");
                let _ = tx.send(Err(stream_status(err))).await;
                return;
            }
            None => return,
        };
        for response in responses(chunk.first_seq, &chunk.events, TAIL_MESSAGE_BYTES) {
            if tx.send(Ok(response)).await.is_err() {
                return; // the client is gone
            }
        }
    }
}

/// Serves `Record`.
#[derive(Debug)]
pub struct FeedbackService {
    log: SharedStream,
    limits: FeedbackConfig,
    tail_streams: std::sync::Arc<tokio::sync::Semaphore>,
    auth: std::sync::Arc<crate::auth::Auth>,
}

impl FeedbackService {
    /// `auth` charges each Record caller (identified by the RPC layer) for
    /// the events it writes.
    pub fn new(
        log: SharedStream,
        limits: FeedbackConfig,
        max_tail_streams: usize,
        auth: std::sync::Arc<crate::auth::Auth>,
    ) -> Self {
        Self { log, limits, tail_streams: std::sync::Arc::new(tokio::sync::Semaphore::new(max_tail_streams)), auth }
    }
}

/// How each stream failure reaches a client.
pub fn stream_status(err: StreamError) -> Status {
    match err {
        StreamError::Log(err) => status_of(err),
        StreamError::Invalid(message) => Status::invalid_argument(message),
        StreamError::Unavailable(message) => Status::unavailable(message),
    }
}

/// How each log failure reaches a client. Exhaustive on purpose: a new
/// failure mode must be given a status deliberately.
pub fn status_of(err: LogError) -> Status {
    let message = err.to_string();
    match err {
        // Bad input in an otherwise valid batch: the client must change it.
        LogError::EmptyBatch => Status::invalid_argument(message),
        LogError::EventTooLarge { index, .. } => Status::invalid_argument(format!("events[{index}]: {message}")),
        // Nothing was acknowledged; sending again later may succeed.
        LogError::WriteFailed { .. } | LogError::Io { .. } => Status::unavailable(message),
        // The process must be restarted by an operator.
        LogError::Broken { .. } | LogError::WriterStopped => Status::unavailable(message),
        // Start-up problems; they cannot happen on a running log, but if
        // they did the server is misconfigured, not the client.
        LogError::Locked { .. } | LogError::BadLastSegment { .. } => Status::failed_precondition(message),
        LogError::InvalidOptions(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl Feedback for FeedbackService {
    async fn record(&self, request: Request<RecordRequest>) -> Result<Response<RecordResponse>, Status> {
        let events = parse_batch(&request.get_ref().events, &self.limits, super::now_ms())?;
        if let Some(caller) = request.extensions().get::<crate::auth::Caller>() {
            self.auth.charge_events(caller, events.len())?;
        }
        let ids = request.get_ref().events.iter().map(watchnext_core::event::event_id).collect();
        let accepted = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let ack = self.log.append(events, ids).await.map_err(stream_status)?;
        Ok(Response::new(RecordResponse { accepted, last_sequence: ack.last_seq }))
    }

    type TailStream = ReceiverStream<Result<TailResponse, Status>>;

    async fn tail(&self, request: Request<TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        let TailRequest { from_sequence, max_batch } = *request.get_ref();
        let batch = if max_batch == 0 { TAIL_BATCH } else { max_batch.min(TAIL_BATCH_MAX) };
        let permit = self.tail_streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "too many Feedback.Tail streams are open (server.max_tail_streams); retry with backoff",
            )
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let log = self.log.clone();
        tokio::spawn(async move {
            let _permit = permit;
            stream_log(log, from_sequence, batch as usize, tx).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use watchnext_core::{
        event::EventKind,
        ids::{UserId, VideoId},
        request::Device,
    };

    use super::*;

    #[test]
    fn tail_responses_stay_under_the_size_limit_and_keep_the_numbering() {
        let events: Vec<Event> = (0..100)
            .map(|i| Event {
                timestamp_ms: i,
                request_id: "r".repeat(200),
                user: UserId::parse("u", "user").unwrap(),
                video: VideoId::parse("v", &format!("video-{i}")).unwrap(),
                device: Device::Unknown,
                kind: EventKind::Click,
            })
            .collect();
        let one = prost::Message::encoded_len(&events[0].to_proto());
        let max = one * 10 + 100;
        let out = responses(41, &events, max);
        assert!(out.len() >= 10, "{} responses", out.len());
        let mut next = 41;
        for r in &out {
            assert_eq!(r.first_sequence, next);
            assert!(prost::Message::encoded_len(r) <= max, "{} > {max}", prost::Message::encoded_len(r));
            next += r.events.len() as u64;
        }
        assert_eq!(next, 141, "every event once, in order");
        let back: Vec<Event> = out.iter().flat_map(|r| &r.events).map(|e| Event::from_proto(e, 0).unwrap()).collect();
        assert_eq!(back, events);
        // An event larger than the limit travels alone.
        let alone = responses(1, &events[..3], 1);
        assert_eq!(alone.iter().map(|r| r.events.len()).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(responses(1, &[], max).is_empty());
    }
}
