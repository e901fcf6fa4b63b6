//! Criterion benchmarks of watchnext live in `benches/`; run them with
//! `cargo bench -p watchnext-benches`. `BENCHMARKS.md` at the repository root
//! records the figures, each with the command that reproduces it.

/// Shared set-up of the generator benches: stream a synthetic world's log
/// into a generator's `observe` in batches, keeping held-out queries (query
/// video, the user's recent watches, device, time) from the tail.
pub mod feed {
    use watchnext_core::{
        History, RequestContext, RequestId,
        event::{Event, EventKind, EventSink},
        generator::Generator,
        request::{HistoryEntry, Query},
    };
    use watchnext_world::World;

    pub const BATCH: usize = 10_000;
    pub const HISTORY: usize = 20;
    pub const QUERIES: usize = 2_000;
    pub const MAX: usize = 100;

    /// Feeds a generator in batches and keeps held-out queries from the tail of the stream.
    #[allow(missing_debug_implementations)] // holds a borrowed world; nothing to print
    pub struct Feed<'a> {
        pub world: &'a World,
        pub generator: &'a dyn Generator,
        pub batch: Vec<Event>,
        /// Last watches of each user (dense video indices), newest last.
        pub history: Vec<Vec<u32>>,
        /// Events pushed so far; queries are taken after `tail_from`.
        pub pushed: u64,
        pub tail_from: u64,
        pub queries: Vec<Query>,
    }

    impl EventSink for Feed<'_> {
        type Error = std::convert::Infallible;

        fn push(&mut self, event: Event) -> Result<(), Self::Error> {
            self.pushed += 1;
            if let EventKind::Watch { .. } = event.kind
                && let (Some(u), Some(v)) =
                    (self.world.user_index(event.user.as_str()), self.world.video_index(event.video.as_str()))
            {
                let h = &mut self.history[u as usize];
                if self.pushed >= self.tail_from && self.queries.len() < QUERIES && !h.is_empty() {
                    self.queries.push(query(self.world, &event, h));
                }
                h.push(v);
                if h.len() > HISTORY {
                    h.remove(0);
                }
            }
            self.batch.push(event);
            if self.batch.len() >= BATCH {
                self.generator.observe(&self.batch);
                self.batch.clear();
            }
            Ok(())
        }
    }

    pub fn query(world: &World, event: &Event, history: &[u32]) -> Query {
        Query {
            request_id: RequestId::parse("request_id", "bench").expect("valid id"),
            user: event.user.clone(),
            query_video: event.video.clone(),
            device: event.device,
            history: History(
                history
                    .iter()
                    .map(|&v| HistoryEntry {
                        video: world.video_id(v).clone(),
                        watched_at_ms: event.timestamp_ms,
                        seconds_watched: 60.0,
                    })
                    .collect(),
            ),
            context: RequestContext { time_ms: event.timestamp_ms, ..RequestContext::default() },
        }
    }
}
