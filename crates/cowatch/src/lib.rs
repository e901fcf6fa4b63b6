//! The co-watch candidate generator: "watched together with the query
//! video", one of the candidate generators of the first stage (topic,
//! co-watch, sequence, context). It learns **online** from the feedback log:
//! the server passes every batch of events to [`Generator::observe`] as the
//! log acknowledges it, and the next `generate` call sees the new counts —
//! there is no rebuild step. [`CowatchGenerator`] implements
//! [`watchnext_core::generator::Generator`] with source `Source::Cowatch`.
//!
//! # Data structures
//!
//! Three concurrent maps (`dashmap`, 64 shards each; a shard is a
//! reader-writer lock around a `hashbrown` table):
//!
//! - **ids**: video name → interned `u32` id. Ids are handed out in order and
//!   never reused, so an id left behind in a neighbour list after its video
//!   was evicted can only miss, never point at another video.
//! - **rows**: id → the video's row: n(v) (decayed watch total), the time of
//!   its decay scale, its last update, and at most K neighbours
//!   `(id: u32, count: f32, err: f32)` (12 bytes each), unordered.
//! - **windows**: user name → the user's last W watches (id, time, weight).
//!   Only ingestion touches them.
//!
//! **Locking.** A writer holds one shard's write lock for one row update (a
//! scan of at most K neighbours, ~100 ns) or one removal, and never holds two
//! row guards at once (no deadlock when two rows share a shard). `generate`
//! takes shard read locks, copies the query row's list (≤ K × 12 bytes) and
//! lets go before looking up each neighbour's total, so it waits at most for
//! one row update per lookup and never for a batch, an eviction sweep or a
//! snapshot. The tables are sharded maps rather than an `ArcSwap`ped index
//! because every watch changes them: copying an index per batch would cost
//! far more than short per-row locks.
//!
//! # Counting
//!
//! A watch event of video b by user u at time t has weight
//! ω_b = clamp(seconds watched / duration, `min_watch_weight`, 1) (1 when
//! the duration is unknown or `weight_by_watch_fraction` is off); a click
//! counts as a watch of weight `click_weight` when that is > 0. The user's
//! window first drops entries older than t − T and any earlier watch of b;
//! then for each remaining entry a at distance d (1 = the watch just before)
//!
//! ```text
//! w(a, b) = γ^(d−1) · √(ω_a · ω_b)        c(a, b) += w,  c(b, a) += w   (one "pair update")
//! n(b)   += ω_b
//! ```
//!
//! and b joins the window (the oldest leaves beyond W). Both directions are
//! stored, so each video's row holds its own list.
//!
//! # Score: co-watch normalised against popularity
//!
//! A blockbuster is co-watched with everything simply because everyone
//! watches it; raw counts c(a, b) would put it at the top of every list. The
//! score is the cosine of the two videos' watch vectors, with the evidence
//! shrunk toward 0 when it is thin:
//!
//! ```text
//! s(a, b) = c / √(max(n(a), c) · max(n(b), c)) · c / (c + β)     c = c(a, b) at the query time
//! ```
//!
//! The cosine divides by √n(b), so a partner that is watched only with a
//! beats a blockbuster that a's viewers also watched: for n(a) = 20,
//! c(a, p) = 15, n(p) = 40 the score is 0.53·…, for c(a, B) = 20 and
//! n(B) = 2,000 it is 0.10·…. It is symmetric in n(a) and n(b) (unlike lift
//! c·N/(n(a)·n(b)), which explodes for rare b), bounded by 1, and invariant
//! to decay (every count decays by the same factor). The factor c/(c + β)
//! (β = `shrinkage`, default 2) keeps two one-off viewers of two rare videos
//! from scoring 1: a pair seen once scores at most 1/3. c is SpaceSaving's
//! lower bound (count − err, see below), so a newcomer that inherited a slot
//! does not inherit its evidence.
//!
//! # Time decay
//!
//! Every value decays exponentially with half-life h (`half_life_hours`):
//! its true value at time t is `stored · 2^(−(t − base)/h)`, where `base` is
//! the row's own scale time, and an increment w at time t is stored as
//! `w · 2^((t − base)/h)`. A row is rescaled (all its values multiplied by
//! 2^(−(t − base)/h), base := t) only when the factor would pass 2^24, at
//! most once per 24 half-lives. Why per-row scales rather than per-entry
//! timestamps or one global factor: an update costs one `exp2` and no
//! rescaling of other entries, entries in one list compare without any
//! `exp2` (same scale, which SpaceSaving needs on every replacement), a list
//! entry stays 12 bytes, and rescaling one row needs only that row's lock —
//! a global factor would need a stop-the-world pass over every row. Time is
//! **event time**: the clock is the latest event time observed, so
//! replaying a log rebuilds the same tables. An event stamped more than a day
//! ahead of the wall clock counts as wall clock + 1 day: one bogus far-future
//! timestamp would otherwise move a row's scale so far ahead that every later
//! watch added nothing to it.
//!
//! # Top-K neighbours and the memory budget
//!
//! A row keeps at most K (`max_neighbours`) neighbours. When a new neighbour
//! arrives at a full list it takes the slot of the weakest one m, with count
//! c_m + w and error c_m (**SpaceSaving**): it is not the weakest any more, so
//! it survives until something weaker arrives, which is how newcomers get a
//! chance; any neighbour whose true count exceeds the list's minimum is never
//! lost; scoring uses count − err, the guaranteed part. Lists grow by
//! doubling up to K, so the long tail stays small.
//!
//! The rows, interner and neighbour lists are capped by
//! `memory_budget_bytes`: when the estimate passes it, one ingestion thread
//! (the others skip) sorts the rows by last update and removes the least
//! recently updated ones until the estimate is `evict_fraction` below the
//! budget, one removal at a time. Entries of other lists that name an
//! evicted video stay until SpaceSaving reuses their slots (they get no more
//! increments, so they sink to the minimum); `generate` skips them, and
//! a video watched again after eviction comes back under a new id. A sweep
//! costs a sort of the tracked videos, once per `evict_fraction` of the
//! budget. User windows are capped apart by
//! `max_users` (expired windows first, then the least recently active).
//!
//! **Memory** ([`MemoryReport`]): an estimate from the structures' sizes:
//! per video, its row slot and interner slot (`size_of` of the key-value
//! pair plus the control byte, over `hashbrown`'s 7/8 load factor) and the
//! name's `Arc` header, plus the heap it owns (the name rounded up to 8
//! bytes, the neighbour list's capacity × 12). Allocator overhead and the
//! tables' spare capacity after a sweep are not counted.
//!
//! # Serving
//!
//! `generate(query, max)` scores the query video's neighbours, drops the query
//! video and the videos of `query.history` (a linear scan for short
//! histories, a hash set for long ones) and returns the best `max`, best
//! first. When the query video has fewer than `blend_below` scored
//! neighbours (or is unknown), the neighbours of the user's last
//! `blend_history` distinct history videos are blended in, those of the j-th
//! most recent (j = 0, 1, …) scored s · `blend_weight`/(j + 1); a candidate
//! reached twice keeps its best score, and the note says so. With nothing to
//! offer the list is empty and the note says why (unknown query video, no
//! neighbours yet, no data at all).
//!
//! # Snapshots
//!
//! [`CowatchGenerator::snapshot`] writes the rows and the windows (so pairs
//! spanning the snapshot point are not lost), with the feedback-log sequence
//! number they cover; the server loads it at start-up
//! ([`CowatchGenerator::load`]) and replays only the log after that number.
//! It is written to a temporary file in the same folder, fsynced, renamed
//! over the old one and the folder fsynced, so a crash leaves the old or the
//! new file. Ingestion waits while it is written (the file is exactly the
//! state after the given sequence number); `generate` does not. All integers
//! little-endian; ids are the interned ids, kept as they are:
//!
//! ```text
//! header (44 bytes)
//!   0   8  magic "WNCOWTCH"
//!   8   4  format version (u32) = 1
//!  12   4  flags (u32) = 0
//!  16   8  covered feedback-log sequence number (u64)
//!  24   8  clock: latest event time, Unix ms (i64)
//!  32   8  next id (u64)
//!  40   4  CRC32C of bytes 0..40
//! videos, each:                             then: 0x00, count (u64)
//!   0x01, id u32, name_len u16, name (UTF-8), base_ms i64, touched_ms i64,
//!   n(v) f32, k u16, k × (neighbour id u32, count f32, err f32)
//! windows, each:                            then: 0x00, count (u64)
//!   0x01, user_len u16, user (UTF-8), last_ms i64, m u16,
//!   m × (video id u32, time ms i64, weight f32)
//! trailer
//!   CRC32C (u32) of every byte before it
//! ```
//!
//! Loading checks the magic, the header checksum, the version, every length
//! and value (ids below the next id, finite non-negative counts, valid
//! names, no duplicates), the section counts, that nothing follows the last
//! section, and the whole-file checksum; only then is the new generator
//! handed over. Binary rather than JSON: floats round-trip bit for bit (a
//! loaded table answers exactly like the live one), a neighbour takes 12
//! bytes rather than ~25–40 characters, and the checksum covers every byte. At 1M videos (3.9M
//! neighbour entries, 0.6M windows) the file is ~121 MiB, written in ~1 s and
//! loaded in ~2.5 s on the 2-core reference machine, most of it inserting
//! into the maps (`benches/benches/cowatch.rs` prints these figures).

mod config;
mod error;
mod generator;
mod hash;
mod snapshot;
mod table;
mod window;

pub use config::{CowatchConfig, MAX_NEIGHBOURS_LIMIT, MAX_WINDOW_LIMIT, MIN_MEMORY_BUDGET};
pub use error::CowatchError;
pub use generator::{CowatchGenerator, CowatchStats, MemoryReport};
pub use snapshot::{FORMAT_VERSION, HEADER_BYTES, MAGIC, SnapshotInfo};
#[doc(no_inline)]
pub use watchnext_core::generator::Generator;
