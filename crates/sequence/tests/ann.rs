//! The ANN indexes against exact search, on small seeded clustered data.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use watchnext_sequence::ann::{
    AnnError, AnnIndex, AnnKind, AnnParams, Embeddings, ExactIndex, FlatHnsw, HnswRsDistance, HnswRsIndex, build_index,
};

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` points around `clusters` Gaussian centres, unit length when
/// `unit`, ids `1000 + i` (so positions and ids differ).
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64, unit: bool) -> Embeddings {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| normal(&mut rng)).collect();
            normalise(&mut c);
            c
        })
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = &centres[i % clusters];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.12 * normal(&mut rng)).collect();
        if unit {
            normalise(&mut v);
        } else {
            let scale = 0.5 + (rng.next_u64() % 1000) as f32 / 1000.0;
            v.iter_mut().for_each(|x| *x *= scale);
        }
        data.extend(v);
    }
    Embeddings::from_flat(dim, (1000..1000 + n as u32).collect(), data).expect("valid test vectors")
}

fn queries(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let e = clustered(n, dim, 20, seed, true);
    (0..n).map(|i| e.vector(i).to_vec()).collect()
}

/// Mean recall@k of `index` against `exact`.
fn recall(index: &dyn AnnIndex, exact: &ExactIndex, queries: &[Vec<f32>], k: usize, ef: usize) -> f64 {
    let mut hits = 0usize;
    for q in queries {
        let truth: HashSet<u32> = exact.search(q, k, 0).expect("search").into_iter().map(|(id, _)| id).collect();
        let found = index.search(q, k, ef).expect("search");
        assert_eq!(found.len(), k);
        hits += found.iter().filter(|(id, _)| truth.contains(id)).count();
    }
    hits as f64 / (queries.len() * k) as f64
}

fn small_params() -> AnnParams {
    AnnParams { m: 16, ef_construction: 100, seed: 7, threads: 2 }
}

fn indexes(emb: &Embeddings, params: &AnnParams) -> Vec<Box<dyn AnnIndex>> {
    vec![
        build_index(AnnKind::HnswRs, emb, params).expect("build"),
        build_index(AnnKind::FlatHnsw, emb, params).expect("build"),
        build_index(AnnKind::Exact, emb, params).expect("build"),
    ]
}

#[test]
fn graph_indexes_reach_recall_095_on_clustered_data() {
    let emb = clustered(5000, 32, 50, 1, true);
    let exact = ExactIndex::build(&emb);
    let qs = queries(200, 32, 2);
    let mut all = indexes(&emb, &small_params());
    all.push(Box::new(HnswRsIndex::build(&emb, &small_params(), HnswRsDistance::DistDot).unwrap()));
    for index in &all {
        let r = recall(index.as_ref(), &exact, &qs, 10, 64);
        assert!(r >= 0.95, "{}: recall@10 {r}", index.name());
    }
}

#[test]
fn graph_indexes_handle_unnormalised_vectors() {
    let emb = clustered(3000, 16, 30, 3, false);
    let exact = ExactIndex::build(&emb);
    let qs: Vec<Vec<f32>> = queries(100, 16, 4).into_iter().map(|q| q.iter().map(|x| x * 3.0).collect()).collect();
    for index in indexes(&emb, &small_params()) {
        let r = recall(index.as_ref(), &exact, &qs, 10, 100);
        assert!(r >= 0.9, "{}: recall@10 {r}", index.name());
        // Scores are the inner products with the query as given.
        let q = &qs[0];
        for (id, score) in index.search(q, 5, 100).unwrap() {
            let v = emb.vector((id - 1000) as usize);
            let truth: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            assert!((score - truth).abs() < 1e-3 * truth.abs().max(1.0), "{}: {score} vs {truth}", index.name());
        }
    }
    assert!(matches!(
        HnswRsIndex::build(&emb, &small_params(), HnswRsDistance::DistDot),
        Err(AnnError::NotNormalised { .. })
    ));
}

#[test]
fn exact_search_returns_the_true_top_k_in_order() {
    let emb = clustered(700, 24, 7, 5, false);
    let exact = ExactIndex::build(&emb);
    for q in queries(20, 24, 6) {
        let mut truth: Vec<(u32, f64)> = (0..emb.len())
            .map(|i| {
                let s: f64 = emb.vector(i).iter().zip(&q).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                (emb.ids()[i], s)
            })
            .collect();
        truth.sort_by(|a, b| b.1.total_cmp(&a.1));
        let found = exact.search(&q, 15, 0).unwrap();
        assert_eq!(found.len(), 15);
        for (rank, ((id, score), (tid, tscore))) in found.iter().zip(&truth).enumerate() {
            // Equal up to float rounding (a near-tie may swap two neighbours).
            assert!((f64::from(*score) - tscore).abs() < 1e-5, "rank {rank}: {score} vs {tscore}");
            if (truth[rank].1 - truth.get(rank + 1).map_or(f64::MIN, |t| t.1)).abs() > 1e-5 {
                assert_eq!(id, tid, "rank {rank}");
            }
        }
        assert!(found.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn k_larger_than_the_index_returns_everything_once() {
    let emb = clustered(40, 8, 4, 8, true);
    for index in indexes(&emb, &small_params()) {
        let q = emb.vector(3).to_vec();
        let found = index.search(&q, 100, 10).unwrap();
        assert_eq!(found.len(), 40, "{}", index.name());
        let ids: HashSet<u32> = found.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, emb.ids().iter().copied().collect(), "{}", index.name());
        assert!(found.windows(2).all(|w| w[0].1 >= w[1].1 - 1e-6), "{}", index.name());
        assert_eq!(found[0].0, emb.ids()[3], "{}: a stored vector is its own nearest", index.name());
        assert!(index.search(&q, 0, 10).unwrap().is_empty());
    }
}

#[test]
fn empty_and_single_indexes() {
    let empty = Embeddings::from_flat(8, vec![], vec![]).unwrap();
    for index in indexes(&empty, &small_params()) {
        assert!(index.is_empty());
        assert_eq!(index.len(), 0);
        assert!(index.search(&[0.5; 8], 10, 50).unwrap().is_empty(), "{}", index.name());
    }
    let one = Embeddings::from_pairs(3, [(42u32, &[0.0f32, 1.0, 0.0][..])]).unwrap();
    for index in indexes(&one, &small_params()) {
        assert_eq!(index.search(&[0.0, 2.0, 0.0], 10, 50).unwrap(), vec![(42, 2.0)], "{}", index.name());
    }
}

#[test]
fn concurrent_searches_agree_with_serial_ones() {
    let emb = clustered(3000, 32, 30, 9, true);
    let qs = queries(300, 32, 10);
    for index in indexes(&emb, &small_params()) {
        let serial: Vec<_> = qs.iter().map(|q| index.search(q, 10, 48).unwrap()).collect();
        let index = index.as_ref();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let qs = &qs;
                    s.spawn(move || {
                        // Each thread walks the queries from a different
                        // start, reusing one output vector.
                        let mut out = Vec::new();
                        let mut got = vec![Vec::new(); qs.len()];
                        for j in 0..qs.len() {
                            let i = (j + t * 75) % qs.len();
                            index.search_into(&qs[i], 10, 48, &mut out).unwrap();
                            got[i] = out.clone();
                        }
                        got
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), serial, "{}", index.name());
            }
        });
    }
}

#[test]
fn one_thread_builds_are_deterministic() {
    let emb = clustered(2000, 16, 20, 11, true);
    let qs = queries(50, 16, 12);
    let params = AnnParams { threads: 1, ..small_params() };
    for kind in [AnnKind::HnswRs, AnnKind::FlatHnsw] {
        let a = build_index(kind, &emb, &params).unwrap();
        let b = build_index(kind, &emb, &params).unwrap();
        for q in &qs {
            assert_eq!(a.search(q, 10, 20).unwrap(), b.search(q, 10, 20).unwrap(), "{kind}");
        }
    }
    // Another seed draws other levels, hence another graph.
    let a = FlatHnsw::build(&emb, &params).unwrap();
    let b = FlatHnsw::build(&emb, &AnnParams { seed: 8, ..params }).unwrap();
    let differ = qs.iter().any(|q| a.search(q, 10, 10).unwrap() != b.search(q, 10, 10).unwrap());
    let sizes_differ = a.memory_bytes() != b.memory_bytes();
    assert!(differ || sizes_differ);
}

#[test]
fn bad_input_is_refused() {
    assert_eq!(Embeddings::from_flat(0, vec![], vec![]), Err(AnnError::ZeroDimension));
    assert!(matches!(Embeddings::from_flat(2, vec![1, 2], vec![0.0; 3]), Err(AnnError::BadShape { .. })));
    assert_eq!(Embeddings::from_flat(1, vec![1, 1], vec![0.0, 1.0]), Err(AnnError::DuplicateId(1)));
    assert_eq!(Embeddings::from_flat(1, vec![1, 2], vec![0.0, f32::NAN]), Err(AnnError::NonFinite { id: 2 }));
    assert!(matches!(
        Embeddings::from_pairs(2, [(5u32, &[1.0f32][..])]),
        Err(AnnError::DimensionMismatch { id: 5, expected: 2, got: 1 })
    ));
    let emb = clustered(50, 4, 2, 1, true);
    for index in indexes(&emb, &small_params()) {
        assert!(matches!(index.search(&[1.0; 3], 5, 10), Err(AnnError::DimensionMismatch { .. })));
        assert!(matches!(index.search(&[f32::INFINITY; 4], 5, 10), Err(AnnError::NonFinite { .. })));
    }
    assert!(matches!(
        FlatHnsw::build(&emb, &AnnParams { m: 1, ..AnnParams::default() }),
        Err(AnnError::InvalidParams(_))
    ));
    assert_eq!("flat_hnsw".parse::<AnnKind>(), Ok(AnnKind::FlatHnsw));
    assert!("faiss".parse::<AnnKind>().is_err());
}
