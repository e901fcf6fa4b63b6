//! The interface of a candidate generator, the first stage of the pipeline.
//!
//! Every generator (topic, co-watch, sequence, context) is a library crate
//! with a type implementing [`Generator`]. The server exposes each one as the
//! `CandidateGenerator` gRPC role; in the all-in-one process the recommender
//! calls the same objects in-process.
//!
//! `generate` is synchronous and must be fast (well under a millisecond at
//! the median): it reads an index that is swapped atomically when rebuilt
//! (`ArcSwap`), never waits for a rebuild and never takes a lock that an
//! update holds for long. Updates come through [`Generator::update_catalog`]
//! (a new catalogue: rebuild off the request path, then swap) and
//! [`Generator::observe`] (feedback events as they are acknowledged, for
//! generators that learn online).

use std::sync::Arc;

use crate::{catalog::Catalog, event::Event, event::Source, ids::VideoId, request::Query};

/// One proposed video.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub video: VideoId,
    /// The generator's own score, higher is better (comparable only within
    /// one generator).
    pub score: f32,
}

/// A generator's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Generated {
    /// Best first, at most the requested number, never the query video.
    pub candidates: Vec<Candidate>,
    /// Why the list is empty or a fallback (unknown query video, cold user,
    /// no index yet...); empty when there is nothing to say.
    pub note: String,
    /// Version of the index or model that produced the list.
    pub version: String,
}

/// A candidate generator.
pub trait Generator: Send + Sync + std::fmt::Debug {
    /// Which generator this is (provenance of its candidates).
    fn source(&self) -> Source;

    /// Proposes at most `max` candidates for `query`, best first. An unknown
    /// user or query video is not an error: answer empty or a fallback list
    /// and say why in [`Generated::note`].
    fn generate(&self, query: &Query, max: usize) -> Generated;

    /// Whether the generator can answer usefully yet (its index is built);
    /// health checks report it. `Err` says what is missing.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// What must exist before `generate` can answer at all (a trained
    /// model, say); when it fails, a gRPC call gets FAILED_PRECONDITION with
    /// this reason instead of an empty list. Most generators always answer.
    fn precondition(&self) -> Result<(), String> {
        Ok(())
    }

    /// A new catalogue is available: rebuild what depends on it (off the
    /// request path) and swap it in atomically. Called from a blocking
    /// thread.
    fn update_catalog(&self, _catalog: &Arc<Catalog>) {}

    /// Feedback events just made durable, in log order, for generators that
    /// learn online. Called from a blocking thread; must not block for long.
    fn observe(&self, _events: &[Event]) {}

    /// Makes every observed event visible to `generate` now. A generator that
    /// publishes its state on a wall-clock cadence (context's trending lists)
    /// does it here; a replay of a log, which observes far faster than real
    /// time, calls it on the serving cadence in event time so that each
    /// replayed request sees what a live request would have seen. Most
    /// generators show every event at once and need nothing.
    fn sync(&self) {}
}
