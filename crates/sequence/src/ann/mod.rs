//! Approximate nearest-neighbour search by inner product: the index layer
//! the sequence-model candidate generator asks for the videos whose
//! embeddings are nearest a user vector.
//!
//! # The trait and its implementations
//!
//! [`AnnIndex`] is what a generator holds (`Send + Sync`, searched from many
//! threads at once): [`AnnIndex::search`] returns the `k` ids with the
//! largest inner product with the query, best first, with `ef` the width of
//! the graph search (recall against speed; ignored by exact search).
//! [`AnnIndex::search_into`] does the same into a caller's vector, so a
//! steady caller allocates nothing per query. Indexes are built from
//! [`Embeddings`] (ids and one flat, validated block of vectors) with
//! [`AnnParams`], by [`build_index`] for a runtime choice ([`AnnKind`]) or by
//! each type's `build`.
//!
//! - [`HnswRsIndex`] — `hnsw_rs` 0.3.5, the library the product asked for,
//!   and [`AnnKind::default`]. We use it with our own distance
//!   ([`HnswRsDistance::Kernel`]) rather than its `DistDot`, and insert in
//!   parallel.
//! - [`FlatHnsw`] — an HNSW of our own (Malkov & Yashunin), with flat
//!   contiguous storage: ~8–10× faster than `hnsw_rs` to search and ~7×
//!   to build, on par with `hnswlib` (see below); the option to pick when
//!   speed matters ([`AnnKind::FlatHnsw`], `"flat_hnsw"`).
//! - [`ExactIndex`] — a full scan: ground truth for recall, and the right
//!   choice for small catalogues (below ~10k vectors a scan of 64-d vectors
//!   takes well under a millisecond and is never wrong).
//!
//! Scores are inner products with the query as given. Graph search over
//! inner product works best on normalised vectors (cosine), which is what the
//! embeddings will be; unnormalised vectors are accepted by every index
//! (`hnsw_rs` needs a trick for them, see [`HnswRsIndex`]).
//!
//! # Where the time goes (100k clustered 64-d vectors, M=16, ef_construction=200)
//!
//! Measured with `cargo bench -p watchnext-benches --bench ann` (side by side
//! with `hnswlib` in one run) and profiled with `perf record -e cpu-clock`
//! (this VM has no hardware counters). `hnsw_rs` out of the box searches
//! 9–10× slower than `hnswlib` here and builds 5× slower:
//!
//! 1. **Distance kernel.** `DistDot` without features is a serial `fold`:
//!    64 dependent float additions that LLVM may not reorder. Our
//!    [`Distance`](hnsw_rs::anndists::dist::distances::Distance) on the
//!    16-lane kernel (module `kernel`) searches 1.15–1.6× faster at the same
//!    `ef` — the only lever from outside the crate, and about what its
//!    `simdeez_f` feature gives, without that dependency. It barely moves
//!    the build (34 → 32 s), which is bound by the next point.
//! 2. **Data layout** — the bulk of what remains. With our kernel, 59% of
//!    `hnsw_rs`'s samples are in `search_layer`, two thirds of those on one
//!    load: a neighbour's `PointId`, reached through `Arc<PointWithOrder>`
//!    → `Arc<Point>`, two dependent cache misses *before* the visited check;
//!    then the kernel (26%) stalls on its first load, the vector being in a
//!    third heap block.
//! 3. **Allocation and reference counting**: a fresh `Arc<PointWithOrder>`
//!    per accepted candidate (each cloning an `Arc<Point>`), a new visited
//!    `HashMap` per layer searched, a `Vec` per answer: malloc, free,
//!    `Arc::drop_slow` and rehashing take ~8%.
//! 4. **Locking**: a `parking_lot` read lock per expanded node, searching or
//!    not (small next to the misses).
//! 5. **Graph**: reverse links are shrunk by distance, not by the neighbour
//!    heuristic, and upper layers are descended by one pass over the
//!    pivot's neighbours; at equal `ef` its recall is a little lower than
//!    `hnswlib`'s, so it needs a larger `ef`.
//!
//! Points 2–5 are inside the crate: no parameter, feature or calling pattern
//! reaches them, so tuned `hnsw_rs` stays 7–9× behind `hnswlib` on
//! queries/s and ~5× on build time, and uses ~5× its memory. Hence
//! [`FlatHnsw`]; its own profile taught three more things:
//!
//! - LLVM's SLP vectoriser turned a 16-accumulator loop followed by a
//!   *tree* reduction into 2-wide SSE (`movsd` + `mulps`); a plain serial
//!   sum of the lanes keeps the loop 4-wide: ~2× on build and search.
//! - Neighbour lists in their own array cost a cache miss per expanded
//!   node (10% of samples on loading the count); keeping layer 0's links in
//!   the node's block, beside its vector, removed it.
//! - Then ~60% of samples sat on the first multiply of each vector: memory
//!   latency. Touching one float per cache line of every fresh neighbour
//!   before scoring them (a prefetch in safe Rust) puts those misses in
//!   flight together: +35–45% queries/s.
//!
//! With these it is a little faster than `hnswlib` at the same recall
//! (0.82–0.88× its time per query, 0.65× its build time, the same memory),
//! in the benchmark's one-run table.

mod exact;
mod flat_hnsw;
mod hnsw_rs_index;
pub(crate) mod kernel;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

pub use exact::ExactIndex;
pub use flat_hnsw::FlatHnsw;
pub use hnsw_rs_index::{HnswRsDistance, HnswRsIndex};

/// Why an index could not be built or searched.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnnError {
    /// Vectors must have at least one dimension.
    #[error("vectors must have at least one dimension")]
    ZeroDimension,
    /// A vector (or query) has the wrong number of components.
    #[error("vector {id} has {got} components, the index has {expected}")]
    DimensionMismatch {
        /// The id of the vector, or `u32::MAX` for a query.
        id: u32,
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A vector holds a NaN or an infinity.
    #[error("vector {id} holds a non-finite value")]
    NonFinite {
        /// The id of the vector, or `u32::MAX` for a query.
        id: u32,
    },
    /// Two vectors share an id.
    #[error("id {0} appears twice")]
    DuplicateId(u32),
    /// The flat data is not `ids.len() * dim` long.
    #[error("{values} values do not make {ids} vectors of dimension {dim}")]
    BadShape {
        /// How many ids were given.
        ids: usize,
        /// The dimension.
        dim: usize,
        /// How many values were given.
        values: usize,
    },
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// `hnsw_rs`'s own `DistDot` asserts that every vector is unit length
    /// (it panics otherwise); we check first.
    #[error("vector {id} is not unit length (norm {norm}); DistDot needs normalised vectors")]
    NotNormalised {
        /// The id of the vector.
        id: u32,
        /// Its norm.
        norm: f32,
    },
}

/// The id given to errors about a query rather than a stored vector.
pub const QUERY_ID: u32 = u32::MAX;

/// The vectors to index: ids and one flat block of `ids.len() * dim`
/// finite floats, checked once here so that the indexes need not.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The number of components of every vector.
    dim: usize,
    /// The caller's id of each vector, unique.
    ids: Vec<u32>,
    /// Vector `i` is `data[i * dim..(i + 1) * dim]`.
    data: Vec<f32>,
}

impl Embeddings {
    /// Checks and wraps ids and flat data.
    pub fn from_flat(dim: usize, ids: Vec<u32>, data: Vec<f32>) -> Result<Self, AnnError> {
        if dim == 0 {
            return Err(AnnError::ZeroDimension);
        }
        if ids.len().checked_mul(dim) != Some(data.len()) {
            return Err(AnnError::BadShape { ids: ids.len(), dim, values: data.len() });
        }
        if ids.len() >= u32::MAX as usize {
            return Err(AnnError::InvalidParams(format!("{} vectors is more than an index holds", ids.len())));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            if !seen.insert(id) {
                return Err(AnnError::DuplicateId(id));
            }
            if data[i * dim..(i + 1) * dim].iter().any(|x| !x.is_finite()) {
                return Err(AnnError::NonFinite { id });
            }
        }
        Ok(Self { dim, ids, data })
    }

    /// Checks and gathers `(id, vector)` pairs.
    pub fn from_pairs<'a, I>(dim: usize, pairs: I) -> Result<Self, AnnError>
    where
        I: IntoIterator<Item = (u32, &'a [f32])>,
    {
        if dim == 0 {
            return Err(AnnError::ZeroDimension);
        }
        let mut ids = Vec::new();
        let mut data = Vec::new();
        for (id, v) in pairs {
            if v.len() != dim {
                return Err(AnnError::DimensionMismatch { id, expected: dim, got: v.len() });
            }
            ids.push(id);
            data.extend_from_slice(v);
        }
        Self::from_flat(dim, ids, data)
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, in order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The `i`-th vector (by position, not id).
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The vectors, stored padded with zeros to a multiple of the kernel's
    /// lane count (what the flat indexes keep).
    pub(crate) fn padded_data(&self) -> (usize, Vec<f32>) {
        let stride = kernel::padded(self.dim);
        let mut out = vec![0.0; self.len() * stride];
        for (i, row) in out.chunks_exact_mut(stride).enumerate() {
            row[..self.dim].copy_from_slice(self.vector(i));
        }
        (stride, out)
    }
}

/// How to build a graph index. Exact search ignores all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Links per node on the upper layers (twice that on layer 0), HNSW's
    /// `M`. 16 suits 64-d embeddings; more raises recall and memory.
    pub m: usize,
    /// Candidate list width while inserting (`efConstruction`): build time
    /// against graph quality.
    pub ef_construction: usize,
    /// Seeds the layer draw of [`FlatHnsw`] (`hnsw_rs` fixes its own seed).
    pub seed: u64,
    /// Threads to insert with: 0 = all available, 1 = one, in order, which
    /// makes the build deterministic (more threads race for links).
    pub threads: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self { m: 16, ef_construction: 200, seed: 0x5eed, threads: 0 }
    }
}

impl AnnParams {
    pub(crate) fn validate(&self) -> Result<(), AnnError> {
        if !(2..=128).contains(&self.m) {
            return Err(AnnError::InvalidParams(format!("m = {} (2..=128)", self.m)));
        }
        if self.ef_construction == 0 {
            return Err(AnnError::InvalidParams("ef_construction = 0".into()));
        }
        Ok(())
    }

    /// The number of insertion threads `threads` stands for.
    pub(crate) fn thread_count(&self) -> usize {
        if self.threads == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { self.threads }
    }
}

/// A nearest-neighbour index over inner product.
pub trait AnnIndex: Send + Sync + fmt::Debug {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// The dimension of the vectors (and of queries).
    fn dim(&self) -> usize;

    /// How many vectors the index holds.
    fn len(&self) -> usize;

    /// Whether the index holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An estimate of the bytes the index holds on the heap.
    fn memory_bytes(&self) -> usize;

    /// The (at most) `k` ids with the largest inner product with `query`,
    /// best first, with their inner products, written into `out` (cleared
    /// first). `ef` is the search width of a graph index (raised to `k`
    /// when smaller). Fewer than `k` come back only when the index holds
    /// fewer.
    fn search_into(&self, query: &[f32], k: usize, ef: usize, out: &mut Vec<(u32, f32)>) -> Result<(), AnnError>;

    /// [`AnnIndex::search_into`] into a new vector.
    fn search(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<(u32, f32)>, AnnError> {
        let mut out = Vec::with_capacity(k.min(self.len()));
        self.search_into(query, k, ef, &mut out)?;
        Ok(out)
    }
}

/// Checks a query against an index's dimension.
pub(crate) fn check_query(dim: usize, query: &[f32]) -> Result<(), AnnError> {
    if query.len() != dim {
        return Err(AnnError::DimensionMismatch { id: QUERY_ID, expected: dim, got: query.len() });
    }
    if query.iter().any(|x| !x.is_finite()) {
        return Err(AnnError::NonFinite { id: QUERY_ID });
    }
    Ok(())
}

/// Which index to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnnKind {
    /// [`HnswRsIndex`] with our distance kernel: the default the product
    /// asked for.
    #[default]
    HnswRs,
    /// [`FlatHnsw`], our own HNSW: several times faster to build and search.
    FlatHnsw,
    /// [`ExactIndex`]: a full scan.
    Exact,
}

impl AnnKind {
    /// The name used in config and by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HnswRs => "hnsw_rs",
            Self::FlatHnsw => "flat_hnsw",
            Self::Exact => "exact",
        }
    }
}

impl fmt::Display for AnnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AnnKind {
    type Err = AnnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hnsw_rs" => Ok(Self::HnswRs),
            "flat_hnsw" => Ok(Self::FlatHnsw),
            "exact" => Ok(Self::Exact),
            other => Err(AnnError::InvalidParams(format!("unknown index kind {other:?} (hnsw_rs, flat_hnsw, exact)"))),
        }
    }
}

/// Builds the index `kind` names.
pub fn build_index(kind: AnnKind, embeddings: &Embeddings, params: &AnnParams) -> Result<Box<dyn AnnIndex>, AnnError> {
    Ok(match kind {
        AnnKind::HnswRs => Box::new(HnswRsIndex::build(embeddings, params, HnswRsDistance::Kernel)?),
        AnnKind::FlatHnsw => Box::new(FlatHnsw::build(embeddings, params)?),
        AnnKind::Exact => Box::new(ExactIndex::build(embeddings)),
    })
}
