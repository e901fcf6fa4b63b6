//! Trending counters learned online: one per (device, time-of-day bucket)
//! cell and one global, each a bounded map video → decayed count, and the
//! immutable top lists published from them for serving.
//!
//! **Decay** is forward decay: an event of weight `w` at `t_i` adds
//! `w·2^((t_i − T_ref)/h)` to the video's mass, so the decayed count at any
//! `t`, `n̂(t) = Σ_i w·2^(−(t − t_i)/h)`, is the mass times one factor shared
//! by every video: ranking needs no decay pass. When `t − T_ref` passes 256
//! half-lives every mass is rescaled and `T_ref` moves (rare).
//!
//! **Bounded size**: a counter tracks at most `2·C` videos (`C` =
//! `tracked_per_list`); reaching that, it keeps its `C` largest masses and
//! forgets the rest (amortised O(1) per event). A video forgotten while
//! climbing starts again from zero, which can only delay it: the top of a
//! list, far above the pruning line, is exact.
//!
//! The counters belong to the writer (under the generator's writer mutex);
//! [`Trending::publish`] turns the counters changed since the last
//! publication into new [`TopList`]s, sharing the unchanged ones.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
};

use watchnext_core::{Device, VideoId, catalog::Catalog};

use crate::config::ContextConfig;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Half-lives past `T_ref` after which masses are rebased.
const REBASE_HALF_LIVES: f64 = 256.0;
/// Exponent clamp for events far older than `T_ref`.
const MIN_EXPONENT: f64 = -1_000.0;

/// A video id usable as a map key looked up by `&str`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(VideoId);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

/// One bounded map video → forward-decayed mass.
#[derive(Debug, Default)]
struct Counter {
    masses: HashMap<Key, f64>,
    /// Changed since the last publication.
    dirty: bool,
}

impl Counter {
    fn add(&mut self, video: &VideoId, mass: f64, tracked: usize) {
        match self.masses.get_mut(video.as_str()) {
            Some(m) => *m += mass,
            None => {
                self.masses.insert(Key(video.clone()), mass);
            }
        }
        self.dirty = true;
        if self.masses.len() >= 2 * tracked {
            self.prune(tracked);
        }
    }

    /// Keeps the `keep` largest masses.
    fn prune(&mut self, keep: usize) {
        let mut all: Vec<(Key, f64)> = self.masses.drain().collect();
        if all.len() > keep {
            all.select_nth_unstable_by(keep - 1, by_mass);
            all.truncate(keep);
        }
        self.masses.extend(all);
    }

    fn scale(&mut self, factor: f64) {
        for m in self.masses.values_mut() {
            *m *= factor;
        }
    }

    /// The `len` largest masses that pass `keep`, best first.
    fn top(&self, len: usize, keep: impl Fn(&str) -> bool) -> TopList {
        let mut all: Vec<(&Key, f64)> = self.masses.iter().map(|(k, &m)| (k, m)).collect();
        let by = |a: &(&Key, f64), b: &(&Key, f64)| b.1.total_cmp(&a.1).then_with(|| a.0.0.cmp(&b.0.0));
        // Room for some videos that `keep` turns down before sorting only the head.
        let head = len.saturating_mul(2).max(1);
        if all.len() > head {
            all.select_nth_unstable_by(head - 1, by);
            all.truncate(head);
        }
        all.sort_unstable_by(by);
        let items =
            all.into_iter().filter(|(k, _)| keep(k.0.as_str())).take(len).map(|(k, m)| (k.0.clone(), m)).collect();
        TopList { items }
    }
}

fn by_mass(a: &(Key, f64), b: &(Key, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then_with(|| a.0.0.cmp(&b.0.0))
}

/// A published trending list: videos by decayed count, best first. The
/// masses are comparable within one publication only.
#[derive(Debug, Default)]
pub(crate) struct TopList {
    pub(crate) items: Vec<(VideoId, f64)>,
}

/// The lists one request reads.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// One list per (device, bucket): index `device·buckets + bucket`.
    pub(crate) cells: Vec<Arc<TopList>>,
    pub(crate) global: Arc<TopList>,
    /// Counts publications, from 0 (nothing published yet).
    pub(crate) generation: u64,
}

impl Published {
    pub(crate) fn empty(cells: usize) -> Self {
        Self { cells: (0..cells).map(|_| Arc::default()).collect(), global: Arc::default(), generation: 0 }
    }
}

/// The writer's counters.
#[derive(Debug)]
pub(crate) struct Trending {
    cells: Vec<Counter>,
    global: Counter,
    /// `T_ref`, set by the first event.
    ref_ms: Option<i64>,
    buckets: usize,
    /// Events counted.
    pub(crate) counted: u64,
    /// Events since the last publication.
    pub(crate) unpublished: u64,
    /// Publications so far.
    generation: u64,
}

impl Trending {
    pub(crate) fn new(config: &ContextConfig) -> Self {
        let buckets = config.buckets();
        Self {
            cells: (0..Device::ALL.len() * buckets).map(|_| Counter::default()).collect(),
            global: Counter::default(),
            ref_ms: None,
            buckets,
            counted: 0,
            unpublished: 0,
            generation: 0,
        }
    }

    /// Counts one event of weight `w` (watch or click) at `t_ms` on `device`.
    pub(crate) fn add(&mut self, config: &ContextConfig, video: &VideoId, device: Device, t_ms: i64, w: f64) {
        let h = config.trending_half_life_ms as f64;
        let ref_ms = *self.ref_ms.get_or_insert(t_ms);
        let ref_ms = if (t_ms - ref_ms) as f64 / h > REBASE_HALF_LIVES {
            let factor = (-((t_ms - ref_ms) as f64) / h).exp2();
            self.global.scale(factor);
            for c in &mut self.cells {
                c.scale(factor);
            }
            self.ref_ms = Some(t_ms);
            t_ms
        } else {
            ref_ms
        };
        let mass = w * (((t_ms - ref_ms) as f64 / h).max(MIN_EXPONENT)).exp2();
        let local = t_ms + i64::from(config.event_utc_offset_minutes) * 60_000;
        let hour = (local.rem_euclid(DAY_MS) / HOUR_MS) as usize;
        let cell = cell_index(device, hour, config.hour_bucket_hours as usize, self.buckets);
        if let Some(counter) = self.cells.get_mut(cell) {
            counter.add(video, mass, config.tracked_per_list);
        }
        self.global.add(video, mass, config.tracked_per_list);
        self.counted += 1;
        self.unpublished += 1;
    }

    /// Marks every list changed (the catalogue filter changed).
    pub(crate) fn touch_all(&mut self) {
        self.global.dirty = true;
        for c in &mut self.cells {
            c.dirty = true;
        }
    }

    /// New lists for the counters changed since `previous` was published;
    /// videos not in `catalog` (when one is loaded) are left out.
    pub(crate) fn publish(
        &mut self,
        config: &ContextConfig,
        previous: &Published,
        catalog: Option<&Catalog>,
    ) -> Published {
        let keep = |id: &str| catalog.is_none_or(|c| c.index_of(id).is_some());
        let len = config.top_list_len;
        let cells = self
            .cells
            .iter_mut()
            .enumerate()
            .map(|(i, c)| match previous.cells.get(i) {
                Some(old) if !c.dirty => Arc::clone(old),
                _ => {
                    c.dirty = false;
                    Arc::new(c.top(len, keep))
                }
            })
            .collect();
        let global = if self.global.dirty {
            self.global.dirty = false;
            Arc::new(self.global.top(len, keep))
        } else {
            Arc::clone(&previous.global)
        };
        self.generation += 1;
        self.unpublished = 0;
        Published { cells, global, generation: self.generation }
    }
}

/// The cell of `device` at local hour `hour`.
pub(crate) fn cell_index(device: Device, hour: usize, bucket_hours: usize, buckets: usize) -> usize {
    device.index() * buckets + (hour % 24) / bucket_hours.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> VideoId {
        VideoId::parse("v", s).unwrap()
    }

    #[test]
    fn counters_prune_to_their_largest_masses() {
        let mut c = Counter::default();
        for (i, m) in [5.0, 1.0, 4.0, 2.0].into_iter().enumerate() {
            c.add(&id(&format!("v{i}")), m, 2);
        }
        // The 4th insertion reached 2·2 entries: pruned to the 2 largest.
        assert_eq!(c.masses.len(), 2);
        assert!(c.masses.contains_key("v0") && c.masses.contains_key("v2"));
        let top = c.top(5, |s| s != "v2");
        assert_eq!(top.items.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["v0"]);
    }

    #[test]
    fn events_land_in_their_device_and_hour_cell_and_decay() {
        let config = ContextConfig { trending_half_life_ms: HOUR_MS, ..ContextConfig::default() };
        let mut t = Trending::new(&config);
        let base = 10 * DAY_MS;
        t.add(&config, &id("a"), Device::Tv, base + 21 * HOUR_MS, 1.0);
        t.add(&config, &id("b"), Device::Tv, base + 23 * HOUR_MS, 1.0);
        let tv21 = cell_index(Device::Tv, 21, 2, 12);
        assert_eq!(tv21, cell_index(Device::Tv, 20, 2, 12));
        assert_ne!(tv21, cell_index(Device::Tv, 22, 2, 12));
        assert_eq!(t.cells[tv21].masses.len(), 1);
        let published = t.publish(&config, &Published::empty(t.cells.len()), None);
        // b is two half-lives later: its mass is 4 times a's.
        let g = &published.global.items;
        assert_eq!(g[0].0.as_str(), "b");
        assert!((g[0].1 / g[1].1 - 4.0).abs() < 1e-9);
        // Far later events rebase without changing ratios.
        t.add(&config, &id("c"), Device::Tv, base + 400 * HOUR_MS, 1.0);
        t.add(&config, &id("d"), Device::Tv, base + 401 * HOUR_MS, 1.0);
        let second = t.publish(&config, &published, None);
        let g = &second.global.items;
        assert_eq!(g[0].0.as_str(), "d");
        assert!((g[0].1 / g[1].1 - 2.0).abs() < 1e-9);
        assert!(Arc::ptr_eq(&published.cells[tv21], &second.cells[tv21]), "an unchanged list is shared");
        assert!(!Arc::ptr_eq(&published.global, &second.global));
    }
}
