//! Randomness: independent, reproducible streams and the few samplers the
//! world needs.
//!
//! Every random draw comes from a ChaCha8 stream whose 256-bit seed is a hash
//! of `(seed, stream kind, a, b)` — for example `(seed, SESSIONS, user,
//! chunk)`. A stream therefore depends only on *what* it simulates, never on
//! which thread runs it or in which order, which is what makes the world
//! byte-for-byte reproducible with any number of threads.
//!
//! The samplers are written out here (rather than taken from a distributions
//! crate) so that their exact sequence of draws is fixed by this crate and
//! cannot change under a dependency upgrade.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kinds of stream; the numbers are part of the world's definition
/// (changing one changes every world).
pub(crate) mod kind {
    pub const VIDEOS: u64 = 1;
    pub const USERS: u64 = 2;
    pub const RANKS: u64 = 3;
    pub const SESSIONS: u64 = 4;
    pub const SESSION_COUNT: u64 = 5;
    pub const PILOT: u64 = 6;
    pub const LIVE: u64 = 7;
}

/// The SplitMix64 finaliser: a bijective, well-mixing 64-bit hash.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit key for `(seed, kind, a, b)`.
pub(crate) fn key(seed: u64, kind: u64, a: u64, b: u64) -> u64 {
    let mut h = splitmix64(seed);
    h = splitmix64(h ^ kind);
    h = splitmix64(h ^ a);
    splitmix64(h ^ b)
}

/// The stream for `(seed, kind, a, b)`.
pub(crate) fn stream(seed: u64, kind: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mut x = key(seed, kind, a, b);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        x = splitmix64(x);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    ChaCha8Rng::from_seed(bytes)
}

/// A uniform number in `[0, 1)` from a 64-bit hash (53 bits of it).
pub(crate) fn unit_from_bits(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform number in `[0, 1)`.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    unit_from_bits(rng.next_u64())
}

/// A uniform number in `(0, 1]` (safe under a logarithm).
pub(crate) fn open01<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    1.0 - uniform(rng)
}

/// A uniform index in `0..n` (`n >= 1`), by multiply-shift (bias below 2^-32
/// for every `n` the world uses).
pub(crate) fn index<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// Whether an event of probability `p` happens.
pub(crate) fn chance<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    uniform(rng) < p
}

/// A standard normal draw (Box–Muller, one value per two uniforms).
pub(crate) fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let r = (-2.0 * open01(rng).ln()).sqrt();
    let theta = std::f64::consts::TAU * uniform(rng);
    r * theta.cos()
}

/// An exponential draw with the given mean.
pub(crate) fn exponential<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> f64 {
    -mean * open01(rng).ln()
}

/// A standard Gumbel draw.
pub(crate) fn gumbel<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -(-open01(rng).ln()).max(f64::MIN_POSITIVE).ln()
}

/// The Poisson(`mean`) quantile of `u` (inversion); above a mean of 500 the
/// normal approximation, with `z` a standard normal draw supplied by the
/// caller.
pub(crate) fn poisson_quantile(mean: f64, u: f64, z: impl FnOnce() -> f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 500.0 {
        return (mean + mean.sqrt() * z()).round().max(0.0) as u64;
    }
    let mut p = (-mean).exp();
    let mut cdf = p;
    let mut k = 0u64;
    // The bound stops the loop when rounding keeps the sum just below `u`.
    while u >= cdf && k < 10_000 {
        k += 1;
        p *= mean / k as f64;
        cdf += p;
    }
    k
}

/// The logistic function.
pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Walker's alias table (Vose's construction): O(1) sampling of an index in
/// proportion to fixed non-negative weights.
#[derive(Debug, Clone)]
pub(crate) struct AliasTable {
    /// Probability of keeping column `i` rather than taking its alias.
    keep: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// Builds the table; all-zero (or empty) weights give a uniform table.
    pub(crate) fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        if n == 0 {
            return Self { keep: Vec::new(), alias: Vec::new() };
        }
        if !(total > 0.0 && total.is_finite()) {
            return Self { keep: vec![1.0; n], alias: (0..n as u32).collect() };
        }
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let mut small = Vec::with_capacity(n);
        let mut large = Vec::with_capacity(n);
        for (i, &s) in scaled.iter().enumerate() {
            if s < 1.0 { small.push(i) } else { large.push(i) }
        }
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding.
        for i in small.into_iter().chain(large) {
            scaled[i] = 1.0;
        }
        Self { keep: scaled, alias }
    }

    /// An index drawn in proportion to the weights; `None` for an empty table.
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        if self.keep.is_empty() {
            return None;
        }
        let bits = rng.next_u64();
        let column = (((bits >> 32) * self.keep.len() as u64) >> 32) as usize;
        let coin = (bits & 0xFFFF_FFFF) as f64 * (1.0 / 4_294_967_296.0);
        Some(if coin < self.keep[column] { column } else { self.alias[column] as usize })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_every_part_of_their_key() {
        let draw = |s: u64, k: u64, a: u64, b: u64| stream(s, k, a, b).next_u64();
        let base = draw(1, 2, 3, 4);
        assert_eq!(base, draw(1, 2, 3, 4));
        for other in [draw(9, 2, 3, 4), draw(1, 9, 3, 4), draw(1, 2, 9, 4), draw(1, 2, 3, 9), draw(1, 2, 4, 3)] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn alias_table_follows_its_weights() {
        let table = AliasTable::new(&[1.0, 0.0, 3.0, 6.0]);
        let mut rng = stream(7, 0, 0, 0);
        let mut counts = [0u32; 4];
        let n = 100_000;
        for _ in 0..n {
            counts[table.sample(&mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        for (i, want) in [(0, 0.1), (2, 0.3), (3, 0.6)] {
            let got = f64::from(counts[i]) / f64::from(n);
            assert!((got - want).abs() < 0.01, "index {i}: {got} vs {want}");
        }
        assert!(AliasTable::new(&[]).sample(&mut rng).is_none());
        let uniform_table = AliasTable::new(&[0.0, 0.0]);
        assert!((0..100).all(|_| uniform_table.sample(&mut rng).unwrap() < 2));
    }

    #[test]
    fn samplers_have_the_right_means() {
        let mut rng = stream(3, 0, 0, 0);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / f64::from(n);
        let m = mean(&mut || normal(&mut rng));
        assert!(m.abs() < 0.01, "normal mean {m}");
        let m = mean(&mut || exponential(&mut rng, 2.0));
        assert!((m - 2.0).abs() < 0.03, "exponential mean {m}");
        let m = mean(&mut || gumbel(&mut rng));
        assert!((m - 0.5772).abs() < 0.02, "gumbel mean {m}");
        for lambda in [0.3, 4.0, 40.0] {
            let m = mean(&mut || poisson_quantile(lambda, uniform(&mut rng), || 0.0) as f64);
            assert!((m - lambda).abs() < 0.03 * lambda.max(1.0), "poisson({lambda}) mean {m}");
        }
        assert_eq!(poisson_quantile(1e6, 0.5, || 0.0), 1_000_000);
        assert_eq!(poisson_quantile(0.0, 0.9, || 0.0), 0);
    }
}
