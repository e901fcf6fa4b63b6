//! Feeds the generators that learn online (co-watch, trending, popularity)
//! with the feedback log, in log order: first a replay of what is already
//! in the log (from the sequence number their snapshot covers), then every
//! new commit as the log's writer announces it. The log is the one source of
//! truth, so nothing is lost when a generator is slow: the tailer just reads
//! further behind, and catches up.

use std::sync::Arc;

use tokio::sync::watch;
use watchnext_core::{event::Event, generator::Generator};
use watchnext_feedback::FeedbackLog;

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

/// Follows `log` from `from_seq`: reads on a blocking thread, hands chunks
/// of at most `chunk` events to `consumer` in log order, and when caught up
/// waits for the writer's next commit (no polling). One reader is kept for
/// the whole run, so a long log is read once, not re-scanned per commit.
/// Ends when the consumer says so or the log is closed.
pub fn follow(log: FeedbackLog, from_seq: u64, chunk: usize, consumer: impl Consumer) -> tokio::task::JoinHandle<()> {
    let mut durable = log.subscribe();
    tokio::spawn(async move {
        let reader = match log.reader(from_seq.max(1)) {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(%err, "feedback tailer: cannot open a reader");
                return;
            }
        };
        // Reader and consumer travel to the blocking thread and back.
        let mut state = Some((reader, consumer));
        loop {
            let Some((mut reader, mut consumer)) = state.take() else { return };
            let step = tokio::task::spawn_blocking(move || {
                let outcome = deliver(&mut reader, chunk.max(1), &mut consumer);
                (reader, consumer, outcome)
            })
            .await;
            let keep_going = match step {
                Ok((reader, consumer, outcome)) => {
                    state = Some((reader, consumer));
                    match outcome {
                        Ok(go_on) => go_on,
                        Err(err) => {
                            tracing::error!(%err, "feedback tailer: reading the log failed; retrying on the next commit");
                            true
                        }
                    }
                }
                Err(join) => {
                    tracing::error!(%join, "feedback tailer: a consumer panicked; tailing stops");
                    false
                }
            };
            if !keep_going {
                return;
            }
            // Wait for the writer to make more records durable.
            let next = state.as_ref().map_or(u64::MAX, |(r, _)| r.next_seq());
            if *durable.borrow_and_update() >= next {
                continue;
            }
            if durable.changed().await.is_err() {
                return; // the log is closed
            }
        }
    })
}

/// Reads at most `max` events from `reader`: `(first sequence number,
/// events, caught up)`; caught up when the reader reached the durable end.
pub(crate) fn read_chunk(
    reader: &mut watchnext_feedback::LogReader,
    max: usize,
) -> Result<(u64, Vec<Event>, bool), watchnext_feedback::LogError> {
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
            None => return Ok((first, events, true)),
        }
    }
    Ok((first, events, false))
}

/// Reads everything durable in chunks; false when the consumer stopped.
fn deliver(
    reader: &mut watchnext_feedback::LogReader,
    chunk: usize,
    consumer: &mut impl Consumer,
) -> Result<bool, watchnext_feedback::LogError> {
    loop {
        let (first, events, caught_up) = read_chunk(reader, chunk)?;
        if !events.is_empty() && !consumer.consume(first, events, caught_up) {
            return Ok(false);
        }
        if caught_up {
            return Ok(true);
        }
    }
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
    log: FeedbackLog,
    from_seq: u64,
    observers: Vec<Arc<dyn Generator>>,
    after: Option<AfterDelivery>,
) -> TailProgress {
    let (progress, next_seq) = watch::channel(from_seq.max(1));
    follow(log, from_seq, CHUNK, Observers { observers, progress, after });
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
        let mut progress = spawn(log.clone(), 2, vec![recorder.clone() as Arc<dyn Generator>], Some(hook));
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
