//! [`CowatchGenerator`]: the concurrent tables, online ingestion
//! ([`CowatchGenerator::observe_events`]), scoring and candidate generation,
//! eviction under the memory budget, and the memory report.

use std::{
    collections::{HashMap, HashSet, hash_map::RandomState},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use dashmap::{DashMap, mapref::entry::Entry};
use watchnext_core::{
    event::{Event, EventKind, Source},
    generator::{Candidate, Generated, Generator},
    ids::VideoId,
    request::{History, Query},
};

use crate::{
    config::CowatchConfig,
    error::CowatchError,
    hash::MixState,
    table::{Neighbour, VideoRow, decay},
    window::{UserWindow, WindowEntry},
};

/// Shards of every table. Each shard is a `RwLock` around a `hashbrown`
/// map; with 64 of them, two threads rarely want the same one, and a writer
/// holds one only for a single row update (a scan of at most K neighbours).
pub(crate) const SHARDS: usize = 64;

/// Event times more than this far ahead of the wall clock are taken as the
/// wall clock plus this: one watch stamped years ahead would otherwise move
/// a row's decay scale so far that later watches add nothing to it.
pub(crate) const MAX_FUTURE_MS: i64 = 24 * 3_600_000;

/// Histories up to this long are searched linearly when excluding watched
/// videos; longer ones go into a hash set first.
const LINEAR_HISTORY: usize = 16;

/// Bytes of one `hashbrown` slot holding `T` (the value and its control byte),
/// at the map's load factor of 7/8.
const fn slot_bytes<T>() -> usize {
    (std::mem::size_of::<T>() + 1) * 8 / 7
}

/// Fixed bytes of one tracked video: its slot in the row table, its slot in
/// the name interner, and the `Arc<str>` header of its name.
pub(crate) const VIDEO_FIXED_BYTES: usize =
    slot_bytes::<(u32, VideoRow)>() + slot_bytes::<(Arc<str>, u32)>() + 2 * std::mem::size_of::<usize>();

/// Fixed bytes of one user window (its slot; its entries are counted apart).
pub(crate) const WINDOW_FIXED_BYTES: usize = slot_bytes::<(Box<str>, UserWindow)>();

/// Heap bytes of a name of `len` bytes (allocations round up to 8).
pub(crate) fn name_heap_bytes(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// The co-watch candidate generator: "watched together with the query video".
///
/// Cheap to share (`Arc<CowatchGenerator>`): every method takes `&self`;
/// ingestion threads call [`Self::observe_events`] while request threads call
/// [`Generator::generate`].
pub struct CowatchGenerator {
    pub(crate) config: CowatchConfig,
    /// The half-life in ms (from the config).
    pub(crate) half_life_ms: f64,
    /// T in ms, `None` = unlimited (from the config).
    window_ms: Option<i64>,
    /// γ^0, γ^1, … γ^(W−1).
    gamma_pows: Vec<f32>,
    /// Video name → interned id. Keyed SipHash: the names come from clients.
    pub(crate) ids: DashMap<Arc<str>, u32, RandomState>,
    /// Interned id → the video's row (total and neighbours).
    pub(crate) rows: DashMap<u32, VideoRow, MixState>,
    /// User name → the user's window of recent watches. Only ingestion
    /// touches it; `generate` never does.
    pub(crate) windows: DashMap<Box<str>, UserWindow, RandomState>,
    /// The next id to hand out. Ids are never reused, so a neighbour entry
    /// naming an evicted video can never point at another one.
    pub(crate) next_id: AtomicU64,
    /// The generator's clock: the latest event time seen (Unix ms).
    pub(crate) clock_ms: AtomicI64,
    /// The decay clock, which rows' times are measured in (see the crate
    /// documentation, "Time decay"). It follows event time, so replaying a
    /// log reproduces the tables.
    pub(crate) decay: Mutex<DecayClock>,
    /// The most the decay clock advances per watch (from the config).
    decay_step_ms: Option<i64>,
    /// Rows in `rows` (kept apart so the budget check costs two loads).
    pub(crate) videos: AtomicUsize,
    /// Heap bytes owned by rows: names and neighbour lists' capacity.
    pub(crate) table_heap: AtomicI64,
    /// Windows in `windows`.
    pub(crate) users: AtomicUsize,
    /// Heap bytes owned by windows: user names and entry capacity.
    pub(crate) window_heap: AtomicI64,
    counters: Counters,
    /// Ingestion holds it shared, a snapshot exclusively: a snapshot sees
    /// no half-applied batch and matches the sequence number it is given.
    /// `generate` never takes it.
    pub(crate) ingest_gate: RwLock<()>,
    /// One eviction sweep at a time (others skip instead of waiting).
    evicting_videos: Mutex<()>,
    evicting_users: Mutex<()>,
}

/// Running totals behind [`CowatchStats`] (same meanings).
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    watches: AtomicU64,
    pair_updates: AtomicU64,
    evicted_videos: AtomicU64,
    evicted_users: AtomicU64,
    refused_videos: AtomicU64,
}

/// Counters and the memory estimate, for metrics, logs and benchmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct CowatchStats {
    /// Events passed to `observe` (all kinds).
    pub events_observed: u64,
    /// Watches (and clicks, when counted) that entered a window.
    pub watches: u64,
    /// Pair updates: one per (new watch, earlier watch in the window) pair,
    /// each adding to both c(a, b) and c(b, a).
    pub pair_updates: u64,
    /// Videos evicted by the memory budget so far.
    pub evicted_videos: u64,
    /// User windows evicted (expired or beyond `max_users`) so far.
    pub evicted_users: u64,
    /// Watches of new videos refused because the 2^32 ids were used up.
    pub refused_videos: u64,
    /// The clock: the latest event time seen, Unix ms.
    pub clock_ms: i64,
    /// The decay clock (ms; equal to `clock_ms` while watches arrive faster
    /// than one per `half_life_hours / half_life_min_watches`, behind it
    /// when they are sparser).
    pub decay_clock_ms: i64,
    /// The memory estimate.
    pub memory: MemoryReport,
}

/// The memory estimate (see the crate documentation, "Memory").
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryReport {
    /// Videos tracked.
    pub videos: usize,
    /// Bytes of the video tables (what the budget caps).
    pub table_bytes: u64,
    /// `table_bytes / videos` (0 when empty).
    pub bytes_per_video: f64,
    /// User windows held.
    pub users: usize,
    /// Bytes of the user windows (capped by `max_users`, not by the budget).
    pub window_bytes: u64,
    /// The configured budget for `table_bytes`.
    pub budget_bytes: u64,
}

impl MemoryReport {
    /// Everything: tables and windows.
    pub fn total_bytes(&self) -> u64 {
        self.table_bytes + self.window_bytes
    }
}

impl std::fmt::Debug for CowatchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CowatchGenerator")
            .field("videos", &self.videos.load(Relaxed))
            .field("users", &self.users.load(Relaxed))
            .field("clock_ms", &self.clock_ms.load(Relaxed))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What `generate` must not return: the query video and the user's history.
struct Exclusion<'a> {
    query: &'a str,
    history: &'a History,
    /// The history's names, for histories longer than [`LINEAR_HISTORY`].
    set: Option<HashSet<&'a str, MixState>>,
}

impl<'a> Exclusion<'a> {
    fn new(query: &'a Query) -> Self {
        let history = &query.history;
        let set = (history.len() > LINEAR_HISTORY).then(|| history.0.iter().map(|e| e.video.as_str()).collect());
        Self { query: query.query_video.as_str(), history, set }
    }

    /// How many videos it names at most.
    fn len(&self) -> usize {
        1 + self.history.len()
    }

    fn contains(&self, name: &str) -> bool {
        if name == self.query {
            return true;
        }
        match &self.set {
            Some(set) => set.contains(name),
            None => self.history.0.iter().any(|e| e.video.as_str() == name),
        }
    }
}

impl CowatchGenerator {
    /// An empty generator.
    pub fn new(config: CowatchConfig) -> Result<Self, CowatchError> {
        config.validate()?;
        let mut gamma_pows = Vec::with_capacity(config.window_size);
        let mut g = 1.0f32;
        for _ in 0..config.window_size {
            gamma_pows.push(g);
            g *= config.distance_decay;
        }
        Ok(Self {
            half_life_ms: config.half_life_ms(),
            window_ms: config.window_ms(),
            gamma_pows,
            ids: DashMap::with_hasher_and_shard_amount(RandomState::new(), SHARDS),
            rows: DashMap::with_hasher_and_shard_amount(MixState, SHARDS),
            windows: DashMap::with_hasher_and_shard_amount(RandomState::new(), SHARDS),
            next_id: AtomicU64::new(0),
            clock_ms: AtomicI64::new(i64::MIN),
            decay: Mutex::new(DecayClock::START),
            decay_step_ms: config.decay_step_ms(),
            videos: AtomicUsize::new(0),
            table_heap: AtomicI64::new(0),
            users: AtomicUsize::new(0),
            window_heap: AtomicI64::new(0),
            counters: Counters::default(),
            ingest_gate: RwLock::new(()),
            evicting_videos: Mutex::new(()),
            evicting_users: Mutex::new(()),
            config,
        })
    }

    pub fn config(&self) -> &CowatchConfig {
        &self.config
    }

    /// The weight ω of a watch (see the crate documentation).
    fn watch_weight(&self, seconds: f32, duration: f32) -> f32 {
        if self.config.weight_by_watch_fraction && duration > 0.0 {
            let fraction = seconds / duration;
            // NaN (a malformed event built in-process) counts as the least weight.
            if fraction.is_nan() {
                self.config.min_watch_weight
            } else {
                fraction.clamp(self.config.min_watch_weight, 1.0)
            }
        } else {
            1.0
        }
    }

    /// Folds feedback events into the tables, in order. Watches (and clicks,
    /// when `click_weight > 0`) enter their user's window and pair with it;
    /// every other kind is skipped. The effect is visible to `generate` as
    /// soon as each row is updated: there is no rebuild step.
    pub fn observe_events(&self, events: &[Event]) {
        let _gate = self.ingest_gate.read().unwrap_or_else(PoisonError::into_inner);
        let mut pairs = Vec::with_capacity(self.config.window_size);
        let mut present = Vec::with_capacity(self.config.window_size);
        let (mut watches, mut pair_updates) = (0u64, 0u64);
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let latest = wall_ms.saturating_add(MAX_FUTURE_MS);
        for event in events {
            let weight = match event.kind {
                EventKind::Watch { seconds_watched, video_duration_seconds } => {
                    self.watch_weight(seconds_watched, video_duration_seconds)
                }
                EventKind::Click if self.config.click_weight > 0.0 => self.config.click_weight,
                _ => continue,
            };
            watches += 1;
            let t_ms = event.timestamp_ms.min(latest);
            pair_updates += self.observe_watch(event, t_ms, weight, &mut pairs, &mut present);
            if self.table_bytes() > self.config.memory_budget_bytes {
                self.evict_videos();
            }
            if self.users.load(Relaxed) > self.config.max_users {
                self.evict_users();
            }
        }
        self.counters.events.fetch_add(events.len() as u64, Relaxed);
        self.counters.watches.fetch_add(watches, Relaxed);
        self.counters.pair_updates.fetch_add(pair_updates, Relaxed);
    }

    /// The decay clock now (`i64::MIN` before the first watch).
    pub(crate) fn decay_now(&self) -> i64 {
        self.decay.lock().unwrap_or_else(PoisonError::into_inner).decay_ms
    }

    /// One watch of `event.video` at `t` with weight `weight`; returns the pairs updated.
    fn observe_watch(
        &self,
        event: &Event,
        t: i64,
        weight: f32,
        pairs: &mut Vec<(u32, f32)>,
        present: &mut Vec<(u32, f32)>,
    ) -> u64 {
        self.clock_ms.fetch_max(t, Relaxed);
        // The rows count in decay time, the user's window in event time.
        let (window_t, t) = (t, self.decay.lock().unwrap_or_else(PoisonError::into_inner).tick(t, self.decay_step_ms));
        let Some(b) = self.intern(event.video.as_str(), t) else {
            self.counters.refused_videos.fetch_add(1, Relaxed);
            return 0;
        };
        pairs.clear();
        self.push_window(event.user.as_str(), WindowEntry { id: b, t_ms: window_t, weight }, pairs);

        // a → b first, one row at a time (never two row guards at once, so
        // two rows in one shard cannot deadlock); remember which a's still
        // exist (an evicted video must not come back as a neighbour).
        let (hl, k) = (self.half_life_ms, self.config.max_neighbours);
        let mut grown = 0isize;
        present.clear();
        for &(a, w) in pairs.iter() {
            if w <= 0.0 {
                continue;
            }
            if let Some(mut row) = self.rows.get_mut(&a) {
                grown += row.add_pair(b, t, w, hl, k);
                present.push((a, w));
            }
        }
        // Then b's own row once: its total and b → a for every a.
        if let Some(mut row) = self.rows.get_mut(&b) {
            row.add_watch(t, weight, hl);
            for &(a, w) in present.iter() {
                grown += row.add_pair(a, t, w, hl, k);
            }
        }
        if grown != 0 {
            self.table_heap.fetch_add(grown as i64, Relaxed);
        }
        present.len() as u64
    }

    /// The interned id of `name`, creating the id and an empty row for a new
    /// video; `None` when the ids are used up.
    fn intern(&self, name: &str, t_ms: i64) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let name: Arc<str> = Arc::from(name);
        match self.ids.entry(Arc::clone(&name)) {
            Entry::Occupied(o) => Some(*o.get()),
            Entry::Vacant(v) => {
                let id = self.next_id.fetch_update(Relaxed, Relaxed, |n| (n < u64::from(u32::MAX)).then_some(n + 1));
                let id = u32::try_from(id.ok()?).ok()?;
                // The interner's shard stays locked until the row exists, so
                // no one sees the id without its row (lock order: ids, then rows).
                let heap = name_heap_bytes(name.len());
                self.rows.insert(id, VideoRow::new(name, t_ms));
                v.insert(id);
                self.videos.fetch_add(1, Relaxed);
                self.table_heap.fetch_add(heap as i64, Relaxed);
                Some(id)
            }
        }
    }

    fn push_window(&self, user: &str, entry: WindowEntry, pairs: &mut Vec<(u32, f32)>) {
        let w = self.config.window_size;
        if let Some(mut window) = self.windows.get_mut(user) {
            window.push(entry, w, self.window_ms, &self.gamma_pows, pairs);
            return;
        }
        match self.windows.entry(Box::from(user)) {
            Entry::Occupied(mut o) => o.get_mut().push(entry, w, self.window_ms, &self.gamma_pows, pairs),
            Entry::Vacant(v) => {
                let mut window = UserWindow::with_capacity(w);
                window.push(entry, w, self.window_ms, &self.gamma_pows, pairs);
                let heap = name_heap_bytes(user.len()) + window.entries.capacity() * size_of::<WindowEntry>();
                v.insert(window);
                self.users.fetch_add(1, Relaxed);
                self.window_heap.fetch_add(heap as i64, Relaxed);
            }
        }
    }

    /// The estimated bytes of the video tables (what the budget caps).
    fn table_bytes(&self) -> u64 {
        let fixed = self.videos.load(Relaxed) * VIDEO_FIXED_BYTES;
        fixed as u64 + self.table_heap.load(Relaxed).max(0) as u64
    }

    fn window_bytes(&self) -> u64 {
        let fixed = self.users.load(Relaxed) * WINDOW_FIXED_BYTES;
        fixed as u64 + self.window_heap.load(Relaxed).max(0) as u64
    }

    /// Evicts the least recently updated videos until the tables are
    /// `evict_fraction` below the budget. One sweep at a time; a thread that
    /// finds one running goes on ingesting. Rows are removed one by one, so a
    /// reader waits at most for one removal.
    fn evict_videos(&self) {
        let Ok(_sweep) = self.evicting_videos.try_lock() else { return };
        let budget = self.config.memory_budget_bytes;
        if self.table_bytes() <= budget {
            return;
        }
        let target = (budget as f64 * f64::from(1.0 - self.config.evict_fraction)) as u64;
        let mut ages: Vec<(i64, u32)> = self.rows.iter().map(|r| (r.touched_ms, *r.key())).collect();
        ages.sort_unstable();
        let mut evicted = 0u64;
        for (touched, id) in ages {
            if self.table_bytes() <= target {
                break;
            }
            // Skip a row touched since the list was taken: it is recent now.
            if let Some((_, row)) = self.rows.remove_if(&id, |_, r| r.touched_ms <= touched) {
                self.ids.remove_if(&*row.name, |_, v| *v == id);
                let heap = row.heap_bytes() + name_heap_bytes(row.name.len());
                self.table_heap.fetch_sub(heap as i64, Relaxed);
                self.videos.fetch_sub(1, Relaxed);
                evicted += 1;
            }
        }
        self.counters.evicted_videos.fetch_add(evicted, Relaxed);
        tracing::debug!(evicted, bytes = self.table_bytes(), budget, "co-watch: evicted least recently updated videos");
    }

    /// Drops expired windows (no watch within T), then the least recently
    /// active ones, until `evict_fraction` below `max_users`.
    fn evict_users(&self) {
        let Ok(_sweep) = self.evicting_users.try_lock() else { return };
        let before = self.users.load(Relaxed);
        let target = (self.config.max_users as f64 * f64::from(1.0 - self.config.evict_fraction)) as usize;
        let drop_window = |user: &str, window: &UserWindow| {
            let heap = name_heap_bytes(user.len()) + window.entries.capacity() * size_of::<WindowEntry>();
            self.window_heap.fetch_sub(heap as i64, Relaxed);
            self.users.fetch_sub(1, Relaxed);
        };
        if let Some(limit) = self.window_ms {
            let expired = self.clock_ms.load(Relaxed).saturating_sub(limit);
            self.windows.retain(|user, window| {
                let keep = window.last_ms >= expired;
                if !keep {
                    drop_window(user, window);
                }
                keep
            });
        }
        if self.users.load(Relaxed) > target {
            let mut ages: Vec<(i64, Box<str>)> = self.windows.iter().map(|w| (w.last_ms, w.key().clone())).collect();
            ages.sort_unstable();
            for (last, user) in ages {
                if self.users.load(Relaxed) <= target {
                    break;
                }
                if let Some((user, window)) = self.windows.remove_if(&*user, |_, w| w.last_ms <= last) {
                    drop_window(&user, &window);
                }
            }
        }
        let evicted = before.saturating_sub(self.users.load(Relaxed));
        self.counters.evicted_users.fetch_add(evicted as u64, Relaxed);
    }

    /// Scores the neighbours of query video `id` and adds weight · s(id, b)
    /// to each neighbour b's entry in `acc` (see the crate documentation,
    /// "Score"). Returns whether the video is tracked.
    fn score_neighbours(&self, id: u32, weight: f64, acc: &mut Accumulator) -> bool {
        // Copy the row and let go of it before looking up the neighbours
        // (a neighbour may live in the same shard).
        let Some(a) = self.rows.get(&id).map(|row| {
            acc.list.clear();
            acc.list.extend_from_slice(&row.neighbours);
            RowTime::of(&row)
        }) else {
            return false;
        };
        let limit = self.config.scored_neighbours;
        if acc.list.len() > limit {
            // The strongest `limit` by evidence (one row's scale: no decay needed).
            acc.list.select_nth_unstable_by(limit, |x, y| y.evidence().total_cmp(&x.evidence()));
            acc.list.truncate(limit);
        }
        let beta = f64::from(self.config.shrinkage);
        let hl = self.half_life_ms;
        let fa = decay(a.base_ms, a.touched_ms, hl);
        let n_a = a.total * fa;
        for i in 0..acc.list.len() {
            let nb = acc.list[i];
            let evidence = nb.evidence();
            if evidence <= 0.0 || nb.id == id {
                continue;
            }
            // A neighbour already met (through another query video) is not
            // looked up again.
            let slot = match acc.index.get(&nb.id) {
                Some(&slot) => slot,
                None => {
                    let Some(b) = self.rows.get(&nb.id).map(|row| RowTime::of(&row)) else {
                        continue; // evicted since
                    };
                    acc.index.insert(nb.id, acc.scored.len());
                    acc.scored.push((nb.id, 0.0));
                    acc.rows.push(b);
                    acc.scored.len() - 1
                }
            };
            let n_b = partner_total(a.touched_ms, &acc.rows[slot], hl);
            let score = cosine_shrunk(f64::from(evidence) * fa, n_a, n_b, beta) * weight;
            if score.is_finite() && score > 0.0 {
                acc.scored[slot].1 += score;
            }
        }
        true
    }

    /// The score s(a, b) of b as a neighbour of a (`None` when b is not
    /// among a's neighbours or either is unknown); what `generate` ranks a's
    /// neighbours by (see the crate documentation, "Score").
    pub fn score(&self, a: &str, b: &str) -> Option<f32> {
        let ia = *self.ids.get(a)?;
        let ib = *self.ids.get(b)?;
        let (evidence, ra) = {
            let row = self.rows.get(&ia)?;
            (row.neighbours.iter().find(|n| n.id == ib)?.evidence(), RowTime::of(&row))
        };
        let rb = self.rows.get(&ib).map(|row| RowTime::of(&row))?;
        Some(pair_score(&ra, f64::from(evidence), &rb, self.half_life_ms, f64::from(self.config.shrinkage)) as f32)
    }

    /// The decayed co-watch evidence c(a, b) (SpaceSaving lower bound) at
    /// a's last update, as the score reads it.
    pub fn cowatch_count(&self, a: &str, b: &str) -> Option<f32> {
        let ia = *self.ids.get(a)?;
        let ib = *self.ids.get(b)?;
        let row = self.rows.get(&ia)?;
        let nb = row.neighbours.iter().find(|n| n.id == ib)?;
        Some((f64::from(nb.evidence()) * decay(row.base_ms, row.touched_ms, self.half_life_ms)) as f32)
    }

    /// The decayed watch total n(v) at v's last update.
    pub fn watch_total(&self, video: &str) -> Option<f32> {
        let id = *self.ids.get(video)?;
        let row = self.rows.get(&id)?;
        Some((f64::from(row.total) * decay(row.base_ms, row.touched_ms, self.half_life_ms)) as f32)
    }

    /// How many neighbours `video` keeps (at most K), `None` if untracked.
    pub fn neighbour_count(&self, video: &str) -> Option<usize> {
        let id = *self.ids.get(video)?;
        self.rows.get(&id).map(|r| r.neighbours.len())
    }

    /// The longest neighbour list and the number of neighbour entries in all
    /// (walks the whole table: for tests and reports, not the request path).
    pub fn neighbour_lists(&self) -> (usize, usize) {
        self.rows.iter().fold((0, 0), |(longest, all), r| (longest.max(r.neighbours.len()), all + r.neighbours.len()))
    }

    /// Whether `video` is tracked.
    pub fn contains(&self, video: &str) -> bool {
        let id = self.ids.get(video).map(|id| *id);
        id.is_some_and(|id| self.rows.contains_key(&id))
    }

    /// Counters and the memory estimate (cheap: atomics and lengths).
    pub fn stats(&self) -> CowatchStats {
        CowatchStats {
            events_observed: self.counters.events.load(Relaxed),
            watches: self.counters.watches.load(Relaxed),
            pair_updates: self.counters.pair_updates.load(Relaxed),
            evicted_videos: self.counters.evicted_videos.load(Relaxed),
            evicted_users: self.counters.evicted_users.load(Relaxed),
            refused_videos: self.counters.refused_videos.load(Relaxed),
            clock_ms: self.clock_ms.load(Relaxed),
            decay_clock_ms: self.decay_now(),
            memory: self.memory(),
        }
    }

    /// The memory estimate (see the crate documentation, "Memory").
    pub fn memory(&self) -> MemoryReport {
        let videos = self.videos.load(Relaxed);
        let table_bytes = self.table_bytes();
        MemoryReport {
            videos,
            table_bytes,
            bytes_per_video: if videos == 0 { 0.0 } else { table_bytes as f64 / videos as f64 },
            users: self.users.load(Relaxed),
            window_bytes: self.window_bytes(),
            budget_bytes: self.config.memory_budget_bytes,
        }
    }

    fn version(&self) -> String {
        format!("cowatch@{}", self.counters.events.load(Relaxed))
    }

    /// The query videos of a request, with their weights: the query video
    /// (1), then the last `blend_history` distinct videos of the history,
    /// the j-th most recent (j = 0, 1, …) weighted `blend_weight`·`blend_decay`^j.
    fn query_videos<'q>(&self, query: &'q Query) -> Vec<(&'q str, f64)> {
        let name = query.query_video.as_str();
        let mut out: Vec<(&str, f64)> = Vec::with_capacity(self.config.blend_history + 1);
        out.push((name, 1.0));
        let mut weight = f64::from(self.config.blend_weight);
        for entry in query.history.0.iter().rev() {
            if out.len() > self.config.blend_history {
                break;
            }
            let h = entry.video.as_str();
            if out.iter().any(|(v, _)| *v == h) {
                continue;
            }
            out.push((h, weight));
            weight *= f64::from(self.config.blend_decay);
        }
        out
    }

    /// The answer for `query` (see [`Generator::generate`] and the crate
    /// documentation, "Serving").
    pub fn candidates(&self, query: &Query, max: usize) -> Generated {
        let version = self.version();
        let name = query.query_video.as_str();
        if self.videos.load(Relaxed) == 0 {
            return Generated {
                candidates: Vec::new(),
                note: "no co-watch data yet: no watches observed and no snapshot loaded".into(),
                version,
            };
        }
        if max == 0 {
            return Generated { candidates: Vec::new(), note: String::new(), version };
        }
        let queries = self.query_videos(query);
        let mut acc =
            Accumulator::with_capacity(queries.len() * self.config.scored_neighbours.min(self.config.max_neighbours));
        let (mut own_known, mut own, mut blended) = (false, 0usize, 0usize);
        for (j, &(video, weight)) in queries.iter().enumerate() {
            if j > 0 && (weight <= 0.0 || (self.config.blend_below > 0 && own >= self.config.blend_below.min(max))) {
                break;
            }
            let Some(id) = self.ids.get(video).map(|id| *id) else { continue };
            let known = self.score_neighbours(id, weight, &mut acc);
            if j == 0 {
                own_known = known;
                own = acc.scored.len();
            } else if known {
                blended += 1;
            }
        }
        let from_history = acc.scored.len() - own;
        let candidates = self.best(&mut acc.scored, &Exclusion::new(query), max);
        let note = if candidates.is_empty() {
            if own_known {
                format!("query video `{name}` has no co-watch neighbours yet (outside the user's history)")
            } else {
                format!(
                    "query video `{name}` is unknown to the co-watch tables (never watched, or evicted), and the \
                     user's recent history offers no co-watch neighbours"
                )
            }
        } else if from_history > 0 && own == 0 {
            format!(
                "query video `{name}` has no co-watch neighbours; blended in those of the user's last {blended} history videos"
            )
        } else {
            String::new()
        };
        Generated { candidates, note, version }
    }

    /// The best `max` of `scored` (merged by id), best first, with names;
    /// skips excluded videos, evicted ones and a name seen under two ids (a
    /// video evicted and re-interned while the request read its rows).
    fn best(&self, scored: &mut Vec<(u32, f64)>, exclude: &Exclusion<'_>, max: usize) -> Vec<Candidate> {
        let order = |x: &(u32, f64), y: &(u32, f64)| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0));
        scored.retain(|s| s.1 > 0.0);
        // Only the best few need sorting: at most the history and the
        // query video can be skipped before `max` are found.
        let head = (max + exclude.len() + 1).min(scored.len());
        if head < scored.len() {
            scored.select_nth_unstable_by(head, order);
        }
        scored[..head].sort_unstable_by(order);
        let mut out: Vec<Candidate> = Vec::with_capacity(max.min(scored.len()));
        let mut names: HashSet<Arc<str>, MixState> = HashSet::with_capacity_and_hasher(out.capacity(), MixState);
        let mut sorted_all = head == scored.len();
        let mut i = 0;
        while out.len() < max && i < scored.len() {
            if i == head && !sorted_all {
                scored[head..].sort_unstable_by(order);
                sorted_all = true;
            }
            let (id, score) = scored[i];
            i += 1;
            let Some(name) = self.rows.get(&id).map(|row| row.name.clone()) else { continue };
            if exclude.contains(&name) || !names.insert(name.clone()) {
                continue;
            }
            if let Ok(video) = VideoId::parse_shared("video_id", &name) {
                out.push(Candidate { video, score: score as f32 });
            }
        }
        out
    }
}

/// One request's scores: candidate id → slot in `scored` (its summed
/// score) and `rows` (its row's total and times, looked up once).
struct Accumulator {
    index: HashMap<u32, usize, MixState>,
    scored: Vec<(u32, f64)>,
    rows: Vec<RowTime>,
    /// The neighbour list of the video being asked, copied.
    list: Vec<Neighbour>,
}

impl Accumulator {
    /// Room for `candidates` without growing.
    fn with_capacity(candidates: usize) -> Self {
        Self {
            index: HashMap::with_capacity_and_hasher(candidates, MixState),
            scored: Vec::with_capacity(candidates),
            rows: Vec::with_capacity(candidates),
            list: Vec::new(),
        }
    }
}

/// The decay clock and the event time it last advanced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecayClock {
    pub event_ms: i64,
    pub decay_ms: i64,
}

impl DecayClock {
    pub const START: Self = Self { event_ms: i64::MIN, decay_ms: i64::MIN };

    /// Advances to a watch at event time `t_ms` and returns the watch's
    /// decay time: the clock moves with event time, by at most `step_ms`
    /// per watch; a watch older than the latest counts at most one step
    /// before the clock (its own time when there is no step limit).
    pub fn tick(&mut self, t_ms: i64, step_ms: Option<i64>) -> i64 {
        if self.event_ms == i64::MIN {
            *self = Self { event_ms: t_ms, decay_ms: t_ms };
            return t_ms;
        }
        let lag = self.event_ms.saturating_sub(t_ms);
        if lag < 0 {
            let advance = step_ms.map_or(-lag, |s| s.min(-lag));
            self.decay_ms = self.decay_ms.saturating_add(advance);
            self.event_ms = t_ms;
            return self.decay_ms;
        }
        self.decay_ms.saturating_sub(step_ms.map_or(lag, |s| s.min(lag)))
    }
}

/// What the score needs of a row: its stored total, the time of its decay
/// scale and its last update.
struct RowTime {
    total: f64,
    base_ms: i64,
    touched_ms: i64,
}

impl RowTime {
    fn of(row: &VideoRow) -> Self {
        Self { total: f64::from(row.total), base_ms: row.base_ms, touched_ms: row.touched_ms }
    }
}

/// s(a, b) for the stored evidence `evidence` of b in a's row (see the crate
/// documentation, "Score" and "Time decay"): everything is read at a's own
/// last update t_a, except n(b), read at max(t_a, t_b), so neither an old
/// row's evidence nor a partner watched since can underflow or be inflated.
fn pair_score(a: &RowTime, evidence: f64, b: &RowTime, half_life_ms: f64, beta: f64) -> f64 {
    let fa = decay(a.base_ms, a.touched_ms, half_life_ms);
    let c = evidence * fa;
    let n_a = a.total * fa;
    cosine_shrunk(c, n_a, partner_total(a.touched_ms, b, half_life_ms), beta)
}

/// n(b) as a's score reads it: at max(t_a, t_b).
fn partner_total(a_touched_ms: i64, b: &RowTime, half_life_ms: f64) -> f64 {
    b.total * decay(b.base_ms, a_touched_ms.max(b.touched_ms), half_life_ms)
}

/// The normalised score: cosine c/√(n_a·n_b) times the shrinkage c/(c + β).
/// n_a and n_b are at least c (a pair cannot be more frequent than its
/// videos; guards against totals lost to eviction or rounding).
fn cosine_shrunk(c: f64, n_a: f64, n_b: f64, beta: f64) -> f64 {
    if c <= 0.0 {
        return 0.0;
    }
    c / (n_a.max(c) * n_b.max(c)).sqrt() * (c / (c + beta))
}

impl Generator for CowatchGenerator {
    fn source(&self) -> Source {
        Source::Cowatch
    }

    fn generate(&self, query: &Query, max: usize) -> Generated {
        self.candidates(query, max)
    }

    fn ready(&self) -> Result<(), String> {
        if self.videos.load(Relaxed) == 0 {
            return Err("no co-watch data yet: no watches observed and no snapshot loaded".into());
        }
        Ok(())
    }

    fn observe(&self, events: &[Event]) {
        self.observe_events(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_one_for_inseparable_pairs_and_shrinks_rare_ones() {
        assert!((cosine_shrunk(10.0, 10.0, 10.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_shrunk(1.0, 1.0, 1.0, 2.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!(cosine_shrunk(20.0, 20.0, 2_000.0, 2.0) < cosine_shrunk(15.0, 20.0, 40.0, 2.0));
        assert_eq!(cosine_shrunk(0.0, 1.0, 1.0, 2.0), 0.0);
    }

    #[test]
    fn the_fixed_size_estimate_is_plausible() {
        assert!((60..400).contains(&VIDEO_FIXED_BYTES), "{VIDEO_FIXED_BYTES}");
        assert_eq!(Neighbour::BYTES, 12);
    }
}
