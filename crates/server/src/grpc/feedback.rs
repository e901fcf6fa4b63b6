//! `watchnext.v1.Feedback`: durable ingestion of user feedback.
//!
//! A batch is validated whole (core's event rules), appended to the feedback
//! log and acknowledged only after the log's group commit has fsynced it.
//! Failures map to statuses that tell the client whether to retry.

use tonic::{Request, Response, Status};
use watchnext_core::event::parse_batch;
use watchnext_feedback::{FeedbackLog, LogError};
use watchnext_proto::v1::{RecordRequest, RecordResponse, feedback_server::Feedback};

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
}
