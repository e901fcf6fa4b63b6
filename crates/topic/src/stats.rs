//! Per-video statistics learned online from the feedback stream: a decayed
//! watch count (popularity) and a smoothed satisfaction rate (quality).
//!
//! The array is aligned with one catalogue generation (dense video
//! indices), one 16-byte cell of plain atomics per video: there is one writer at a time (the
//! generator's writer mutex) and any number of lock-free readers, so a
//! writer updates a value with a load and a store, and a reader always sees
//! a whole value (both halves of the quality pair are packed into one
//! `u64`). Relaxed ordering is enough: each value stands alone, and readers
//! only need *some* recent value.
//!
//! **Popularity** uses forward decay: instead of decaying every count as
//! time passes, an event at `t_i` adds `w·2^((t_i − T_ref)/h)` to the stored
//! mass `S_v`; the decayed count at time `t` is then
//! `n̂_v(t) = S_v·2^(−(t − T_ref)/h) = Σ_i w·2^(−(t − t_i)/h)`. Comparing two
//! videos at the same `t` needs no decay at all. When `t − T_ref` grows past
//! [`REBASE_HALF_LIVES`] half-lives the owner rebases ([`VideoStats::rebased`]):
//! a new array with `T_ref = t` and every mass scaled, swapped in whole.
//!
//! **Quality** is an additively smoothed mean of per-engagement outcomes:
//! each watch is an observation of value `min(1, seconds/duration)`, each
//! like `like_weight` observations of value 1, each dismissal
//! `dismiss_weight` observations of value 0, and
//! `q̂_v = (k·m + Σ values) / (k + Σ weights)` with prior mean `m` and
//! strength `k` — a Beta-prior posterior mean, so a video with no feedback
//! sits at `m` and a few outcomes move it only a little.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Half-lives past `T_ref` after which the masses are rebased (2^256 is far
/// from `f64`'s range, yet rebasing stays rare: 256 half-lives).
pub(crate) const REBASE_HALF_LIVES: f64 = 256.0;

/// Exponent clamp when converting masses to counts at an arbitrary time.
const MAX_EXPONENT: f64 = 1_000.0;

/// One video's statistics, side by side so that a reader touches one cache line.
#[derive(Debug, Default)]
#[repr(align(16))]
struct Cell {
    /// Forward-decayed watch mass `S_v` (`f64` bits).
    mass: AtomicU64,
    /// Quality evidence: `(Σ values, Σ weights)` as two `f32` packed in one `u64`.
    quality: AtomicU64,
}

/// Online statistics of every video of one catalogue generation.
#[derive(Debug)]
pub(crate) struct VideoStats {
    cells: Box<[Cell]>,
    /// The reference time `T_ref` of the masses, ms.
    ref_ms: i64,
    /// Popularity half-life `h`, ms.
    half_life_ms: f64,
    /// The latest watch added, ms: popularity is never read at an earlier
    /// time (see [`VideoStats::decay_to`]).
    latest_ms: AtomicI64,
}

fn pack(sum: f32, weight: f32) -> u64 {
    (u64::from(sum.to_bits()) << 32) | u64::from(weight.to_bits())
}

fn unpack(bits: u64) -> (f32, f32) {
    (f32::from_bits((bits >> 32) as u32), f32::from_bits(bits as u32))
}

impl VideoStats {
    /// Empty statistics for `n` videos with reference time `ref_ms`.
    pub(crate) fn new(n: usize, ref_ms: i64, half_life_ms: i64) -> Self {
        Self {
            cells: (0..n).map(|_| Cell::default()).collect(),
            ref_ms,
            half_life_ms: half_life_ms as f64,
            latest_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Statistics for a new catalogue generation of `n` videos: video `i`
    /// takes the values of video `old_of[i]` in `self` (`None`: new video).
    pub(crate) fn remapped(&self, n: usize, old_of: &[Option<u32>]) -> Self {
        let out = Self::new(n, self.ref_ms, self.half_life_ms as i64);
        out.latest_ms.store(self.latest_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        for (i, old) in old_of.iter().enumerate().take(n) {
            if let Some(from) = old.and_then(|o| self.cells.get(o as usize)) {
                out.cells[i].mass.store(from.mass.load(Ordering::Relaxed), Ordering::Relaxed);
                out.cells[i].quality.store(from.quality.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        out
    }

    /// The same statistics with reference time `ref_ms` (masses rescaled).
    pub(crate) fn rebased(&self, ref_ms: i64) -> Self {
        let factor = (-((ref_ms - self.ref_ms) as f64 / self.half_life_ms).clamp(-MAX_EXPONENT, MAX_EXPONENT)).exp2();
        let out = Self::new(self.cells.len(), ref_ms, self.half_life_ms as i64);
        out.latest_ms.store(self.latest_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        for (to, from) in out.cells.iter().zip(self.cells.iter()) {
            let mass = f64::from_bits(from.mass.load(Ordering::Relaxed)) * factor;
            to.mass.store(mass.to_bits(), Ordering::Relaxed);
            to.quality.store(from.quality.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        out
    }

    /// The reference time `T_ref`, ms.
    pub(crate) fn ref_ms(&self) -> i64 {
        self.ref_ms
    }

    /// Whether an event at `t_ms` is too far past `T_ref` to add without a rebase.
    pub(crate) fn needs_rebase(&self, t_ms: i64) -> bool {
        (t_ms - self.ref_ms) as f64 / self.half_life_ms > REBASE_HALF_LIVES
    }

    /// Adds a watch of weight `w` at `t_ms` to video `i` (single writer).
    pub(crate) fn add_watch(&self, i: usize, t_ms: i64, w: f64) {
        let Some(cell) = self.cells.get(i).map(|c| &c.mass) else { return };
        self.latest_ms.fetch_max(t_ms, Ordering::Relaxed);
        let exponent = ((t_ms - self.ref_ms) as f64 / self.half_life_ms).clamp(-MAX_EXPONENT, REBASE_HALF_LIVES);
        let mass = f64::from_bits(cell.load(Ordering::Relaxed)) + w * exponent.exp2();
        cell.store(mass.to_bits(), Ordering::Relaxed);
    }

    /// Adds `weight` observations of value `value` to video `i`'s quality evidence (single writer).
    pub(crate) fn add_outcome(&self, i: usize, value: f32, weight: f32) {
        let Some(cell) = self.cells.get(i).map(|c| &c.quality) else { return };
        let (sum, w) = unpack(cell.load(Ordering::Relaxed));
        cell.store(pack(sum + value * weight, w + weight), Ordering::Relaxed);
    }

    /// The multiplier turning a mass into a decayed count at `t_ms`:
    /// `n̂_v(t) = mass(v)·decay_to(t)`.
    pub(crate) fn decay_to(&self, t_ms: i64) -> f64 {
        // A request stamped before watches already counted (a replayed or
        // evaluated request, a client's stale clock) reads popularity as of
        // the latest watch: a forward-decayed mass cannot take the later
        // watches back out, and reading it earlier would inflate them by
        // 2^(age / h) instead of ignoring them.
        let t_ms = t_ms.max(self.latest_ms.load(Ordering::Relaxed));
        (-((t_ms - self.ref_ms) as f64 / self.half_life_ms).clamp(-MAX_EXPONENT, MAX_EXPONENT)).exp2()
    }

    /// The forward-decayed mass `S_v`.
    pub(crate) fn mass(&self, i: usize) -> f64 {
        self.cells.get(i).map_or(0.0, |c| f64::from_bits(c.mass.load(Ordering::Relaxed)))
    }

    /// The quality estimate `q̂_v = (k·m + Σ values)/(k + Σ weights)`.
    pub(crate) fn quality(&self, i: usize, prior_mean: f32, prior_strength: f32) -> f32 {
        let (sum, w) = self.cells.get(i).map_or((0.0, 0.0), |c| unpack(c.quality.load(Ordering::Relaxed)));
        (prior_strength * prior_mean + sum) / (prior_strength + w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn forward_decay_equals_decaying_each_event() {
        let stats = VideoStats::new(2, 0, H);
        stats.add_watch(0, 0, 1.0);
        stats.add_watch(0, 2 * H, 1.0);
        stats.add_watch(1, 3 * H, 1.0);
        let at = 3 * H;
        let n0 = stats.mass(0) * stats.decay_to(at);
        let n1 = stats.mass(1) * stats.decay_to(at);
        assert!((n0 - (0.125 + 0.5)).abs() < 1e-12, "{n0}");
        assert!((n1 - 1.0).abs() < 1e-12, "{n1}");
    }

    #[test]
    fn popularity_is_never_read_before_the_latest_watch() {
        let stats = VideoStats::new(1, 0, H);
        stats.add_watch(0, 10 * H, 1.0);
        let now = stats.mass(0) * stats.decay_to(10 * H);
        // Ten half-lives before that watch: not 2^10 = 1024 watches, the count as of the watch.
        let earlier = stats.mass(0) * stats.decay_to(0);
        assert!((now - 1.0).abs() < 1e-12 && (earlier - 1.0).abs() < 1e-12, "{now} {earlier}");
        // Rebased and remapped statistics keep the clamp.
        let rebased = stats.rebased(5 * H);
        assert!((rebased.mass(0) * rebased.decay_to(0) - 1.0).abs() < 1e-9);
        let moved = stats.remapped(1, &[Some(0)]);
        assert!((moved.mass(0) * moved.decay_to(0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rebasing_keeps_the_counts_and_remapping_follows_ids() {
        let stats = VideoStats::new(2, 0, H);
        stats.add_watch(1, 10 * H, 4.0);
        assert!(stats.needs_rebase(300 * H));
        let rebased = stats.rebased(10 * H);
        assert_eq!(rebased.ref_ms(), 10 * H);
        let before = stats.mass(1) * stats.decay_to(12 * H);
        let after = rebased.mass(1) * rebased.decay_to(12 * H);
        assert!((before - after).abs() < 1e-9 && (after - 1.0).abs() < 1e-9, "{before} {after}");

        stats.add_outcome(1, 1.0, 3.0);
        let moved = stats.remapped(3, &[Some(1), None, Some(7)]);
        assert_eq!(moved.mass(0), stats.mass(1));
        assert_eq!(moved.mass(1), 0.0);
        assert_eq!(moved.mass(2), 0.0, "an out-of-range old index is a new video");
        assert_eq!(moved.quality(0, 0.5, 1.0), stats.quality(1, 0.5, 1.0));
    }

    #[test]
    fn quality_is_a_smoothed_mean() {
        let stats = VideoStats::new(1, 0, H);
        assert_eq!(stats.quality(0, 0.5, 5.0), 0.5, "no evidence: the prior mean");
        stats.add_outcome(0, 1.0, 5.0);
        assert!((stats.quality(0, 0.5, 5.0) - 0.75).abs() < 1e-6);
        stats.add_outcome(0, 0.0, 10.0);
        assert!((stats.quality(0, 0.5, 5.0) - 7.5 / 20.0).abs() < 1e-6);
    }
}
