//! The front door of watchnext: a Recommend request in, an ordered
//! watch-next list out, impressions back into the feedback log.
//!
//! - [`pipeline`] — [`Recommender`]: arm, history, concurrent fan-out with
//!   deadlines, merge with provenance, rank, combine, diversity cap,
//!   degradation, impression logging (the steps are documented there).
//! - [`combiner`] — weighted multiplication of the task predictions (the
//!   formula is documented there).
//! - [`arms`] — deterministic experiment-arm assignment.
//! - [`clients`] — the other roles behind one trait each, in-process or
//!   over gRPC, so the all-in-one and split deployments share this code.
//! - [`config`] — `[recommender.fanout]`, `[recommender.combiner]`,
//!   `[[recommender.arms]]`.

pub mod arms;
pub mod balance;
pub mod clients;
pub mod combiner;
pub mod config;
pub mod cpu;
pub mod pipeline;

pub use pipeline::{Item, RecommendError, Recommendation, Recommender};
