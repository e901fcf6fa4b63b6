//! `watchnext.v1.Feedback`: durable ingestion of user feedback.
//!
//! A batch is validated whole (core's event rules), appended to the feedback
//! log and acknowledged only after the log's group commit has fsynced it.
//! Failures map to statuses that tell the client whether to retry.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use watchnext_core::event::{Event, parse_batch};
use watchnext_feedback::{FeedbackLog, LogError};
use watchnext_proto::v1::{RecordRequest, RecordResponse, TailRequest, TailResponse, feedback_server::Feedback};

/// Default and largest events per `Tail` response.
const TAIL_BATCH: u32 = 4_096;
const TAIL_BATCH_MAX: u32 = 65_536;

/// Sends tailed chunks to one `Tail` stream; stops when the client is gone.
struct StreamConsumer {
    tx: tokio::sync::mpsc::Sender<Result<TailResponse, Status>>,
}

impl crate::tailer::Consumer for StreamConsumer {
    fn consume(&mut self, first_seq: u64, events: Vec<Event>, _caught_up: bool) -> bool {
        let response = TailResponse { first_sequence: first_seq, events: events.iter().map(Event::to_proto).collect() };
        // Runs on a blocking thread: waiting for a slow client is fine here,
        // and the bounded channel is the stream's back-pressure.
        self.tx.blocking_send(Ok(response)).is_ok()
    }
}

/// Serves `Record`.
#[derive(Debug)]
pub struct FeedbackService {
    log: FeedbackLog,
    max_batch: usize,
}

impl FeedbackService {
    pub fn new(log: FeedbackLog, max_batch: u32) -> Self {
        Self { log, max_batch: max_batch as usize }
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
        let events = parse_batch(&request.get_ref().events, self.max_batch, super::now_ms())?;
        let accepted = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let ack = self.log.append(events).await.map_err(status_of)?;
        Ok(Response::new(RecordResponse { accepted, last_sequence: ack.last_seq }))
    }

    type TailStream = ReceiverStream<Result<TailResponse, Status>>;

    async fn tail(&self, request: Request<TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        let TailRequest { from_sequence, max_batch } = *request.get_ref();
        let batch = if max_batch == 0 { TAIL_BATCH } else { max_batch.min(TAIL_BATCH_MAX) };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        crate::tailer::follow(self.log.clone(), from_sequence, batch as usize, StreamConsumer { tx });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
