//! Per-user windows of recent watches: a new watch pairs with what the user
//! watched just before it.

/// One recent watch of a user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowEntry {
    /// Interned video id.
    pub id: u32,
    /// Event time, Unix ms.
    pub t_ms: i64,
    /// The watch's weight ω.
    pub weight: f32,
}

/// A user's last watches, oldest first, at most W entries, each video once.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserWindow {
    pub entries: Vec<WindowEntry>,
    /// Time of the user's last watch (expiry, eviction).
    pub last_ms: i64,
}

impl UserWindow {
    pub fn with_capacity(w: usize) -> Self {
        Self { entries: Vec::with_capacity(w), last_ms: i64::MIN }
    }

    /// Records a watch of `id` and appends to `pairs` every `(a, pair
    /// weight)` it forms with the window's entries: the most recent entry is
    /// at distance 1 and weighs `gamma_pows[0]·√(ω_a·ω_b)`, the next
    /// `gamma_pows[1]·…`, and so on. Entries older than `window_ms` before
    /// `t_ms` leave first; an earlier watch of the same video leaves too (a
    /// video never pairs with itself, and each video is in the window once,
    /// at its latest watch).
    pub fn push(
        &mut self,
        entry: WindowEntry,
        w: usize,
        window_ms: Option<i64>,
        gamma_pows: &[f32],
        pairs: &mut Vec<(u32, f32)>,
    ) {
        if let Some(limit) = window_ms {
            let oldest = entry.t_ms.saturating_sub(limit);
            self.entries.retain(|e| e.t_ms >= oldest);
        }
        self.entries.retain(|e| e.id != entry.id);
        for (d, a) in self.entries.iter().rev().enumerate() {
            let gamma = gamma_pows.get(d).copied().unwrap_or(0.0);
            pairs.push((a.id, gamma * (a.weight * entry.weight).sqrt()));
        }
        if self.entries.len() >= w {
            let excess = self.entries.len() + 1 - w;
            self.entries.drain(..excess);
        }
        self.entries.push(entry);
        self.last_ms = self.last_ms.max(entry.t_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u32, t_ms: i64) -> WindowEntry {
        WindowEntry { id, t_ms, weight: 1.0 }
    }

    #[test]
    fn pairs_with_the_last_w_within_the_time_limit_weighted_by_distance() {
        let gammas = [1.0, 0.5, 0.25];
        let mut window = UserWindow::with_capacity(3);
        let mut pairs = Vec::new();
        for (id, t) in [(1, 0), (2, 10), (3, 20), (4, 30)] {
            pairs.clear();
            window.push(e(id, t), 3, Some(1_000), &gammas, &mut pairs);
        }
        assert_eq!(pairs, vec![(3, 1.0), (2, 0.5), (1, 0.25)]);
        assert_eq!(window.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3, 4]);

        pairs.clear();
        window.push(e(5, 1_025), 3, Some(1_000), &gammas, &mut pairs);
        assert_eq!(pairs, vec![(4, 1.0)], "entries older than the time limit left");

        pairs.clear();
        window.push(e(4, 1_030), 3, Some(1_000), &gammas, &mut pairs);
        assert_eq!(pairs, vec![(5, 1.0)], "a rewatch never pairs with itself");
        assert_eq!(window.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4]);
    }

    #[test]
    fn watch_weights_combine_geometrically() {
        let mut window = UserWindow::with_capacity(2);
        let mut pairs = Vec::new();
        window.push(WindowEntry { id: 1, t_ms: 0, weight: 0.25 }, 2, None, &[1.0, 1.0], &mut pairs);
        window.push(WindowEntry { id: 2, t_ms: 1, weight: 1.0 }, 2, None, &[1.0, 1.0], &mut pairs);
        assert_eq!(pairs, vec![(1, 0.5)]);
    }
}
