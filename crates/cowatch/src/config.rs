//! The generator's configuration: how watches pair up, how fast evidence
//! fades, how many neighbours a video keeps, how much memory the tables may
//! use, and how scores are shrunk and blended. Every field has a default;
//! [`CowatchConfig::validate`] names the first bad field.

use serde::{Deserialize, Serialize};

use crate::error::CowatchError;

/// The most neighbours a video may keep (the snapshot stores the count as a `u16`).
pub const MAX_NEIGHBOURS_LIMIT: usize = 4_096;
/// The longest user window (the snapshot stores its length as a `u16`).
pub const MAX_WINDOW_LIMIT: usize = 256;
/// The smallest memory budget accepted, in bytes.
pub const MIN_MEMORY_BUDGET: u64 = 16 * 1024;

/// Configuration of the co-watch generator (section `cowatch` of the server's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CowatchConfig {
    /// W: a new watch pairs with at most this many of the user's previous
    /// watches (the most recent first).
    pub window_size: usize,
    /// T: previous watches older than this many minutes (event time) leave
    /// the window; 0 = no time limit (only `window_size` and
    /// `distance_decay` apply: a user's taste does not expire, and a
    /// catalogue watched in sessions days apart still pairs).
    pub window_minutes: u32,
    /// γ: a pair at distance d in the window (1 = the watch just before)
    /// gets weight γ^(d−1); 1 = every pair in the window counts fully.
    pub distance_decay: f32,
    /// Weight each watch by the fraction of the video watched (at least
    /// `min_watch_weight`); false = every watch weighs 1.
    pub weight_by_watch_fraction: bool,
    /// The least weight of a watch when weighting by fraction watched, so a
    /// short sample still counts a little.
    pub min_watch_weight: f32,
    /// Weight of a click as a (weak) watch; 0 = clicks are ignored. Keep 0
    /// for logs where every click is followed by its watch event (the
    /// synthetic world, the feedback log of the server), or the pair counts
    /// twice.
    pub click_weight: f32,
    /// Half-life of every count, in hours of event time (see
    /// `half_life_min_watches`).
    pub half_life_hours: f64,
    /// The decay clock advances with event time, but by at most
    /// `half_life_hours / half_life_min_watches` per watch observed: a
    /// half-life passes only when at least this many watches of newer
    /// evidence arrived, so a busy service forgets at `half_life_hours`
    /// while a small or sparse log (MovieLens: 100k ratings over 22 years)
    /// is not forgotten between its rare watches. 0 = event time alone.
    pub half_life_min_watches: u64,
    /// K: the most neighbours one video keeps.
    pub max_neighbours: usize,
    /// Budget of the video tables (neighbour lists, totals, id interning), in
    /// bytes, by the estimate of [`crate::MemoryReport`]; the least recently
    /// updated videos are evicted beyond it.
    pub memory_budget_bytes: u64,
    /// When the budget is exceeded, evict until the tables are this fraction
    /// below it, so sweeps are rare (amortised cost per new video ~ 1/fraction).
    pub evict_fraction: f32,
    /// The most user windows kept (users active within `window_minutes`);
    /// expired windows go first, then the least recently active.
    pub max_users: usize,
    /// β: evidence shrinkage; a normalised score is multiplied by c/(c + β),
    /// c the decayed co-watch count, so pairs seen once or twice cannot top a
    /// list on a lucky coincidence. 0 = no shrinkage.
    pub shrinkage: f32,
    /// Besides the query video, the user's last `blend_history` distinct
    /// history videos are asked too, and a candidate's score is the sum of
    /// its weighted scores; 0 = the query video alone.
    pub blend_history: usize,
    /// Ask the history only when the query video has fewer than this many
    /// scored neighbours; 0 = always (the default).
    pub blend_below: usize,
    /// Weight of the most recent history video (the query video weighs 1).
    pub blend_weight: f32,
    /// Recency decay of the history videos: the j-th most recent
    /// (j = 0, 1, …) weighs `blend_weight`·`blend_decay`^j.
    pub blend_decay: f32,
    /// Of each video asked (the query video and the history videos), only
    /// its strongest this many neighbours by decayed co-watch count are
    /// scored: a request looks up at most (1 + `blend_history`) × this many
    /// rows. The rest of the K kept only make the strongest counts exact
    /// (scoring all 256 found nothing more under `eval generators`).
    pub scored_neighbours: usize,
}

impl Default for CowatchConfig {
    fn default() -> Self {
        Self {
            window_size: 10,
            window_minutes: 0,
            distance_decay: 0.9,
            weight_by_watch_fraction: true,
            min_watch_weight: 0.1,
            click_weight: 0.0,
            half_life_hours: 7.0 * 24.0,
            half_life_min_watches: 1_000_000,
            max_neighbours: 256,
            memory_budget_bytes: 1 << 30,
            evict_fraction: 0.1,
            max_users: 1_000_000,
            shrinkage: 2.0,
            blend_history: 4,
            blend_below: 0,
            blend_weight: 0.5,
            blend_decay: 0.8,
            scored_neighbours: 64,
        }
    }
}

fn bad(field: &str, problem: String) -> CowatchError {
    CowatchError::Config { field: field.to_owned(), problem }
}

impl CowatchConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), CowatchError> {
        if !(1..=MAX_WINDOW_LIMIT).contains(&self.window_size) {
            return Err(bad("window_size", format!("is {}; must be within 1..={MAX_WINDOW_LIMIT}", self.window_size)));
        }
        if !(self.distance_decay.is_finite() && self.distance_decay > 0.0 && self.distance_decay <= 1.0) {
            return Err(bad("distance_decay", format!("is {}; must be within (0, 1]", self.distance_decay)));
        }
        if !(self.min_watch_weight.is_finite() && (0.0..=1.0).contains(&self.min_watch_weight)) {
            return Err(bad("min_watch_weight", format!("is {}; must be within 0..=1", self.min_watch_weight)));
        }
        if !(self.click_weight.is_finite() && (0.0..=1.0).contains(&self.click_weight)) {
            return Err(bad(
                "click_weight",
                format!("is {}; must be within 0..=1 (0 = ignore clicks)", self.click_weight),
            ));
        }
        // Up to 100 years: beyond that decay is meaningless and the
        // millisecond arithmetic would lose precision.
        if !(self.half_life_hours.is_finite() && self.half_life_hours > 0.0 && self.half_life_hours <= 876_000.0) {
            return Err(bad(
                "half_life_hours",
                format!("is {}; must be a number of hours within (0, 876000]", self.half_life_hours),
            ));
        }
        if !(1..=MAX_NEIGHBOURS_LIMIT).contains(&self.max_neighbours) {
            return Err(bad(
                "max_neighbours",
                format!("is {}; must be within 1..={MAX_NEIGHBOURS_LIMIT}", self.max_neighbours),
            ));
        }
        if self.memory_budget_bytes < MIN_MEMORY_BUDGET {
            return Err(bad(
                "memory_budget_bytes",
                format!("is {}; must be at least {MIN_MEMORY_BUDGET}", self.memory_budget_bytes),
            ));
        }
        if !(self.evict_fraction.is_finite() && self.evict_fraction > 0.0 && self.evict_fraction < 1.0) {
            return Err(bad("evict_fraction", format!("is {}; must be within (0, 1)", self.evict_fraction)));
        }
        if self.max_users == 0 {
            return Err(bad("max_users", "is 0; must be at least 1".into()));
        }
        if !(self.shrinkage.is_finite() && self.shrinkage >= 0.0) {
            return Err(bad("shrinkage", format!("is {}; must be a finite number >= 0", self.shrinkage)));
        }
        if self.blend_history > 100 {
            return Err(bad("blend_history", format!("is {}; must be at most 100", self.blend_history)));
        }
        if !(self.blend_weight.is_finite() && (0.0..=1.0).contains(&self.blend_weight)) {
            return Err(bad("blend_weight", format!("is {}; must be within 0..=1", self.blend_weight)));
        }
        if !(self.blend_decay.is_finite() && (0.0..=1.0).contains(&self.blend_decay)) {
            return Err(bad("blend_decay", format!("is {}; must be within 0..=1", self.blend_decay)));
        }
        if self.scored_neighbours == 0 {
            return Err(bad("scored_neighbours", "is 0; must be at least 1".into()));
        }
        Ok(())
    }

    /// The half-life in milliseconds.
    pub(crate) fn half_life_ms(&self) -> f64 {
        self.half_life_hours * 3_600_000.0
    }

    /// The most the decay clock advances per watch, in ms (at least 1);
    /// `None` = no limit (event time alone).
    pub(crate) fn decay_step_ms(&self) -> Option<i64> {
        (self.half_life_min_watches > 0)
            .then(|| ((self.half_life_ms() / self.half_life_min_watches as f64).round() as i64).max(1))
    }

    /// T in milliseconds; `None` when unlimited.
    pub(crate) fn window_ms(&self) -> Option<i64> {
        (self.window_minutes > 0).then(|| i64::from(self.window_minutes) * 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_json() {
        let config = CowatchConfig::default();
        config.validate().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<CowatchConfig>(&json).unwrap(), config);
        let partial: CowatchConfig = serde_json::from_str(r#"{"max_neighbours": 8}"#).unwrap();
        assert_eq!(partial.max_neighbours, 8);
        assert_eq!(partial.window_size, config.window_size);
        assert!(serde_json::from_str::<CowatchConfig>(r#"{"max_neighbors": 8}"#).is_err(), "unknown keys refused");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut CowatchConfig);
        let cases: [(&str, Mutation); 15] = [
            ("window_size", |c| c.window_size = 0),
            ("distance_decay", |c| c.distance_decay = 0.0),
            ("distance_decay", |c| c.distance_decay = f32::NAN),
            ("min_watch_weight", |c| c.min_watch_weight = 2.0),
            ("click_weight", |c| c.click_weight = -1.0),
            ("half_life_hours", |c| c.half_life_hours = 0.0),
            ("max_neighbours", |c| c.max_neighbours = MAX_NEIGHBOURS_LIMIT + 1),
            ("memory_budget_bytes", |c| c.memory_budget_bytes = 10),
            ("evict_fraction", |c| c.evict_fraction = 1.0),
            ("max_users", |c| c.max_users = 0),
            ("shrinkage", |c| c.shrinkage = f32::INFINITY),
            ("blend_history", |c| c.blend_history = 1_000),
            ("blend_weight", |c| c.blend_weight = 1.5),
            ("blend_decay", |c| c.blend_decay = -0.1),
            ("scored_neighbours", |c| c.scored_neighbours = 0),
        ];
        for (field, mutate) in cases {
            let mut config = CowatchConfig::default();
            mutate(&mut config);
            match config.validate() {
                Err(CowatchError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
