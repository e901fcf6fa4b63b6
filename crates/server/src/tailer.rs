//! Feeds the generators that learn online (co-watch, trending, popularity)
//! and the recent-watch store with the event stream (the embedded log, or
//! NATS JetStream where each process follows the stream itself), in order:
//! first a replay of what is already there (from the sequence number their
//! snapshot covers), then every new event as it becomes durable. The stream
//! is the one source of truth, so nothing is lost when a generator is slow:
//! the tailer just reads further behind, and catches up.

use std::sync::Arc;

use tokio::sync::watch;
use watchnext_core::{event::Event, generator::Generator};
use watchnext_feedback::SharedStream;

/// How many events one `observe` call receives at most.
const CHUNK: usize = 4_096;

/// Where a tailer stands; cheap to clone and read from health checks.
#[derive(Debug, Clone)]
pub struct TailProgress {
    /// The next sequence number to read.
    pub next_seq: watch::Receiver<u64>,
}

/// Called on the tailer's blocking thread after each delivery with the last
/// sequence number delivered, e.g. to snapshot state that then covers
/// exactly that prefix of the log.
pub type AfterDelivery = Arc<dyn Fn(u64) + Send + Sync>;

/// What [`follow`] hands a chunk to: `(first sequence number, events)`;
/// `caught_up` is true on the last chunk before the reader reached the
/// durable end. Returns false to stop following.
pub trait Consumer: Send + 'static {
    fn consume(&mut self, first_seq: u64, events: Vec<Event>, caught_up: bool) -> bool;
}

/// Follows `stream` from `from_seq` and hands chunks of at most `chunk`
/// events to `consumer` in order, on a blocking thread (consumers do CPU
/// work), then every new durable event as it comes (no polling on either
/// backend). A read failure is logged and the stream is followed again from
/// the next sequence number after a pause. Ends when the consumer says so.
///
/// `label` names the consumer in metrics — `watchnext_consumer_lag_events`
/// (durable events not yet delivered), `watchnext_consumer_events_total`,
/// `watchnext_consumer_catch_up_seconds` (from start to the first time it
/// had everything) — and in the log line that reports the catch-up.
pub fn follow(
    stream: SharedStream,
    label: &str,
    from_seq: u64,
    chunk: usize,
    consumer: impl Consumer,
) -> tokio::task::JoinHandle<()> {
    let label = label.to_owned();
    tokio::spawn(async move {
        let mut next = from_seq.max(1);
        let mut consumer = Some(consumer);
        let (started, mut delivered, mut caught_up_once) = (std::time::Instant::now(), 0u64, false);
        let lag = metrics::gauge!("watchnext_consumer_lag_events", "consumer" => label.clone());
        let total = metrics::counter!("watchnext_consumer_events_total", "consumer" => label.clone());
        loop {
            let mut chunks = stream.follow(next, chunk.max(1));
            while let Some(read) = chunks.recv().await {
                let chunk = match read {
                    Ok(chunk) => chunk,
                    Err(err) => {
                        tracing::error!(%err, next, backend = stream.backend(), "feedback tailer: reading failed; resuming");
                        break;
                    }
                };
                next = chunk.last_seq() + 1;
                delivered += chunk.events.len() as u64;
                total.increment(chunk.events.len() as u64);
                lag.set(chunk.behind as f64);
                if chunk.caught_up && !caught_up_once {
                    caught_up_once = true;
                    let seconds = started.elapsed().as_secs_f64();
                    metrics::gauge!("watchnext_consumer_catch_up_seconds", "consumer" => label.clone()).set(seconds);
                    tracing::info!(
                        consumer = %label,
                        events = delivered,
                        seconds = format!("{seconds:.2}"),
                        next_seq = next,
                        backend = stream.backend(),
                        "caught up with the event stream"
                    );
                }
                let Some(mut c) = consumer.take() else { return };
                let step = tokio::task::spawn_blocking(move || {
                    let go_on = c.consume(chunk.first_seq, chunk.events, chunk.caught_up);
                    (c, go_on)
                })
                .await;
                match step {
                    Ok((c, true)) => consumer = Some(c),
                    Ok((_, false)) => return,
                    Err(join) => {
                        tracing::error!(%join, "feedback tailer: a consumer panicked; tailing stops");
                        return;
                    }
                }
            }
            // The stream ended (an error, or the log closed): pause, resume.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

/// Feeds generators, reporting progress and calling the hook when caught up.
struct Observers {
    observers: Vec<Arc<dyn Generator>>,
    progress: watch::Sender<u64>,
    after: Option<AfterDelivery>,
}

impl Consumer for Observers {
    fn consume(&mut self, first_seq: u64, events: Vec<Event>, caught_up: bool) -> bool {
        for observer in &self.observers {
            observer.observe(&events);
        }
        let last = first_seq + events.len() as u64 - 1;
        if caught_up && let Some(hook) = &self.after {
            hook(last);
        }
        // No receiver left is fine: the generators still need the events.
        let _ = self.progress.send(last + 1);
        true
    }
}

/// Starts tailing `log` from `from_seq` into `observers` (see [`follow`]).
pub fn spawn(
    log: SharedStream,
    label: &str,
    from_seq: u64,
    observers: Vec<Arc<dyn Generator>>,
    after: Option<AfterDelivery>,
) -> TailProgress {
    let (progress, next_seq) = watch::channel(from_seq.max(1));
    follow(log, label, from_seq, CHUNK, Observers { observers, progress, after });
    TailProgress { next_seq }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use watchnext_core::{
        Device, Query, UserId, VideoId,
        event::{Event, EventKind, Source},
        generator::Generated,
    };

    use watchnext_feedback::FeedbackLog;

    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Generator for Recorder {
        fn source(&self) -> Source {
            Source::Cowatch
        }
        fn generate(&self, _query: &Query, _max: usize) -> Generated {
            Generated::default()
        }
        fn observe(&self, events: &[Event]) {
            self.0.lock().unwrap().extend(events.iter().map(|e| e.video.as_str().to_owned()));
        }
    }

    fn watch(video: &str) -> Event {
        Event {
            timestamp_ms: 1,
            request_id: String::new(),
            user: UserId::parse("u", "u1").unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind: EventKind::Watch { seconds_watched: 1.0, video_duration_seconds: 2.0 },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_the_log_then_follows_new_commits_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = FeedbackLog::open(dir.path(), Default::default()).unwrap();
        log.append(vec![watch("a"), watch("b"), watch("c")]).await.unwrap();
        let recorder = Arc::new(Recorder::default());
        // Start after the first record, as if a snapshot covered it.
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let hook_seen = delivered.clone();
        let hook: AfterDelivery = Arc::new(move |seq| hook_seen.lock().unwrap().push(seq));
        let mut progress =
            spawn(Arc::new(log.clone()), "test", 2, vec![recorder.clone() as Arc<dyn Generator>], Some(hook));
        progress.next_seq.wait_for(|n| *n == 4).await.unwrap();
        assert_eq!(*recorder.0.lock().unwrap(), ["b", "c"]);

        log.append(vec![watch("d")]).await.unwrap();
        log.append(vec![watch("e"), watch("f")]).await.unwrap();
        progress.next_seq.wait_for(|n| *n == 7).await.unwrap();
        assert_eq!(*recorder.0.lock().unwrap(), ["b", "c", "d", "e", "f"]);
        // Progress is reported per chunk; the hook runs when a delivery ends.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while delivered.lock().unwrap().last() != Some(&6) {
            assert!(std::time::Instant::now() < deadline, "hook never saw 6: {:?}", delivered.lock().unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let delivered = delivered.lock().unwrap().clone();
        assert_eq!(delivered.first(), Some(&3), "the hook sees what each delivery covered");
        assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    }
}
