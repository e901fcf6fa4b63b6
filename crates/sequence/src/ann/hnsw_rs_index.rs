//! The index the product asked for: `hnsw_rs` 0.3.5, wrapped behind
//! [`AnnIndex`](super::AnnIndex).
//!
//! How we use it, and why (the measurements are in the module docs of
//! [`ann`](super) and in `benches/benches/ann.rs`):
//! - **Distance**: our own [`Distance`] implementation on the vectorising
//!   kernel, not `DistDot` (a serial fold, 1.15–1.6× slower per query, and it
//!   panics on unnormalised vectors). No `hnsw_rs` feature is enabled:
//!   `simdeez_f` only speeds up `anndists`' own distances, which we do not
//!   call, and `stdsimd` needs nightly.
//! - **Inner product on any vectors**: `hnsw_rs` asserts every distance is
//!   ≥ 0, so the distance is `offset − ⟨a, b⟩` with `offset` an upper bound
//!   of every inner product the index meets: stored vectors' inner products
//!   are bounded by the largest squared norm, and queries are scaled to unit
//!   length (which does not change their ranking) so theirs are bounded by
//!   the largest norm. Scores are scaled back.
//! - **Insertion** in parallel on a rayon pool of `threads` (its
//!   `parallel_insert_slice`), one by one in order when `threads` is 1 —
//!   then the build is deterministic (`hnsw_rs` seeds its layer draw with a
//!   constant).

use std::fmt;

use hnsw_rs::anndists::dist::distances::{DistDot, Distance};
use hnsw_rs::hnsw::Hnsw;

use super::kernel::dot;
use super::{AnnError, AnnIndex, AnnParams, Embeddings, check_query};

/// `hnsw_rs`'s layer cap (it allows at most 16).
const MAX_LAYERS: usize = 16;

/// Which distance `hnsw_rs` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HnswRsDistance {
    /// Our vectorising inner-product kernel (the tuned default).
    #[default]
    Kernel,
    /// `hnsw_rs`'s own `DistDot`, as the crate ships it: the out-of-the-box
    /// baseline the benchmark compares against. Needs unit-length vectors.
    DistDot,
}

/// `offset − ⟨a, b⟩`, never negative for the vectors the index was built
/// for.
#[derive(Debug, Clone, Copy)]
struct KernelDistance {
    /// An upper bound of every inner product the index computes.
    offset: f32,
}

impl Distance<f32> for KernelDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.offset - dot(a, b)).max(0.0)
    }
}

/// The graph, typed by its distance.
enum Graph {
    Kernel(Hnsw<'static, f32, KernelDistance>),
    DistDot(Hnsw<'static, f32, DistDot>),
}

/// `hnsw_rs` behind [`AnnIndex`].
pub struct HnswRsIndex {
    /// The vectors' dimension.
    dim: usize,
    /// The caller's ids; `hnsw_rs` is given positions in this vector.
    ids: Vec<u32>,
    /// The distance's offset (1 for `DistDot`).
    offset: f32,
    /// The graph.
    graph: Graph,
    /// A structural estimate of `hnsw_rs`'s heap use, computed once.
    memory: usize,
    /// Which distance the graph uses.
    distance: HnswRsDistance,
}

impl fmt::Debug for HnswRsIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HnswRsIndex")
            .field("dim", &self.dim)
            .field("len", &self.ids.len())
            .field("distance", &self.distance)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl HnswRsIndex {
    /// Builds the graph with `distance`.
    pub fn build(embeddings: &Embeddings, params: &AnnParams, distance: HnswRsDistance) -> Result<Self, AnnError> {
        params.validate()?;
        let n = embeddings.len();
        let max_norm = (0..n).map(|i| norm(embeddings.vector(i))).fold(0.0f32, f32::max);
        let offset = match distance {
            HnswRsDistance::Kernel => 1.0f32.max(max_norm).max(max_norm * max_norm) * (1.0 + 1e-6),
            HnswRsDistance::DistDot => {
                if let Some(i) = (0..n).find(|&i| (norm(embeddings.vector(i)) - 1.0).abs() > 1e-3) {
                    let id = embeddings.ids()[i];
                    return Err(AnnError::NotNormalised { id, norm: norm(embeddings.vector(i)) });
                }
                1.0
            }
        };
        let graph = match distance {
            HnswRsDistance::Kernel => {
                let mut g =
                    Hnsw::new(params.m, n.max(1), MAX_LAYERS, params.ef_construction, KernelDistance { offset });
                insert_all(&g, embeddings, params)?;
                g.set_searching_mode(true);
                Graph::Kernel(g)
            }
            HnswRsDistance::DistDot => {
                let mut g = Hnsw::new(params.m, n.max(1), MAX_LAYERS, params.ef_construction, DistDot);
                insert_all(&g, embeddings, params)?;
                g.set_searching_mode(true);
                Graph::DistDot(g)
            }
        };
        let memory = match &graph {
            Graph::Kernel(g) => estimate_memory(g, embeddings.dim()),
            Graph::DistDot(g) => estimate_memory(g, embeddings.dim()),
        };
        Ok(Self { dim: embeddings.dim(), ids: embeddings.ids().to_vec(), offset, graph, memory, distance })
    }

    /// The distance the graph uses.
    pub fn distance(&self) -> HnswRsDistance {
        self.distance
    }
}

fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Inserts every vector, with its position as `hnsw_rs`'s id.
fn insert_all<D>(graph: &Hnsw<'static, f32, D>, embeddings: &Embeddings, params: &AnnParams) -> Result<(), AnnError>
where
    D: Distance<f32> + Send + Sync,
{
    let threads = params.thread_count();
    if threads <= 1 {
        for i in 0..embeddings.len() {
            graph.insert_slice((embeddings.vector(i), i));
        }
        return Ok(());
    }
    let batch: Vec<(&[f32], usize)> = (0..embeddings.len()).map(|i| (embeddings.vector(i), i)).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| AnnError::InvalidParams(format!("cannot start {threads} insertion threads: {e}")))?;
    pool.install(|| graph.parallel_insert_slice(&batch));
    Ok(())
}

/// Heap bytes of an `hnsw_rs` graph, from its structure: per point an
/// `Arc<Point>` block, the copied vector, an `Arc<RwLock<..>>` of 16
/// per-layer `Vec`s, and per link a pointer to an `Arc<PointWithOrder>`
/// block (counts, a pointer and a distance).
fn estimate_memory<D: Distance<f32> + Send + Sync>(graph: &Hnsw<'static, f32, D>, dim: usize) -> usize {
    const ARC_POINT: usize = 16 + 64;
    const NEIGHBOURS_HEADER: usize = 16 + 8 + 24 + 16 * 24;
    const LINK: usize = 8 + 32;
    let mut points = 0usize;
    let mut links = 0usize;
    if graph.get_nb_point() == 0 {
        // (its point iterator panics on an empty graph)
        return 0;
    }
    for point in graph.get_point_indexation() {
        points += 1;
        links += point.get_neighborhood_id().iter().map(Vec::len).sum::<usize>();
    }
    points * (ARC_POINT + dim * 4 + NEIGHBOURS_HEADER + 8) + links * LINK
}

impl AnnIndex for HnswRsIndex {
    fn name(&self) -> &'static str {
        match self.distance {
            HnswRsDistance::Kernel => "hnsw_rs",
            HnswRsDistance::DistDot => "hnsw_rs (DistDot)",
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn memory_bytes(&self) -> usize {
        self.memory + self.ids.len() * 4
    }

    fn search_into(&self, query: &[f32], k: usize, ef: usize, out: &mut Vec<(u32, f32)>) -> Result<(), AnnError> {
        check_query(self.dim, query)?;
        out.clear();
        if k == 0 || self.ids.is_empty() {
            return Ok(());
        }
        let q_norm = norm(query);
        let scale = if q_norm > 0.0 { q_norm } else { 1.0 };
        let unit: Vec<f32> = query.iter().map(|x| x / scale).collect();
        let ef = ef.max(k);
        let found = match &self.graph {
            Graph::Kernel(g) => g.search(&unit, k, ef),
            Graph::DistDot(g) => g.search(&unit, k, ef),
        };
        out.extend(found.iter().map(|n| (self.ids[n.d_id], (self.offset - n.distance) * scale)));
        Ok(())
    }
}
