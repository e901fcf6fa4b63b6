//! One video's row of the co-watch table: its decayed watch total n(v) and
//! its top-K neighbour list, kept with SpaceSaving replacement, every value
//! stored in the row's own decay scale (see the crate documentation, "Time
//! decay").

use std::sync::Arc;

/// Stored values are rescaled once their scale factor passes 2^this, far
/// from `f32`'s range (2^127) and cheap: a row is rescaled at most once per
/// this many half-lives.
pub(crate) const RESCALE_HALF_LIVES: f64 = 24.0;

/// One neighbour b of a video a.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Neighbour {
    /// The neighbour's interned id.
    pub id: u32,
    /// SpaceSaving's count: an overestimate of the decayed co-watch weight
    /// c(a, b), in the row's scale.
    pub count: f32,
    /// SpaceSaving's error: the count the slot had when `id` took it over;
    /// `count − err` is a guaranteed lower bound of c(a, b).
    pub err: f32,
}

impl Neighbour {
    /// Bytes one neighbour takes in a list.
    pub const BYTES: usize = std::mem::size_of::<Neighbour>();

    /// The evidence used for scoring: the SpaceSaving lower bound.
    pub fn evidence(&self) -> f32 {
        (self.count - self.err).max(0.0)
    }
}

/// One tracked video.
#[derive(Debug, Clone)]
pub(crate) struct VideoRow {
    /// The video's id as the catalogue spells it (shared with the interner).
    pub name: Arc<str>,
    /// Decay time (ms, see the crate documentation, "Time decay") at which
    /// the stored values are true values: true value at time t =
    /// stored · 2^(−(t − base_ms)/half-life).
    pub base_ms: i64,
    /// Last decay time that touched the row: the time the score reads the
    /// row at, and its recency for eviction.
    pub touched_ms: i64,
    /// n(v): decayed sum of the video's watch weights, in the row's scale.
    pub total: f32,
    /// At most K neighbours, unordered.
    pub neighbours: Vec<Neighbour>,
}

/// The capacity a list of `len` neighbours has under the growth rule of
/// [`VideoRow::add_pair`] (4, 8, 16, … capped at K), so a loaded row owns
/// what the live one did.
pub(crate) fn list_capacity(len: usize, k: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let mut cap = 4.min(k);
    while cap < len {
        cap = (cap * 2).min(k);
    }
    cap
}

/// 2^(−(to − from)/half-life): the decay of a value from `from` to `to`.
pub(crate) fn decay(from_ms: i64, to_ms: i64, half_life_ms: f64) -> f64 {
    (-(to_ms.saturating_sub(from_ms) as f64) / half_life_ms).exp2()
}

impl VideoRow {
    pub fn new(name: Arc<str>, t_ms: i64) -> Self {
        Self { name, base_ms: t_ms, touched_ms: t_ms, total: 0.0, neighbours: Vec::new() }
    }

    /// Heap bytes the row owns besides its name (the neighbour list's capacity).
    pub fn heap_bytes(&self) -> usize {
        self.neighbours.capacity() * Neighbour::BYTES
    }

    /// The factor that turns a true increment at `t_ms` into the row's
    /// scale, 2^((t − base)/half-life); first rescales the row to base `t_ms`
    /// when the factor would pass 2^[`RESCALE_HALF_LIVES`].
    fn scale_for(&mut self, t_ms: i64, half_life_ms: f64) -> f32 {
        let halves = t_ms.saturating_sub(self.base_ms) as f64 / half_life_ms;
        if halves > RESCALE_HALF_LIVES {
            let shrink = (-halves).exp2() as f32;
            self.total *= shrink;
            for n in &mut self.neighbours {
                n.count *= shrink;
                n.err *= shrink;
            }
            self.base_ms = t_ms;
            return 1.0;
        }
        halves.exp2() as f32
    }

    fn touch(&mut self, t_ms: i64) {
        self.touched_ms = self.touched_ms.max(t_ms);
    }

    /// Adds a watch of weight `w` at `t_ms` to n(v).
    pub fn add_watch(&mut self, t_ms: i64, w: f32, half_life_ms: f64) {
        let scale = self.scale_for(t_ms, half_life_ms);
        self.total += w * scale;
        self.touch(t_ms);
    }

    /// Adds `w` at `t_ms` to c(self, other), keeping at most `k` neighbours.
    /// Returns the change in heap bytes (the list may grow).
    ///
    /// A full list gives the slot of its weakest neighbour m to the newcomer
    /// with count c_m + w and error c_m (SpaceSaving): the newcomer is no
    /// longer the weakest, so it survives until something weaker arrives,
    /// which is what gives new pairs a chance; and any neighbour whose true
    /// count exceeds the list's minimum is never lost.
    pub fn add_pair(&mut self, other: u32, t_ms: i64, w: f32, half_life_ms: f64, k: usize) -> isize {
        let inc = w * self.scale_for(t_ms, half_life_ms);
        self.touch(t_ms);
        let mut weakest = 0;
        let mut weakest_count = f32::INFINITY;
        for (i, n) in self.neighbours.iter_mut().enumerate() {
            if n.id == other {
                n.count += inc;
                return 0;
            }
            if n.count < weakest_count {
                weakest_count = n.count;
                weakest = i;
            }
        }
        if self.neighbours.len() < k {
            let before = self.neighbours.capacity();
            if self.neighbours.len() == before {
                // Grow by doubling, but never past K: long-tail videos with a
                // few neighbours stay small.
                let target = list_capacity(before + 1, k);
                self.neighbours.reserve_exact(target - self.neighbours.len());
            }
            self.neighbours.push(Neighbour { id: other, count: inc, err: 0.0 });
            let grown = self.neighbours.capacity() - before;
            return (grown * Neighbour::BYTES) as isize;
        }
        if let Some(slot) = self.neighbours.get_mut(weakest) {
            *slot = Neighbour { id: other, count: weakest_count + inc, err: weakest_count };
        }
        0
    }

    /// Keeps the `k` strongest neighbours (after loading with a smaller K).
    pub fn truncate_to(&mut self, k: usize) {
        if self.neighbours.len() > k {
            self.neighbours.sort_by(|a, b| b.count.total_cmp(&a.count));
            self.neighbours.truncate(k);
            self.neighbours.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HL: f64 = 1_000.0;

    #[test]
    fn counts_accumulate_and_k_holds() {
        let mut row = VideoRow::new("a".into(), 0);
        for other in 0..10 {
            row.add_pair(other, 0, 1.0, HL, 4);
            assert!(row.neighbours.len() <= 4);
            assert!(row.neighbours.capacity() <= 4);
        }
        row.add_pair(9, 0, 1.0, HL, 4);
        let nine = row.neighbours.iter().find(|n| n.id == 9).unwrap();
        assert!(nine.count >= 2.0);
    }

    #[test]
    fn a_newcomer_gets_a_chance_and_a_frequent_neighbour_is_never_lost() {
        let mut row = VideoRow::new("a".into(), 0);
        // SpaceSaving keeps any neighbour holding more than 1/K of the
        // row's weight: 100 of 200 here, with K = 3.
        for _ in 0..100 {
            row.add_pair(1, 0, 1.0, HL, 3);
        }
        // A stream of one-off pairs churns the other slots...
        for other in 100..200 {
            row.add_pair(other, 0, 1.0, HL, 3);
            // ...each newcomer survives the next arrival.
            assert!(row.neighbours.iter().any(|n| n.id == other));
        }
        let one = row.neighbours.iter().find(|n| n.id == 1).unwrap();
        assert_eq!(one.evidence(), 100.0);
        // A churned slot's evidence is only what its holder brought.
        assert!(row.neighbours.iter().filter(|n| n.id != 1).all(|n| n.evidence() <= 1.0));
    }

    #[test]
    fn list_capacity_follows_the_growth_rule() {
        for k in [1, 3, 4, 5, 64, 100] {
            let mut row = VideoRow::new("a".into(), 0);
            assert_eq!(list_capacity(0, k), 0);
            for other in 0..k as u32 {
                row.add_pair(other, 0, 1.0, HL, k);
                assert_eq!(row.neighbours.capacity(), list_capacity(row.neighbours.len(), k), "k {k}");
            }
        }
    }

    #[test]
    fn rescaling_keeps_true_values() {
        let mut row = VideoRow::new("a".into(), 0);
        row.add_watch(0, 1.0, HL);
        row.add_pair(7, 0, 1.0, HL, 4);
        let late = (RESCALE_HALF_LIVES as i64 + 5) * HL as i64;
        row.add_watch(late, 1.0, HL);
        assert_eq!(row.base_ms, late, "rescaled");
        let total_now = f64::from(row.total) * decay(row.base_ms, late, HL);
        let expected = 1.0 + (-(late as f64) / HL).exp2();
        assert!((total_now - expected).abs() < 1e-6, "{total_now} vs {expected}");
        // Within the threshold, values grow in the row's scale instead.
        row.add_watch(late + HL as i64, 1.0, HL);
        assert!((row.total - (expected as f32 + 2.0)).abs() < 1e-5, "{}", row.total);
    }
}
