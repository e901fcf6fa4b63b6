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
//! - **rows**: id → the video's row: n(v) (decayed watch total), the decay
//!   time of its scale and of its last update, and at most K neighbours
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
//! window (the last W = `window_size` watches, default 10) first drops
//! entries older than t − T (`window_minutes`; by default no time limit: a
//! user's taste does not expire between sessions, and γ and W already
//! favour the watches just before) and any earlier watch of b; then for
//! each remaining entry a at distance d (1 = the watch just before)
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
//! s(a, b) = c / √(max(n(a), c) · max(n(b), c)) · c / (c + β)
//! ```
//!
//! with c = c(a, b) and n(a) read at a's last update t_a and n(b) at
//! max(t_a, t_b) (see "Time decay").
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
//! does not inherit its evidence. Because c is read at the row's own last
//! update, the shrinkage weighs how much evidence the row has, not how long
//! ago it came.
//!
//! # Time decay
//!
//! Every value decays exponentially with half-life h (`half_life_hours`) of
//! **decay time** τ: its true value at τ is `stored · 2^(−(τ − base)/h)`,
//! where `base` is the row's own scale time, and an increment w at τ is
//! stored as `w · 2^((τ − base)/h)`. A row is rescaled (all its values
//! multiplied by 2^(−(τ − base)/h), base := τ) only when the factor would
//! pass 2^24, at most once per 24 half-lives. Why per-row scales rather than
//! per-entry timestamps or one global factor: an update costs one `exp2` and
//! no rescaling of other entries, entries in one list compare without any
//! `exp2` (same scale, which SpaceSaving needs on every replacement), a list
//! entry stays 12 bytes, and rescaling one row needs only that row's lock —
//! a global factor would need a stop-the-world pass over every row.
//!
//! **The decay clock.** τ follows event time, but advances by at most
//! h / `half_life_min_watches` (default 1M) per watch: a half-life passes
//! only when at least that many watches of newer evidence arrived. A busy
//! service (more than 1M watches a week) forgets at exactly h = 7 days; a
//! small or sparse log is not forgotten between its rare watches. (On
//! MovieLens, 100k ratings over 22 years, a 7-day half-life of event time
//! left each row with the evidence of its last few weeks — a user or two —
//! and cut HR@10 to a quarter; a year's half-life still to a third.) It is
//! event time, not wall time, so replaying a log rebuilds the same tables.
//! A watch older than the latest counts one step before the clock at most
//! (at its own time when `half_life_min_watches` = 0). An event stamped more
//! than a day ahead of the wall clock counts as wall clock + 1 day: one bogus
//! far-future timestamp would otherwise move a row's scale so far ahead that
//! every later watch added nothing to it.
//!
//! **Reading a row at its own time.** A score reads row a at its own last
//! update t_a, not at the clock: the ranking within a row (relative
//! freshness: a pair's evidence against the row's other, newer pairs) is the
//! same at any reading time, and a row whose evidence is old but all it has
//! is never wiped out — the clock can run thousands of half-lives past it
//! (2^−1000 underflows even a double) without touching its answer. The
//! partner's total n(b) is read at max(t_a, t_b): a partner watched since
//! counts with its popularity now (not with later watches inflated back to
//! t_a), a partner idle since has faded with a's evidence of it.
//!
//! # Top-K neighbours and the memory budget
//!
//! A row keeps at most K (`max_neighbours`, default 256) neighbours. When a new neighbour
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
//! `generate(query, max)` asks with the query video (weight 1) and the
//! user's last `blend_history` (4) distinct history videos, the j-th most
//! recent (j = 0, 1, …) weighted `blend_weight`·`blend_decay`^j (0.5·0.8^j):
//! a candidate's score is the sum of its weighted scores s(q, b) over the
//! query videos q. Of each query video's neighbours only its
//! `scored_neighbours` (64) strongest by decayed count are scored, which
//! bounds a request to 5·64 row look-ups (each neighbour looked up once
//! however many query videos reach it); the rest of the K kept make those
//! counts exact (SpaceSaving) rather than being scored — scoring all 256
//! found nothing more under `eval generators`. The query video and the videos of
//! `query.history` are dropped (a linear scan for short histories, a hash
//! set for long ones) and the best `max` returned, best first; only the best
//! few are sorted. `blend_below` > 0 restores the old rule of asking the
//! history only for a query video with fewer neighbours than that. With
//! nothing to offer the list is empty and the note says why (unknown query
//! video, no neighbours yet, no data at all); a list made of the history's
//! neighbours alone says so too.
//!
//! Under `watchnext eval generators` (leave-last-out) the textbook item
//! co-occurrence baseline (`watchnext_eval::cooccurrence`) is the bar.
//! HR@10 / NDCG@10 of these defaults, and with one of them set back:
//!
//! | | MovieLens small | world (default preset, 1M events) |
//! |---|---|---|
//! | these defaults | 0.134 / 0.074 | 0.246 / 0.139 |
//! | item co-occurrence baseline | 0.098 / 0.053 | 0.206 / 0.116 |
//! | `half_life_min_watches` = 0 (event time alone) | 0.031 / 0.016 | 0.243 / 0.142 |
//! | `max_neighbours` = 64 | 0.089 / 0.052 | 0.243 / 0.142 |
//! | `blend_history` = 0 (query video alone) | 0.098 / 0.052 | 0.197 / 0.112 |
//! | `window_minutes` = 120 | 0.130 / 0.071 | 0.217 / 0.122 |
//! | `distance_decay` = 0.8 | 0.116 / 0.066 | 0.239 / 0.137 |
//! | `shrinkage` = 0 | 0.116 / 0.068 | 0.216 / 0.121 |
//! | the old defaults together | 0.026 / 0.014 | 0.205 / 0.115 |
//!
//! (`max_neighbours` = 256 gains mostly at K = 50 and 100: HR@100 0.38 vs
//! 0.21 on MovieLens, 0.58 vs 0.44 on the world.)
//!
//! Asking five videos costs five videos' look-ups: at 1M tracked videos
//! (`cargo bench -p watchnext-benches --bench cowatch`, 100 candidates, a
//! 20-video history) a request takes ~80 µs on the 2-core reference
//! machine, against ~25 µs for the query video alone (`blend_history` = 0)
//! in the same run; `scored_neighbours` = 32 takes ~60 µs.
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
//! header (52 bytes)
//!   0   8  magic "WNCOWTCH"
//!   8   4  format version (u32) = 2
//!  12   4  flags (u32) = 0
//!  16   8  covered feedback-log sequence number (u64)
//!  24   8  clock: latest event time, Unix ms (i64)
//!  32   8  next id (u64)
//!  40   8  decay clock, ms (i64)
//!  48   4  CRC32C of bytes 0..48
//! videos, each (times in decay time):      then: 0x00, count (u64)
//!   0x01, id u32, name_len u16, name (UTF-8), base_ms i64, touched_ms i64,
//!   n(v) f32, k u16, k × (neighbour id u32, count f32, err f32)
//! windows, each (times in event time):     then: 0x00, count (u64)
//!   0x01, user_len u16, user (UTF-8), last_ms i64, m u16,
//!   m × (video id u32, time ms i64, weight f32)
//! trailer
//!   CRC32C (u32) of every byte before it
//! ```
//!
//! Version 1 (a 44-byte header without the decay clock, checksum at 40) is
//! still read: its rows' times were event times, which are valid decay
//! times, so it loads with the decay clock set to its clock. An unknown
//! version is refused, naming the versions this build reads.
//!
//! Loading checks the magic, the header checksum, the version, every length
//! and value (ids below the next id, finite non-negative counts, valid
//! names, no duplicates), the section counts, that nothing follows the last
//! section, and the whole-file checksum; only then is the new generator
//! handed over. Binary rather than JSON: floats round-trip bit for bit (a
//! loaded table answers exactly like the live one), a neighbour takes 12
//! bytes rather than ~25–40 characters, and the checksum covers every byte.
//! At 1M videos (K = 256: 5.3M neighbour entries, 223 bytes per video of
//! tables; 0.6M windows) the file is ~139 MiB, written in ~0.6 s and loaded
//! in ~2 s on the 2-core reference machine, most of it inserting into the
//! maps (`benches/benches/cowatch.rs` prints these figures).

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
