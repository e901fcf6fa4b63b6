//! The **context** candidate generator ([`Source::Context`]): high-recall
//! candidates from the request's context alone — its device, its local time
//! of day and the query video's topics — with no use of the user's history
//! beyond leaving watched videos out. It is the pipeline's cold-start net: a
//! brand-new user, an unknown query video or a video nobody has watched yet
//! still gets a sensible list, where co-watch and the sequence model have
//! nothing to say.
//!
//! # Lists
//! - **Trending by device × time of day** (module `trending`): one decayed count
//!   per video in each (device, `hour_bucket_hours`-wide local-hour bucket)
//!   cell, learned online in `observe` from watch and click events (weights
//!   `watch_weight`, `click_weight`), `n̂_c(v, t) = Σ_i w_i·2^(−(t − t_i)/h)`
//!   with half-life `h = trending_half_life_ms` (forward decay). Each cell
//!   tracks at most `2·tracked_per_list` videos and publishes its
//!   `top_list_len` best. Events carry no UTC offset: their hour is read at
//!   `event_utc_offset_minutes`; a request's at its own offset.
//! - **Global trending**: the same count over all devices and hours, the
//!   fallback when a cell has no data yet.
//! - **Fresh uploads on the query video's topics** (module `fresh`): from the
//!   catalogue, videos sharing a topic with the query video uploaded at most
//!   `fresh_max_age_ms` before the request time (and not after it), up to
//!   `fresh_per_topic` per topic, ordered by shared topics then recency.
//!
//! # Blend
//! The three ranked lists are merged by weighted reciprocal-rank fusion:
//!
//! `s(v) = Σ_l w_l / (κ + r_l(v))`
//!
//! over the lists `l` holding `v` at 1-based rank `r_l(v)` (counted after
//! removing the query and history videos), with weights
//! `w = (device_hour_weight, global_weight, fresh_weight)` and `κ = rrf_k`.
//! Ranks, not counts, are blended because the lists' scales are unrelated
//! (decayed counts vs recency); a video in several lists rises, and `κ`
//! flattens the head so that no single list monopolises the top. The
//! answer is the best `max` by `s(v)`, ties broken by id.
//!
//! An unknown query video still gets the two trending lists (no fresh
//! list), and a cell without data yet the global list; both say so in the
//! note. Nothing at all (no events, no usable catalogue) is an empty list
//! with a note, never an error.
//!
//! # Updates and concurrency
//! `generate` reads two immutable snapshots through [`ArcSwap`]s — the
//! published trending lists and the fresh-upload index — and takes no lock.
//! `observe` updates the counters under the **writer mutex** (counting is
//! a hash-map update per event) and publishes the changed lists as a new
//! snapshot at most every `publish_interval_ms` (and on
//! [`ContextGenerator::publish`]), so ingestion threads never wait on
//! readers and readers never see a half-updated list. `update_catalog`
//! builds the fresh index without any lock, swaps it in, then republishes
//! every list under the writer mutex so that videos gone from the
//! catalogue leave the trending lists.

pub mod config;
pub mod error;
mod fresh;
mod trending;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use watchnext_core::{
    Device, VideoId,
    catalog::Catalog,
    event::{Event, EventKind, Source},
    generator::{Candidate, Generated, Generator},
    request::Query,
};

pub use config::ContextConfig;
pub use error::ContextError;

use fresh::FreshIndex;
use trending::{Published, Trending, cell_index};

/// What only the writer touches.
#[derive(Debug)]
struct Writer {
    trending: Trending,
    /// When `observe` or [`ContextGenerator::publish`] last published (a
    /// catalogue republication does not count).
    last_publish: Option<Instant>,
    /// Events that are neither watches nor clicks (not counted).
    ignored: u64,
}

/// The context generator.
pub struct ContextGenerator {
    config: ContextConfig,
    fresh: ArcSwapOption<FreshIndex>,
    published: ArcSwap<Published>,
    writer: Mutex<Writer>,
    catalog_generation: AtomicU64,
}

/// Counters for health pages and metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContextStatus {
    /// Videos in the current catalogue (0 when none is loaded).
    pub videos: usize,
    /// The version answers carry.
    pub version: String,
    /// Watch and click events counted.
    pub events_counted: u64,
    /// Other events (not counted).
    pub events_ignored: u64,
    /// Counted events not yet visible to requests.
    pub events_unpublished: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves counters that are still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ContextGenerator {
    /// A generator with no catalogue and no trending data yet.
    pub fn new(config: ContextConfig) -> Result<Self, ContextError> {
        config.validate()?;
        let cells = Device::ALL.len() * config.buckets();
        let trending = Trending::new(&config);
        Ok(Self {
            fresh: ArcSwapOption::const_empty(),
            published: ArcSwap::from_pointee(Published::empty(cells)),
            writer: Mutex::new(Writer { trending, last_publish: None, ignored: 0 }),
            catalog_generation: AtomicU64::new(0),
            config,
        })
    }

    /// A generator serving `catalog`.
    pub fn with_catalog(config: ContextConfig, catalog: &Arc<Catalog>) -> Result<Self, ContextError> {
        let generator = Self::new(config)?;
        generator.update_catalog(catalog);
        Ok(generator)
    }

    /// The configuration.
    pub fn config(&self) -> &ContextConfig {
        &self.config
    }

    /// Publishes the trending lists now if any event is not yet visible.
    pub fn publish(&self) {
        let mut w = lock(&self.writer);
        if w.trending.unpublished > 0 {
            self.publish_locked(&mut w);
            w.last_publish = Some(Instant::now());
        }
    }

    /// Counters of the current state.
    pub fn status(&self) -> ContextStatus {
        let w = lock(&self.writer);
        let (counted, ignored, unpublished) = (w.trending.counted, w.ignored, w.trending.unpublished);
        drop(w);
        ContextStatus {
            videos: self.fresh.load().as_ref().map_or(0, |f| f.len()),
            version: self.version(),
            events_counted: counted,
            events_ignored: ignored,
            events_unpublished: unpublished,
        }
    }

    fn version(&self) -> String {
        let catalog = self.fresh.load().as_ref().map_or(0, |f| f.generation);
        format!("context/c{catalog}/t{}", self.published.load().generation)
    }

    fn publish_locked(&self, w: &mut Writer) {
        let previous = self.published.load_full();
        let fresh = self.fresh.load_full();
        let next = w.trending.publish(&self.config, &previous, fresh.as_ref().map(|f| f.catalog.as_ref()));
        self.published.store(Arc::new(next));
    }
}

impl fmt::Debug for ContextGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGenerator")
            .field("version", &self.version())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Reciprocal-rank fusion of ranked lists of ids, leaving `excluded` out.
struct Blend<'a> {
    k: f32,
    excluded: HashSet<&'a str>,
    slots: HashMap<&'a str, usize>,
    scored: Vec<(f32, &'a VideoId)>,
}

impl<'a> Blend<'a> {
    fn add_list(&mut self, weight: f32, list: impl Iterator<Item = &'a VideoId>) {
        if weight <= 0.0 {
            return;
        }
        let mut rank = 0.0f32;
        for id in list {
            if self.excluded.contains(id.as_str()) {
                continue;
            }
            rank += 1.0;
            let gain = weight / (self.k + rank);
            match self.slots.get(id.as_str()) {
                Some(&i) => self.scored[i].0 += gain,
                None => {
                    self.slots.insert(id.as_str(), self.scored.len());
                    self.scored.push((gain, id));
                }
            }
        }
    }
}

impl Generator for ContextGenerator {
    fn source(&self) -> Source {
        Source::Context
    }

    fn generate(&self, query: &Query, max: usize) -> Generated {
        let c = &self.config;
        let fresh = self.fresh.load();
        let published = self.published.load();
        let mut notes: Vec<String> = Vec::new();

        let hour = query.context.local_hour() as usize;
        let bucket_hours = c.hour_bucket_hours as usize;
        let cell = published.cells.get(cell_index(query.device, hour, bucket_hours, c.buckets()));
        let cell = cell.map(|l| l.items.as_slice()).unwrap_or(&[]);
        let from = hour / bucket_hours * bucket_hours;
        let slot = || format!("{} at {from:02}-{:02}h", query.device.name(), from + bucket_hours);

        let mut excluded: HashSet<&str> = HashSet::with_capacity(query.history.len() + 1);
        excluded.insert(query.query_video.as_str());
        excluded.extend(query.history.0.iter().map(|h| h.video.as_str()));
        let capacity = cell.len() + published.global.items.len() + c.fresh_per_topic * 3;
        let mut blend = Blend {
            k: c.rrf_k,
            excluded,
            slots: HashMap::with_capacity(capacity),
            scored: Vec::with_capacity(capacity),
        };
        blend.add_list(c.device_hour_weight, cell.iter().map(|(v, _)| v));
        blend.add_list(c.global_weight, published.global.items.iter().map(|(v, _)| v));

        match fresh.as_ref() {
            None => notes.push("no catalogue loaded yet: trending only".into()),
            Some(index) => match index.index_of(query.query_video.as_str()) {
                Some(q) => {
                    // Past rank `max` a fresh upload adds at most w_f/(κ + max): cut there.
                    let found = index.fresh_on_topics(
                        q,
                        query.context.time_ms,
                        c.fresh_max_age_ms,
                        c.fresh_per_topic,
                        max.max(1),
                    );
                    blend.add_list(c.fresh_weight, found.iter().filter_map(|f| index.id(f.video)));
                }
                None => notes.push(format!(
                    "query video `{}` is not in the catalogue: fell back to trending for {}",
                    query.query_video,
                    slot()
                )),
            },
        }
        if cell.is_empty() {
            if published.global.items.is_empty() {
                notes.push("no trending data yet".into());
            } else {
                notes.push(format!("no trending data for {} yet: global trending", slot()));
            }
        }

        let mut scored = blend.scored;
        let by_score = |a: &(f32, &VideoId), b: &(f32, &VideoId)| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if max == 0 {
            scored.clear();
        } else if scored.len() > max {
            scored.select_nth_unstable_by(max - 1, by_score);
            scored.truncate(max);
        }
        scored.sort_unstable_by(by_score);
        let candidates = scored.into_iter().map(|(score, v)| Candidate { video: v.clone(), score }).collect();
        let catalog = fresh.as_ref().map_or(0, |f| f.generation);
        Generated {
            candidates,
            note: notes.join("; "),
            version: format!("context/c{catalog}/t{}", published.generation),
        }
    }

    fn ready(&self) -> Result<(), String> {
        match self.fresh.load().as_ref() {
            None => Err("no catalogue loaded yet".into()),
            Some(f) if f.len() == 0 => Err("the catalogue is empty".into()),
            Some(_) => Ok(()),
        }
    }

    fn update_catalog(&self, catalog: &Arc<Catalog>) {
        let started = Instant::now();
        let generation = self.catalog_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let index = Arc::new(FreshIndex::build(Arc::clone(catalog), generation));
        let videos = index.len();
        // Concurrent updates: the newest generation wins.
        let previous = self.fresh.rcu(|current| match current {
            Some(c) if c.generation > generation => Some(Arc::clone(c)),
            _ => Some(Arc::clone(&index)),
        });
        if previous.as_ref().is_some_and(|p| p.generation > generation) {
            return;
        }
        let mut w = lock(&self.writer);
        w.trending.touch_all();
        self.publish_locked(&mut w);
        drop(w);
        tracing::info!(
            videos,
            generation,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "context index swapped in"
        );
    }

    fn sync(&self) {
        self.publish();
    }

    fn observe(&self, events: &[Event]) {
        let c = &self.config;
        let mut w = lock(&self.writer);
        for e in events {
            let weight = match e.kind {
                EventKind::Watch { .. } => c.watch_weight,
                EventKind::Click => c.click_weight,
                _ => {
                    w.ignored += 1;
                    continue;
                }
            };
            if weight > 0.0 {
                w.trending.add(c, &e.video, e.device, e.timestamp_ms, f64::from(weight));
            }
        }
        let due = w.last_publish.is_none_or(|at| at.elapsed() >= Duration::from_millis(c.publish_interval_ms));
        if w.trending.unpublished > 0 && due {
            self.publish_locked(&mut w);
            w.last_publish = Some(Instant::now());
        }
    }
}
