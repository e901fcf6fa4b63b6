//! Feeds the generators that learn online (co-watch, trending, popularity)
//! with the feedback log, in log order: first a replay of what is already
//! in the log (from the sequence number their snapshot covers), then every
//! new commit as the log's writer announces it. The log is the one source of
//! truth, so nothing is lost when a generator is slow: the tailer just reads
//! further behind, and catches up.

use std::sync::Arc;

use tokio::sync::watch;
use watchnext_core::generator::Generator;
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

/// Starts tailing `log` from `from_seq` into `observers` on the tokio
/// runtime; the reading and `observe` calls run on blocking threads. The
/// task ends when the log is closed.
pub fn spawn(
    log: FeedbackLog,
    from_seq: u64,
    observers: Vec<Arc<dyn Generator>>,
    after: Option<AfterDelivery>,
) -> TailProgress {
    let (progress_tx, progress_rx) = watch::channel(from_seq.max(1));
    let progress_tx = Arc::new(progress_tx);
    let mut durable = log.subscribe();
    tokio::spawn(async move {
        let mut next = from_seq.max(1);
        loop {
            // Read and deliver everything durable past `next`.
            let log_for_read = log.clone();
            let observers_for_read = observers.clone();
            let after = after.clone();
            let progress = progress_tx.clone();
            let step = tokio::task::spawn_blocking(move || {
                let result = deliver(&log_for_read, next, &observers_for_read, &|n| {
                    let _ = progress.send(n);
                });
                if let (Ok(after_seq), Some(hook)) = (&result, after) {
                    hook(after_seq - 1);
                }
                result
            })
            .await;
            match step {
                Ok(Ok(after)) => next = after,
                Ok(Err(err)) => {
                    tracing::error!(%err, next, "feedback tailer: reading the log failed; retrying on the next commit");
                }
                Err(join) => {
                    tracing::error!(%join, "feedback tailer: an observer panicked; tailing stops");
                    return;
                }
            }
            let _ = progress_tx.send(next);
            // Wait for the writer to make more records durable.
            if *durable.borrow_and_update() >= next {
                continue;
            }
            if durable.changed().await.is_err() {
                return; // the log is closed
            }
        }
    });
    TailProgress { next_seq: progress_rx }
}

/// Delivers every durable record from `from` on, in chunks, reporting the
/// next sequence number to read after each chunk; returns it at the end.
fn deliver(
    log: &FeedbackLog,
    from: u64,
    observers: &[Arc<dyn Generator>],
    progress: &dyn Fn(u64),
) -> Result<u64, watchnext_feedback::LogError> {
    let mut reader = log.reader(from)?;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let item = reader.next().transpose()?;
        let done = item.is_none();
        if let Some((_, event)) = item {
            chunk.push(event);
        }
        if chunk.len() >= CHUNK || (done && !chunk.is_empty()) {
            for observer in observers {
                observer.observe(&chunk);
            }
            chunk.clear();
            progress(reader.next_seq());
        }
        if done {
            return Ok(reader.next_seq());
        }
    }
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
