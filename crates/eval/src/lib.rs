//! Offline evaluation, shared by every part of watchnext that must prove it
//! works on held-out data.
//!
//! - [`metrics`]: AUC, squared error, recall@K / HR@K and NDCG@K (binary and
//!   graded), written once so the trainer's report and the generators'
//!   report compute them the same way.
//! - [`generators`]: the leave-last-out harness. Every user's last watch is
//!   held out; the generators learn from everything that happened before
//!   (catalogue + `observe` of the earlier events, in time order); each is
//!   then asked for candidates for the user's previous watch as the query
//!   video, with the earlier watches as history. Recall@K, HR@K and NDCG@K
//!   of each generator, of their union (reciprocal-rank fusion), of a
//!   popularity baseline and of the item co-occurrence baseline are
//!   reported side by side. On the synthetic world
//!   the same lists are also scored against **ground truth**: NDCG@K with
//!   the true click probability as graded relevance, against the ideal list
//!   over the whole catalogue.
//! - [`cooccurrence`]: the textbook item co-occurrence generator (pairs
//!   within a window of 10 watches, count/√(pop·pop), summed over the last 5
//!   watched videos), the bar the co-watch generator must clear.
//! - [`pipeline`]: the scores of the whole-pipeline evaluation (`watchnext
//!   eval pipeline`): HR, NDCG and MRR at several K with bootstrap
//!   intervals, paired ratios between methods, catalogue coverage, true NDCG.
//! - [`popularity`]: the popularity baseline as a generator.
//! - [`holdout`]: held-out next watches after a time split and recall@K
//!   against a random list, the quick check generator crates run in their
//!   own tests.
//! - [`charts`]: PNG line charts (learning curves, learned-vs-true position
//!   bias) and grouped bar charts (expert utilisation per gate) for the
//!   reports, text drawn with a system font when one is found.

pub mod charts;
pub mod cooccurrence;
pub mod generators;
pub mod holdout;
pub mod metrics;
pub mod pipeline;
pub mod popularity;
