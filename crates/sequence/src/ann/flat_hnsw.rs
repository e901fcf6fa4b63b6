//! An HNSW of our own (Malkov & Yashunin, *Efficient and robust approximate
//! nearest neighbor search using Hierarchical Navigable Small World graphs*,
//! 2018), laid out for the cache rather than for pointer graphs.
//!
//! # Layout
//! - Nodes: one `Vec<f32>` of fixed-size blocks, node `i`'s block holding
//!   its vector (padded to the kernel's 16 lanes) and then its layer-0
//!   neighbours (up to `2M` ids stored as `f32` bit patterns, ended by a
//!   sentinel): scoring a node and then expanding it touch adjacent cache
//!   lines, as in `hnswlib`'s layout. For 64-d vectors and M = 16 a block is
//!   96 floats, six cache lines.
//! - Upper layers (1/M of the nodes): one `Vec<u32>` of `(1 + M)`-slot
//!   lists, a count first, node `i`'s level-`l` list at
//!   `upper_start[i] + (l − 1)(1 + M)`.
//! - While building, layer-0 lists live apart in `AtomicU32`s (see below)
//!   and are copied into the blocks when done.
//! - Distance is `−⟨a, b⟩` (smaller is nearer); candidates are `u64` keys
//!   packing (distance, node), so heap comparisons are integer compares and
//!   ties break by node on every run.
//! - Search scratch (a generation-stamped visited array of `u16`, the two
//!   heaps, the padded query) lives in a per-thread slot and is reused: a
//!   query allocates only its answer.
//!
//! # Building
//! Levels are drawn up front from a ChaCha8 stream seeded by
//! [`AnnParams::seed`] (`⌊−ln U · 1/ln M⌋`), so node `i`'s level does not
//! depend on scheduling. Insertion follows the paper: greedy descent to the
//! node's level, then per level a best-first search of width
//! `ef_construction`, neighbour selection by the paper's heuristic
//! (Algorithm 4: keep a candidate only if it is nearer the new node than
//! every neighbour kept so far), and reverse links; a full list is re-pruned
//! with the same heuristic (as `hnswlib` does), not merely by distance.
//!
//! Threads take node numbers from one atomic counter, so insertion is in
//! near order. While building, links are `AtomicU32`s written under a
//! per-node mutex and read without one: a reader may see a list mid-update,
//! but every slot always holds some valid node, which only makes the search
//! look at a stale neighbour (`hnswlib` locks instead; this is safe Rust
//! without locking readers). A node that raises the top level holds the
//! entry-point lock for its whole insertion, as in `hnswlib`. With one thread
//! the build is deterministic. When done, the atomics are frozen into plain
//! `Vec<u32>`s, and searching takes no lock at all.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kernel::{dot_padded, key_distance, key_node, pack};
use super::{AnnError, AnnIndex, AnnParams, Embeddings, check_query};

/// The highest level a node may get (beyond any realistic catalogue:
/// reaching level 16 with M = 16 takes ~16^16 nodes).
const MAX_LEVEL: usize = 16;

/// Our HNSW index (see the module docs).
#[derive(Debug, Clone)]
pub struct FlatHnsw {
    /// The vectors' dimension.
    dim: usize,
    /// Floats per stored vector (`dim` padded for the kernel).
    stride: usize,
    /// The caller's ids by node number.
    ids: Vec<u32>,
    /// One block of `block` floats per node: its vector (`stride` floats),
    /// then its layer-0 neighbours stored as `f32::from_bits(id)`, ended by
    /// [`NO_LINK`] when fewer than `m0`. Keeping a node's links beside its
    /// vector, as `hnswlib` does, means that expanding a node (whose vector
    /// was just read to score it) rarely misses the cache for its links.
    nodes: Vec<f32>,
    /// Floats per node block (`stride + m0`, padded to whole lanes).
    block: usize,
    /// Links per node on upper layers (`M`).
    m: usize,
    /// Links per node on layer 0 (`2M`).
    m0: usize,
    /// Upper-layer lists, `(1 + m)` slots each, count first.
    upper: Vec<u32>,
    /// Where node `i`'s level-1 list starts in `upper` (its lists for levels
    /// 1..=level follow); meaningless for level-0 nodes.
    upper_start: Vec<u32>,
    /// The node searches start from (the first node of the top level).
    entry: u32,
    /// The top level.
    top_level: usize,
}

/// Read access to neighbour lists: frozen (`&[u32]`) when searching,
/// atomic while building; the search code is shared.
trait Links {
    /// Appends the neighbours of `node` at `level` to `out`.
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>);
}

/// Where lists live, shared by the frozen and the building forms.
#[derive(Debug, Clone, Copy)]
struct Shape<'a> {
    /// Upper-layer links per list.
    m: usize,
    /// Layer-0 links per list.
    m0: usize,
    /// See [`FlatHnsw::upper_start`].
    upper_start: &'a [u32],
}

impl Shape<'_> {
    /// The slot range (count first) of `node`'s list at `level`.
    #[inline]
    fn list(&self, node: u32, level: usize) -> (bool, usize, usize) {
        if level == 0 {
            (true, node as usize * (1 + self.m0), self.m0)
        } else {
            (false, self.upper_start[node as usize] as usize + (level - 1) * (1 + self.m), self.m)
        }
    }
}

/// Ends a layer-0 list shorter than `m0` in a node block.
const NO_LINK: u32 = u32::MAX;

/// The frozen lists of a built index.
struct Frozen<'a> {
    shape: Shape<'a>,
    /// [`FlatHnsw::nodes`].
    nodes: &'a [f32],
    /// [`FlatHnsw::block`].
    block: usize,
    /// [`FlatHnsw::stride`].
    stride: usize,
    upper: &'a [u32],
}

impl Links for Frozen<'_> {
    #[inline]
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        if level == 0 {
            let links = &self.nodes[node as usize * self.block + self.stride..][..self.shape.m0];
            out.extend(links.iter().map(|x| x.to_bits()).take_while(|&id| id != NO_LINK));
        } else {
            let (_, start, _) = self.shape.list(node, level);
            let count = self.upper[start] as usize;
            out.extend_from_slice(&self.upper[start + 1..start + 1 + count]);
        }
    }
}

/// The lists while building.
struct Building<'a> {
    shape: Shape<'a>,
    links0: &'a [AtomicU32],
    upper: &'a [AtomicU32],
    /// One lock per node, held while its lists are written.
    locks: &'a [Mutex<()>],
}

impl Links for Building<'_> {
    #[inline]
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        let (start, cap, slots) = self.slots(node, level);
        let count = (slots[start].load(Ordering::Relaxed) as usize).min(cap);
        out.extend(slots[start + 1..start + 1 + count].iter().map(|s| s.load(Ordering::Relaxed)));
    }
}

impl Building<'_> {
    #[inline]
    fn slots(&self, node: u32, level: usize) -> (usize, usize, &[AtomicU32]) {
        let (base, start, cap) = self.shape.list(node, level);
        (start, cap, if base { self.links0 } else { self.upper })
    }

    fn lock(&self, node: u32) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it
        // inconsistent, so poisoning is ignored.
        self.locks[node as usize].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Overwrites `node`'s list at `level` (caller holds its lock).
    fn write(&self, node: u32, level: usize, list: &[u32]) {
        let (start, cap, slots) = self.slots(node, level);
        let len = list.len().min(cap);
        for (slot, &v) in slots[start + 1..].iter().zip(&list[..len]) {
            slot.store(v, Ordering::Relaxed);
        }
        slots[start].store(len as u32, Ordering::Relaxed);
    }
}

/// Per-thread search state, reused from query to query.
#[derive(Debug, Default)]
struct Scratch {
    /// `visited[i] == generation` marks node `i` seen in this search.
    visited: Vec<u16>,
    /// The current search's stamp.
    generation: u16,
    /// Nodes to expand, nearest first.
    candidates: BinaryHeap<Reverse<u64>>,
    /// The best `ef` found, farthest on top.
    results: BinaryHeap<u64>,
    /// Neighbours of the node being expanded.
    neighbours: Vec<u32>,
    /// The query, padded.
    query: Vec<f32>,
    /// Sorted results and selection work space.
    sorted: Vec<u64>,
    /// Neighbours kept by the heuristic.
    selected: Vec<u64>,
    /// Node ids of `selected`.
    ids: Vec<u32>,
}

impl Scratch {
    /// Starts a search over `n` nodes: a fresh stamp, clearing the array only
    /// when the 16-bit stamp wraps (once per 65,535 searches).
    fn new_search(&mut self, n: usize) {
        if self.visited.len() < n {
            self.visited.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.visited.fill(0);
            self.generation = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `node` seen; whether it was new.
    #[inline]
    fn visit(&mut self, node: u32) -> bool {
        let slot = &mut self.visited[node as usize];
        let new = *slot != self.generation;
        *slot = self.generation;
        new
    }
}

thread_local! {
    /// The scratch of queries on this thread (any index: stamps are per
    /// search, so sharing one array between indexes is sound).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl FlatHnsw {
    /// Builds the graph (see the module docs).
    pub fn build(embeddings: &Embeddings, params: &AnnParams) -> Result<Self, AnnError> {
        params.validate()?;
        let n = embeddings.len();
        let m = params.m;
        let m0 = 2 * m;
        let stride = super::kernel::padded(embeddings.dim());
        let block = super::kernel::padded(stride + m0);
        let mut nodes = vec![f32::from_bits(NO_LINK); n * block];
        for (i, b) in nodes.chunks_exact_mut(block).enumerate() {
            b[..stride].fill(0.0);
            b[..embeddings.dim()].copy_from_slice(embeddings.vector(i));
        }
        let levels = draw_levels(n, m, params.seed);
        let mut upper_start = Vec::with_capacity(n);
        let mut upper_len = 0usize;
        for &level in &levels {
            upper_start.push(u32::try_from(upper_len).map_err(|_| AnnError::InvalidParams("graph too large".into()))?);
            upper_len += usize::from(level) * (1 + m);
        }
        let mut index = Self {
            dim: embeddings.dim(),
            stride,
            ids: embeddings.ids().to_vec(),
            nodes,
            block,
            m,
            m0,
            upper: Vec::new(),
            upper_start,
            entry: 0,
            top_level: 0,
        };
        if n == 0 {
            return Ok(index);
        }
        let links0: Vec<AtomicU32> = (0..n * (1 + m0)).map(|_| AtomicU32::new(0)).collect();
        let upper: Vec<AtomicU32> = (0..upper_len).map(|_| AtomicU32::new(0)).collect();
        let locks: Vec<Mutex<()>> = (0..n).map(|_| Mutex::new(())).collect();
        let building = Building {
            shape: Shape { m, m0, upper_start: &index.upper_start },
            links0: &links0,
            upper: &upper,
            locks: &locks,
        };
        let entry = Mutex::new((0u32, usize::from(levels[0])));
        let next = AtomicUsize::new(1);
        let ef = params.ef_construction.max(m);
        let work = || {
            let mut scratch = Scratch::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                index.insert(&building, &entry, i as u32, usize::from(levels[i]), ef, &mut scratch);
            }
        };
        let threads = params.thread_count().min(n);
        if threads <= 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(work);
                }
            });
        }
        let (entry, top_level) = *entry.lock().unwrap_or_else(PoisonError::into_inner);
        index.entry = entry;
        index.top_level = top_level;
        for (i, b) in index.nodes.chunks_exact_mut(block).enumerate() {
            let start = i * (1 + m0);
            let count = links0[start].load(Ordering::Relaxed) as usize;
            for (slot, link) in b[stride..stride + m0].iter_mut().zip(&links0[start + 1..start + 1 + count]) {
                *slot = f32::from_bits(link.load(Ordering::Relaxed));
            }
        }
        index.upper = upper.into_iter().map(AtomicU32::into_inner).collect();
        Ok(index)
    }

    #[inline]
    fn vector(&self, node: u32) -> &[f32] {
        &self.nodes[node as usize * self.block..][..self.stride]
    }

    /// `−⟨a, b⟩`: smaller is nearer.
    #[inline]
    fn distance(&self, query: &[f32], node: u32) -> f32 {
        -dot_padded(query, self.vector(node))
    }

    /// Inserts node `i` of level `level`.
    fn insert(
        &self,
        links: &Building<'_>,
        entry: &Mutex<(u32, usize)>,
        i: u32,
        level: usize,
        ef: usize,
        scratch: &mut Scratch,
    ) {
        let guard = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut current, top) = *guard;
        // Only a node that raises the top level keeps the lock (rare).
        let held = if level > top {
            Some(guard)
        } else {
            drop(guard);
            None
        };
        let query = self.vector(i);
        let mut current_dist = self.distance(query, current);
        for l in (level + 1..=top).rev() {
            (current, current_dist) = self.greedy(links, query, current, current_dist, l, scratch);
        }
        for l in (0..=level.min(top)).rev() {
            self.search_layer(links, query, current, current_dist, ef, l, scratch);
            scratch.sorted.clear();
            scratch.sorted.extend(scratch.results.drain());
            scratch.sorted.sort_unstable();
            // The nearest found is where the next level down starts.
            if let Some(&best) = scratch.sorted.first() {
                current = key_node(best);
                current_dist = key_distance(best);
            }
            let candidates = std::mem::take(&mut scratch.sorted);
            self.select(&candidates, self.m, &mut scratch.selected);
            scratch.sorted = candidates;
            scratch.ids.clear();
            scratch.ids.extend(scratch.selected.iter().map(|&k| key_node(k)));
            {
                let _lock = links.lock(i);
                links.write(i, l, &scratch.ids);
            }
            let cap = if l == 0 { self.m0 } else { self.m };
            for &neighbour in &scratch.ids {
                self.link_back(links, neighbour, i, l, cap, &mut scratch.sorted, &mut scratch.selected);
            }
        }
        if let Some(mut guard) = held {
            *guard = (i, level);
        }
    }

    /// Adds `new` to `node`'s list at `level`, re-pruning a full list with
    /// the heuristic.
    #[allow(clippy::too_many_arguments)]
    fn link_back(
        &self,
        links: &Building<'_>,
        node: u32,
        new: u32,
        level: usize,
        cap: usize,
        work: &mut Vec<u64>,
        selected: &mut Vec<u64>,
    ) {
        let _lock = links.lock(node);
        let (start, _, slots) = links.slots(node, level);
        let count = (slots[start].load(Ordering::Relaxed) as usize).min(cap);
        let list = &slots[start + 1..start + 1 + count];
        if list.iter().any(|s| s.load(Ordering::Relaxed) == new) {
            return;
        }
        if count < cap {
            slots[start + 1 + count].store(new, Ordering::Relaxed);
            slots[start].store((count + 1) as u32, Ordering::Relaxed);
            return;
        }
        let base = self.vector(node);
        work.clear();
        work.extend(
            list.iter().map(|s| s.load(Ordering::Relaxed)).chain([new]).map(|c| pack(self.distance(base, c), c)),
        );
        work.sort_unstable();
        self.select(work, cap, selected);
        for (slot, &key) in slots[start + 1..].iter().zip(selected.iter()) {
            slot.store(key_node(key), Ordering::Relaxed);
        }
        slots[start].store(selected.len() as u32, Ordering::Relaxed);
    }

    /// The paper's neighbour heuristic (Algorithm 4, without extension or
    /// kept pruned): walk `candidates` nearest first and keep one only if it
    /// is nearer the base point than every one kept so far — which spreads
    /// links over directions instead of bunching them in one cluster.
    fn select(&self, candidates: &[u64], m: usize, selected: &mut Vec<u64>) {
        selected.clear();
        for &c in candidates {
            if selected.len() >= m {
                break;
            }
            let c_node = key_node(c);
            let c_dist = key_distance(c);
            let c_vec = self.vector(c_node);
            if selected.iter().all(|&s| self.distance(c_vec, key_node(s)) >= c_dist) {
                selected.push(c);
            }
        }
    }

    /// Reads one float of every cache line of `nodes`' vectors: a software
    /// prefetch in safe Rust. The loop is a few instructions per line, so
    /// the out-of-order core has all the misses of a neighbour list in
    /// flight at once; the scoring loop that follows is ~50 instructions
    /// per vector, and left to itself keeps only a handful outstanding.
    /// (`hnswlib` uses `_mm_prefetch` for the same; that needs `unsafe`.)
    #[inline]
    fn touch(&self, nodes: &[u32]) {
        let mut sink = 0u32;
        for &node in nodes {
            for x in self.vector(node).iter().step_by(super::kernel::LANES) {
                sink |= x.to_bits();
            }
        }
        std::hint::black_box(sink);
    }

    /// Greedy descent on one level: move to a nearer neighbour while there
    /// is one.
    fn greedy<L: Links>(
        &self,
        links: &L,
        query: &[f32],
        mut current: u32,
        mut current_dist: f32,
        level: usize,
        scratch: &mut Scratch,
    ) -> (u32, f32) {
        loop {
            let mut moved = false;
            scratch.neighbours.clear();
            links.neighbours(current, level, &mut scratch.neighbours);
            for &nb in &scratch.neighbours {
                let d = self.distance(query, nb);
                if d < current_dist {
                    current_dist = d;
                    current = nb;
                    moved = true;
                }
            }
            if !moved {
                return (current, current_dist);
            }
        }
    }

    /// Best-first search of width `ef` on one level from `entry`; leaves the
    /// best `ef` in `scratch.results` (farthest on top).
    #[allow(clippy::too_many_arguments)]
    fn search_layer<L: Links>(
        &self,
        links: &L,
        query: &[f32],
        entry: u32,
        entry_dist: f32,
        ef: usize,
        level: usize,
        scratch: &mut Scratch,
    ) {
        scratch.new_search(self.ids.len());
        scratch.visit(entry);
        let first = pack(entry_dist, entry);
        scratch.candidates.push(Reverse(first));
        scratch.results.push(first);
        let mut worst = entry_dist;
        while let Some(Reverse(c)) = scratch.candidates.pop() {
            if key_distance(c) > worst && scratch.results.len() >= ef {
                break;
            }
            scratch.neighbours.clear();
            links.neighbours(key_node(c), level, &mut scratch.neighbours);
            // Keep only the unseen, then score them in one pass: the loads
            // of independent vectors overlap instead of queueing behind the
            // heap updates.
            let mut fresh = 0;
            for j in 0..scratch.neighbours.len() {
                let nb = scratch.neighbours[j];
                if scratch.visit(nb) {
                    scratch.neighbours[fresh] = nb;
                    fresh += 1;
                }
            }
            self.touch(&scratch.neighbours[..fresh]);
            for j in 0..fresh {
                let nb = scratch.neighbours[j];
                let d = self.distance(query, nb);
                if scratch.results.len() < ef || d < worst {
                    let key = pack(d, nb);
                    scratch.candidates.push(Reverse(key));
                    scratch.results.push(key);
                    if scratch.results.len() > ef {
                        scratch.results.pop();
                    }
                    worst = scratch.results.peek().map_or(d, |&k| key_distance(k));
                }
            }
        }
    }

    /// The frozen lists.
    fn frozen(&self) -> Frozen<'_> {
        Frozen {
            shape: Shape { m: self.m, m0: self.m0, upper_start: &self.upper_start },
            nodes: &self.nodes,
            block: self.block,
            stride: self.stride,
            upper: &self.upper,
        }
    }

    fn search_with(&self, scratch: &mut Scratch, query: &[f32], k: usize, ef: usize, out: &mut Vec<(u32, f32)>) {
        scratch.query.clear();
        scratch.query.extend_from_slice(query);
        scratch.query.resize(self.stride, 0.0);
        let q = std::mem::take(&mut scratch.query);
        let links = self.frozen();
        let mut current = self.entry;
        let mut current_dist = self.distance(&q, current);
        for l in (1..=self.top_level).rev() {
            (current, current_dist) = self.greedy(&links, &q, current, current_dist, l, scratch);
        }
        self.search_layer(&links, &q, current, current_dist, ef.max(k), 0, scratch);
        scratch.query = q;
        scratch.sorted.clear();
        scratch.sorted.extend(scratch.results.drain());
        scratch.sorted.sort_unstable();
        out.extend(scratch.sorted.iter().take(k).map(|&key| (self.ids[key_node(key) as usize], -key_distance(key))));
    }

    /// Each node's level, for tests.
    #[cfg(test)]
    fn level_of(&self, node: usize) -> usize {
        if node + 1 < self.upper_start.len() {
            (self.upper_start[node + 1] - self.upper_start[node]) as usize / (1 + self.m)
        } else {
            (self.upper.len() - self.upper_start[node] as usize) / (1 + self.m)
        }
    }
}

/// Node levels: `⌊−ln U / ln M⌋`, capped, from one seeded stream.
fn draw_levels(n: usize, m: usize, seed: u64) -> Vec<u8> {
    let scale = 1.0 / (m as f64).ln();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Uniform in (0, 1]: 53 random bits, never zero.
            let u = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
            ((-u.ln() * scale).floor() as usize).min(MAX_LEVEL) as u8
        })
        .collect()
}

impl AnnIndex for FlatHnsw {
    fn name(&self) -> &'static str {
        "flat_hnsw"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn memory_bytes(&self) -> usize {
        (self.nodes.len() + self.ids.len() + self.upper.len() + self.upper_start.len()) * 4
    }

    fn search_into(&self, query: &[f32], k: usize, ef: usize, out: &mut Vec<(u32, f32)>) -> Result<(), AnnError> {
        check_query(self.dim, query)?;
        out.clear();
        if k == 0 || self.ids.is_empty() {
            return Ok(());
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.search_with(&mut scratch, query, k, ef, out),
            // Only if a search re-entered on this thread: use a fresh one.
            Err(_) => self.search_with(&mut Scratch::default(), query, k, ef, out),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_exponential_law() {
        let levels = draw_levels(100_000, 16, 1);
        let above0 = levels.iter().filter(|&&l| l > 0).count() as f64 / 1e5;
        // P(level ≥ 1) = 1/M.
        assert!((above0 - 1.0 / 16.0).abs() < 0.005, "{above0}");
        assert_eq!(levels, draw_levels(100_000, 16, 1));
    }

    #[test]
    fn upper_lists_match_levels() {
        let dim = 4;
        let n = 2000;
        let data: Vec<f32> = (0..n * dim).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let emb = Embeddings::from_flat(dim, (0..n as u32).collect(), data).unwrap();
        let params = AnnParams { threads: 1, ..AnnParams::default() };
        let index = FlatHnsw::build(&emb, &params).unwrap();
        let levels = draw_levels(n, params.m, params.seed);
        for (i, &l) in levels.iter().enumerate() {
            assert_eq!(index.level_of(i), usize::from(l));
        }
        assert_eq!(index.top_level, usize::from(*levels.iter().max().unwrap()));
        // Every layer-0 list holds valid, distinct nodes other than itself.
        for node in 0..n as u32 {
            let mut nb = Vec::new();
            index.frozen().neighbours(node, 0, &mut nb);
            assert!(!nb.is_empty() && nb.len() <= index.m0);
            assert!(nb.iter().all(|&x| (x as usize) < n && x != node));
            let mut sorted = nb.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), nb.len());
        }
    }
}
