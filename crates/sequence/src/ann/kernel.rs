//! The inner-product kernel and the packed (distance, node) keys every index
//! here orders candidates by.
//!
//! The workspace denies `unsafe_code`, so there is no `std::arch`: the dot
//! product is written so that LLVM vectorises it on its own. Vectors are
//! stored padded to a multiple of [`LANES`] floats, so the loop runs over
//! whole chunks only (no remainder branch), with one independent accumulator
//! per lane: the additions are not one serial chain (a plain
//! `iter().sum()` is, because float addition is not associative, and runs at
//! one add per ~4 cycles), and the compiler turns the 16 lanes into SIMD
//! registers of whatever width the target has — four SSE registers on the
//! default x86-64 target, one AVX-512 register with `-C target-cpu=native`.
//! There is no `mul_add`: without the FMA target feature it compiles to a
//! call to `fmaf`.

/// Floats per chunk of the dot product, and the padding unit of stored
/// vectors.
pub(crate) const LANES: usize = 16;

/// `dim` rounded up to a whole number of [`LANES`].
pub(crate) fn padded(dim: usize) -> usize {
    dim.div_ceil(LANES) * LANES
}

/// The inner product of two vectors of the same padded length (a multiple of
/// [`LANES`]; a shorter tail is ignored, and callers never pass one).
#[inline]
pub(crate) fn dot_padded(a: &[f32], b: &[f32]) -> f32 {
    let (a, _) = a.as_chunks::<LANES>();
    let (b, _) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.iter().zip(b) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    // A serial sum of the lanes: any tree-shaped reduction here makes
    // LLVM's SLP vectoriser regroup the loop's lanes into 2-wide vectors
    // (`movsd` + `mulps`, half the width), measured on rustc 1.95. Its
    // latency overlaps the next distance, which does not depend on it.
    acc.iter().sum()
}

/// The inner product of two vectors of any (equal) length: whole chunks with
/// [`dot_padded`], the tail one by one. Used where inputs are not padded
/// (the `hnsw_rs` distance).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n / LANES * LANES;
    let mut sum = dot_padded(&a[..whole], &b[..whole]);
    for (x, y) in a[whole..n].iter().zip(&b[whole..n]) {
        sum += x * y;
    }
    sum
}

/// An `f32` mapped to a `u32` whose unsigned order is the float's total
/// order (negative numbers flipped, positive ones above them).
#[inline]
pub(crate) fn ordered_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 }
}

/// The inverse of [`ordered_bits`].
#[inline]
pub(crate) fn from_ordered_bits(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 { f32::from_bits(key & 0x7FFF_FFFF) } else { f32::from_bits(!key) }
}

/// A (distance, node) pair packed into one `u64` ordered by distance, then
/// by node: heap comparisons are one integer compare, and ties break the same
/// way on every run.
#[inline]
pub(crate) fn pack(distance: f32, node: u32) -> u64 {
    (u64::from(ordered_bits(distance)) << 32) | u64::from(node)
}

/// The distance of a packed key.
#[inline]
pub(crate) fn key_distance(key: u64) -> f32 {
    from_ordered_bits((key >> 32) as u32)
}

/// The node of a packed key.
#[inline]
pub(crate) fn key_node(key: u64) -> u32 {
    key as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum() {
        for len in [1usize, 15, 16, 17, 64, 100] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn packed_keys_order_like_floats() {
        let xs = [f32::NEG_INFINITY, -3.5, -1.0, -0.0, 0.0, 1e-30, 0.5, 2.0, f32::INFINITY];
        for w in xs.windows(2) {
            assert!(pack(w[0], 7) <= pack(w[1], 3), "{} vs {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(key_distance(pack(x, 9)).to_bits(), x.to_bits());
            assert_eq!(key_node(pack(x, 9)), 9);
        }
        assert!(pack(1.0, 2) < pack(1.0, 3));
    }
}
