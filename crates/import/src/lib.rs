//! Real data for watchnext. The importers turn public data sets and a
//! platform's own logs into the project's two formats, so that the trainer
//! and the candidate generators can learn from them exactly as from the
//! feedback log: a [`Catalog`](watchnext_core::catalog::Catalog) of videos,
//! and [`Event`](watchnext_core::event::Event)s pushed into any
//! [`EventSink`](watchnext_core::event::EventSink) (a `Vec` in tests, the
//! feedback log's bulk writer in production) in non-decreasing time order.
//!
//! Every importer returns an [`Imported`]: the catalogue and an
//! [`ImportReport`] (lines read, events by kind, users, videos, skipped
//! lines with the first few `file:line: problem` messages). A malformed line
//! is skipped and counted or stops the import, as the caller chooses with
//! [`OnError`]; errors ([`ImportError`]) name the file and the line. Input is
//! never trusted: nothing a file contains makes an importer panic.
//!
//! # MovieLens ([`import_movielens`])
//!
//! Every GroupLens layout (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m,
//! ml-latest, ml-latest-small), detected from the folder's files.
//!
//! - **Catalogue**: every movie of the movies file becomes a video: id = the
//!   movie id as a string, title as given, topics = its genres (none for
//!   `(no genres listed)` or ml-100k's `unknown`), duration 0 (unknown),
//!   `upload_ms` = 1 January of the year in the title (negative before 1970),
//!   or 0 when the title has none. Videos are ordered by numeric id.
//! - **Events**: each rating of movie *m* by user *u* at time *t* becomes one
//!   served list, `request_id = ml:{u}:{m}`, every event of it at *t* (Unix
//!   seconds × 1000), device `unknown`:
//!   - an `Impression` of *m*, plus `negatives` (default 4) impressions of
//!     movies *u* never rated, drawn uniformly without repetition from the
//!     movies that anyone rated, with a seeded ChaCha8 generator (the same
//!     seed and input give the same events). Positions are a uniformly random
//!     permutation of `1..=negatives+1`, so **these data carry no position
//!     bias** and the position tower learns nothing from them. `query_video`
//!     is the movie *u* rated just before (none for *u*'s first rating);
//!     propensity 0 (unknown).
//!   - then, for *m* only: `Click`; `Watch` with `seconds_watched` 0 and
//!     duration 0, because **MovieLens has no watch time**; `Rating` with the
//!     rating (0.5..=5); `Like` when the rating is ≥ 4; `Dismiss` when it
//!     is ≤ 2.
//!
//!   Events are sorted by time, ties by user id and then movie id (both
//!   numeric), so each user's history is in rating order. A second rating of
//!   the same movie by the same user is a malformed line (the first is kept).
//!
//! # Open Bandit Dataset ([`import_obd`])
//!
//! One `<policy>/<campaign>/` folder of ZOZO's Open Bandit Dataset (see
//! [`obd`]): each log row becomes an `Impression` at the row's `position`
//! (1..=3) with `propensity` = `propensity_score` and `experiment_arm` = the
//! policy (`random`, `bts`), `request_id = obd:{policy}:{campaign}:{row}`
//! (row = the 0-based data row, equal to the file's unnamed index column),
//! video `obd:{item_id}`, timestamp parsed to milliseconds; plus a `Click`
//! when `click` is 1. **OBD has no user ids**: the user is a stable hash of
//! `user_feature_0..3` ([`obd::obd_user_id`]), so "users" are groups of
//! identical features. The catalogue comes from `item_context.csv`: id
//! `obd:{item_id}`, topics `item_feature_1:<hash>` … `item_feature_3:<hash>`,
//! duration 0. Positions here are the logging policy's (random or Thompson
//! sampling), so these are the data that show real position effects.
//!
//! # Generic events ([`import_generic`])
//!
//! A platform's own logs as CSV or JSON Lines, one event per row, in the
//! columns of [`generic`] (with examples there), validated by the same rules
//! as the Feedback service (`Event::from_proto`), plus an optional catalogue
//! (CSV or the project's `catalog.jsonl`). Rows are sorted by time (stably).
//!
//! # How the ranking labels come out of these events
//!
//! The trainer joins each impression with the outcomes sharing its
//! `request_id` and video. Per source:
//!
//! | task | MovieLens | Open Bandit | generic |
//! |---|---|---|---|
//! | click | 1 for the rated movie, 0 for the sampled negatives | `click` column | a `click` event |
//! | watch time | none: always 0 (give the task no weight on this source) | none (no watch events) | `seconds_watched` of `watch` |
//! | like | rating ≥ 4 | none | a `like` event |
//! | dismiss | rating ≤ 2 | none | a `dismiss` event |
//! | rating | the rating, on the rated movie only | none | a `rating` event |
//! | position bias | none (positions shuffled) | the logged positions | the logged positions |

pub mod error;
pub mod generic;
pub mod movielens;
pub mod obd;
pub mod report;
mod text;

pub use error::{ImportError, MAX_PROBLEMS, OnError};
pub use generic::{EventsFormat, GenericOptions, import_catalog, import_generic};
pub use movielens::{DEFAULT_NEGATIVES, MovieLensLayout, MovieLensOptions, import_movielens};
pub use obd::{ObdOptions, import_obd};
pub use report::{EventCounts, ImportReport, Imported};
