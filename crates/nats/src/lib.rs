//! The watchnext event stream on NATS JetStream (`event_log.backend =
//! "nats"`): an [`EventStream`] every role writes to and follows itself, so
//! no process owns the log.
//!
//! # Layout in JetStream
//!
//! One stream (`event_log.nats.stream`, file storage, `replicas` copies,
//! optional `max_age_days`) on one subject. **One message per event**: the
//! payload is the prost-encoded `watchnext.v1.FeedbackEvent` exactly as the
//! embedded log stores it, and the JetStream stream sequence is the event's
//! sequence number, so consumers' snapshots ("everything up to N") mean the
//! same thing on both backends.
//!
//! # Writes
//!
//! [`NatsStream::append`] publishes every event of a batch (pipelined, one
//! acknowledgement future each) with its event id as `Nats-Msg-Id`, and
//! resolves only once JetStream has acknowledged **every** event; only then
//! does `Feedback.Record` answer OK. An event whose id JetStream already
//! holds (within `duplicate_window_seconds`) is acknowledged with its
//! original sequence and not stored again, so a client that retries a
//! failed batch with the same ids (or byte-identical events, whose ids are
//! derived from their content) stores each event exactly once: a failure
//! half-way through a batch leaves a prefix stored, and the retry completes
//! it without duplicates.
//!
//! What "acknowledged" means on disk is the server's choice: JetStream
//! acknowledges once the message is in its file store on a quorum of the
//! stream's replicas, and fsyncs on its own schedule (`sync_interval`,
//! 2 minutes by default; `sync_interval: always` fsyncs every write). With
//! 3 replicas an acknowledged event survives the loss of one node at any
//! moment; with 1 replica and the default interval, a power loss of that
//! node can lose up to the last interval of acknowledged events. The
//! embedded log fsyncs before every acknowledgement.
//!
//! # Reads
//!
//! [`EventStream::follow`] runs an ordered pull consumer (ephemeral, no
//! acknowledgements, recreated by the client on any gap) from a sequence
//! number and hands out chunks of consecutive events. Each consumer reads
//! for itself; a restarted one resumes from its snapshot's sequence + 1.
//! A message that is not a valid event (someone else published on the
//! subject) is skipped, logged and counted, never delivered half-decoded.
//!
//! # Failures
//!
//! The client reconnects by itself with backoff. While it is not connected
//! (or the stream could not be created yet) [`EventStream::check_health`]
//! says why, health reports NOT_SERVING, and `append` fails at once with
//! [`StreamError::Unavailable`] (gRPC UNAVAILABLE) instead of queueing.
//! Followers wait for the connection and go on from where they were.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::{
    connection::State,
    jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, message::PublishMessage},
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use watchnext_core::{config::NatsConfig, event::Event};
use watchnext_feedback::{
    AppendAck, Chunk, EventStream,
    stream::{BoxFuture, StreamError},
};
use watchnext_proto::v1 as pb;

/// How many chunks a follower may read ahead of its consumer.
const FOLLOW_BUFFER: usize = 2;
/// Longest wait between two attempts to reach JetStream.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Acknowledgements one process waits for at once (back-pressure beyond).
const MAX_ACKS_IN_FLIGHT: usize = 16_384;

/// A connection to the JetStream stream of `[event_log.nats]`; clones share it.
#[derive(Clone)]
pub struct NatsStream {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    config: NatsConfig,
    /// Set once the stream is known to exist with our subject.
    stream_ready: AtomicBool,
}

impl std::fmt::Debug for NatsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStream")
            .field("url", &self.inner.config.url)
            .field("stream", &self.inner.config.stream)
            .finish_non_exhaustive()
    }
}

/// Why [`NatsStream::connect`] could not even start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("event_log.nats: cannot read {what} {path}: {source}")]
    File { what: &'static str, path: String, source: std::io::Error },
    #[error("event_log.nats.url {url:?}: {message}")]
    Url { url: String, message: String },
}

impl NatsStream {
    /// Connects (in the background when the server is not up yet: the
    /// process starts and reports NOT_SERVING until it is), then makes sure
    /// the stream exists with the configured subject, creating it when
    /// missing. `name` identifies this process to the server.
    pub async fn connect(config: &NatsConfig, name: &str) -> Result<Self, ConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(backoff)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS: connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS: disconnected; reconnecting"),
                    other => tracing::info!(event = %other, "NATS"),
                }
            });
        if !config.credentials_file.is_empty() {
            options = options.credentials_file(&config.credentials_file).await.map_err(|source| {
                ConnectError::File { what: "credentials_file", path: config.credentials_file.clone(), source }
            })?;
        }
        if !config.token_file.is_empty() {
            let token = std::fs::read_to_string(&config.token_file).map_err(|source| ConnectError::File {
                what: "token_file",
                path: config.token_file.clone(),
                source,
            })?;
            options = options.token(token.trim().to_owned());
        }
        if !config.ca_file.is_empty() {
            options = options.add_root_certificates(config.ca_file.clone().into());
        }
        let addrs: Vec<async_nats::ServerAddr> = config
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| ConnectError::Url { url: config.url.clone(), message: e.to_string() })?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| ConnectError::Url { url: config.url.clone(), message: e.to_string() })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms))
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let stream = Self {
            inner: Arc::new(Inner { client, js, config: config.clone(), stream_ready: AtomicBool::new(false) }),
        };
        let ensure = stream.clone();
        tokio::spawn(async move { ensure.ensure_stream().await });
        Ok(stream)
    }

    /// Creates the stream when missing (retrying until the server answers);
    /// an existing stream must carry our subject.
    async fn ensure_stream(&self) {
        let c = &self.inner.config;
        let wanted = jetstream::stream::Config {
            name: c.stream.clone(),
            subjects: vec![c.subject.clone()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: c.replicas as usize,
            max_age: Duration::from_secs(u64::from(c.max_age_days) * 86_400),
            duplicate_window: Duration::from_secs(c.duplicate_window_seconds),
            description: Some("watchnext feedback events (one FeedbackEvent per message)".into()),
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            match self.inner.js.get_or_create_stream(wanted.clone()).await {
                Ok(stream) => {
                    let info = stream.cached_info();
                    if info.config.subjects.contains(&c.subject) {
                        tracing::info!(
                            stream = %c.stream,
                            subject = %c.subject,
                            messages = info.state.messages,
                            last_seq = info.state.last_sequence,
                            "NATS JetStream stream ready"
                        );
                        self.inner.stream_ready.store(true, Ordering::Release);
                        return;
                    }
                    tracing::error!(
                        stream = %c.stream,
                        subjects = ?info.config.subjects,
                        wanted = %c.subject,
                        "the JetStream stream exists without event_log.nats.subject; fix one of them"
                    );
                }
                Err(err) => tracing::warn!(%err, stream = %c.stream, "NATS: cannot get or create the stream yet"),
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    fn unavailable(&self) -> Option<String> {
        let c = &self.inner.config;
        match self.inner.client.connection_state() {
            State::Connected => {}
            State::Pending | State::Disconnected => {
                return Some(format!("NATS at {} is unreachable; reconnecting (event_log.nats.url)", c.url));
            }
        }
        if !self.inner.stream_ready.load(Ordering::Acquire) {
            return Some(format!("JetStream stream {} is not ready yet (see the server's log)", c.stream));
        }
        None
    }

    async fn publish_all(&self, events: Vec<Event>, ids: Vec<String>) -> Result<AppendAck, StreamError> {
        if events.is_empty() {
            return Err(StreamError::Invalid("the batch is empty; send at least one event".into()));
        }
        if ids.len() != events.len() {
            return Err(StreamError::Invalid(format!("{} ids for {} events", ids.len(), events.len())));
        }
        if let Some(reason) = self.unavailable() {
            return Err(StreamError::Unavailable(format!("{reason}; nothing was stored, send the batch again")));
        }
        let subject = self.inner.config.subject.clone();
        let mut pending = Vec::with_capacity(events.len());
        for (event, id) in events.iter().zip(ids) {
            let payload = prost::Message::encode_to_vec(&event.to_proto());
            let message = PublishMessage::build().payload(payload.into()).message_id(id);
            let ack = self.inner.js.send_publish(subject.clone(), message).await.map_err(unavailable)?;
            pending.push(ack);
        }
        let acks = futures_util::future::try_join_all(pending.into_iter().map(std::future::IntoFuture::into_future))
            .await
            .map_err(unavailable)?;
        let duplicates = acks.iter().filter(|a| a.duplicate).count();
        if duplicates > 0 {
            metrics::counter!("watchnext_event_stream_duplicates_total").increment(duplicates as u64);
        }
        let first_seq = acks.first().map_or(0, |a| a.sequence);
        let last_seq = acks.last().map_or(0, |a| a.sequence);
        Ok(AppendAck { first_seq, last_seq })
    }
}

fn unavailable(err: impl std::fmt::Display) -> StreamError {
    StreamError::Unavailable(format!(
        "JetStream did not acknowledge the batch ({err}); part of it may be stored: send it again with the same \
         event ids and each event is stored once"
    ))
}

/// 0.1 s doubling to [`MAX_BACKOFF`].
fn backoff(attempt: usize) -> Duration {
    let shift = attempt.min(6) as u32;
    (Duration::from_millis(100) * 2u32.pow(shift)).min(MAX_BACKOFF)
}

impl EventStream for NatsStream {
    fn backend(&self) -> &'static str {
        "nats"
    }

    fn append(&self, events: Vec<Event>, ids: Vec<String>) -> BoxFuture<'static, Result<AppendAck, StreamError>> {
        let me = self.clone();
        Box::pin(async move { me.publish_all(events, ids).await })
    }

    fn follow(&self, from_seq: u64, max_chunk: usize) -> mpsc::Receiver<Result<Chunk, StreamError>> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        tokio::spawn(follow(self.clone(), from_seq.max(1), max_chunk.max(1), tx));
        rx
    }

    fn last_seq(&self) -> BoxFuture<'static, Result<u64, StreamError>> {
        let me = self.clone();
        Box::pin(async move {
            let mut stream = me
                .inner
                .js
                .get_stream(&me.inner.config.stream)
                .await
                .map_err(|e| StreamError::Unavailable(format!("NATS: stream {}: {e}", me.inner.config.stream)))?;
            let info = stream.info().await.map_err(|e| StreamError::Unavailable(format!("NATS: stream info: {e}")))?;
            Ok(info.state.last_sequence)
        })
    }

    fn check_health(&self) -> Result<(), String> {
        self.unavailable().map_or(Ok(()), Err)
    }
}

/// Follows from `next` until the receiver goes away, recreating the
/// consumer (from the next sequence number) after any failure.
async fn follow(stream: NatsStream, mut next: u64, max: usize, tx: mpsc::Sender<Result<Chunk, StreamError>>) {
    let mut attempt = 0;
    loop {
        match follow_once(&stream, &mut next, max, &tx).await {
            Ok(()) => return, // the receiver is gone
            Err(err) => {
                attempt += 1;
                tracing::warn!(%err, next, "NATS follower: reading failed; resuming");
                tokio::select! {
                    () = tokio::time::sleep(backoff(attempt)) => {},
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// One consumer's life: Ok when the receiver left, Err to start over.
async fn follow_once(
    stream: &NatsStream,
    next: &mut u64,
    max: usize,
    tx: &mpsc::Sender<Result<Chunk, StreamError>>,
) -> Result<(), String> {
    let js_stream = stream.inner.js.get_stream(&stream.inner.config.stream).await.map_err(|e| e.to_string())?;
    let deliver_policy =
        if *next <= 1 { DeliverPolicy::All } else { DeliverPolicy::ByStartSequence { start_sequence: *next } };
    let consumer = js_stream
        .create_consumer(OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        // Wait for one event (or for the follower to leave), then take
        // whatever else is already here, up to `max`.
        let first = tokio::select! {
            m = messages.next() => m,
            () = tx.closed() => return Ok(()),
        };
        let mut chunk: Option<Chunk> = None;
        let mut item = first;
        loop {
            let message = match item {
                None => return Err("the consumer's message stream ended".into()),
                Some(Err(err)) => return Err(err.to_string()),
                Some(Ok(m)) => m,
            };
            let (seq, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(err) => return Err(format!("a message without JetStream metadata: {err}")),
            };
            match decode(&message.payload) {
                Ok(event) => {
                    // A gap (deleted or skipped messages) ends the chunk:
                    // a chunk's sequence numbers are consecutive.
                    if let Some(c) = &chunk
                        && c.last_seq() + 1 != seq
                    {
                        let full = chunk.take().expect("checked just above");
                        if tx.send(Ok(full)).await.is_err() {
                            return Ok(());
                        }
                    }
                    let c = chunk.get_or_insert_with(|| Chunk {
                        first_seq: seq,
                        events: Vec::new(),
                        caught_up: false,
                        behind: 0,
                    });
                    c.events.push(event);
                    c.caught_up = pending == 0;
                    c.behind = pending;
                }
                Err(err) => {
                    metrics::counter!("watchnext_event_stream_undecodable_total").increment(1);
                    tracing::error!(seq, %err, "NATS follower: skipping a message that is not a watchnext event");
                }
            }
            *next = seq + 1;
            let full = chunk.as_ref().is_some_and(|c| c.events.len() >= max);
            if pending == 0 || full {
                break;
            }
            match messages.next().now_or_never() {
                Some(more) => item = more,
                None => break,
            }
        }
        if let Some(c) = chunk
            && tx.send(Ok(c)).await.is_err()
        {
            return Ok(());
        }
    }
}

fn decode(payload: &[u8]) -> Result<Event, String> {
    let wire: pb::FeedbackEvent = prost::Message::decode(payload).map_err(|e| e.to_string())?;
    Event::from_proto(&wire, 0).map_err(|e| e.to_string())
}

pub mod local_server;

#[cfg(test)]
mod tests;
