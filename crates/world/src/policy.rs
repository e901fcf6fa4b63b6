//! Logging policies: what the platform showed while the logs were written.
//!
//! Both policies draw the same candidate pool for a query video q at time t:
//! `3K` draws from q's topics (∝ popularity within each topic, split evenly
//! over its topics), `K` draws ∝ global popularity and `K` uniform draws,
//! keeping videos uploaded by t that are not q, not in the user's recent
//! history, and not already in the pool. Then:
//!
//! - [`LoggingPolicy::PopularityNoise`] scores each candidate
//!   `ln(N·popularity) + 1.5·[shares a topic with q] + noise·G` (G a standard
//!   Gumbel draw) and shows the top K. Propensities are unknown (0).
//! - [`LoggingPolicy::RandomOrder`] shows K candidates in a uniformly random
//!   order: every pool member lands at every position with probability
//!   `1/|pool|`, which is the logged propensity; the score is 0.
//!
//! There is no candidate generator in a logging policy, so impressions are
//! tagged [`watchnext_core::event::Source::Context`] with the policy's score,
//! and `model_version` is the policy's [`LoggingPolicy::name`].

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{
    error::WorldError,
    random::{gumbel, index},
    response::{Slot, UserState},
    world::World,
};

/// Log-score bonus of candidates that share a topic with the query video.
const TOPIC_BONUS: f64 = 1.5;

/// The policy that chose the lists of a generated log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoggingPolicy {
    /// Order by noisy popularity (a typical production heuristic; biased).
    PopularityNoise {
        /// Scale of the Gumbel noise on the log-popularity score (≥ 0).
        noise: f64,
    },
    /// Uniformly random order (unbiased position estimates, known propensities).
    RandomOrder,
}

impl Default for LoggingPolicy {
    fn default() -> Self {
        Self::PopularityNoise { noise: 1.0 }
    }
}

impl LoggingPolicy {
    /// The name logged as `model_version`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PopularityNoise { .. } => "popularity-noise",
            Self::RandomOrder => "random-order",
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), WorldError> {
        match *self {
            Self::PopularityNoise { noise } if !(noise.is_finite() && noise >= 0.0) => {
                Err(WorldError::config("policy.noise", format!("is {noise}; must be a finite number >= 0")))
            }
            _ => Ok(()),
        }
    }

    /// Fills `list` with the K videos shown for `query` at `at_ms`; `pool` is
    /// scratch space.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn choose<R: Rng + ?Sized>(
        &self,
        world: &World,
        rng: &mut R,
        query: u32,
        at_ms: i64,
        state: &UserState,
        pool: &mut Vec<(f64, u32)>,
        list: &mut Vec<Slot>,
    ) {
        let k = world.config().list_size as usize;
        candidate_pool(world, rng, query, at_ms, state, k, pool);
        list.clear();
        match *self {
            Self::PopularityNoise { noise } => {
                let query_topics = world.video(query).topics();
                let n = f64::from(world.num_videos());
                for (score, v) in pool.iter_mut() {
                    let truth = world.video(*v);
                    let shares = truth.topics().iter().any(|t| query_topics.contains(t));
                    *score = (n * truth.popularity).ln() + if shares { TOPIC_BONUS } else { 0.0 } + noise * gumbel(rng);
                }
                pool.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                list.extend(pool.iter().take(k).map(|&(score, video)| Slot {
                    video,
                    score: score as f32,
                    propensity: 0.0,
                }));
            }
            Self::RandomOrder => {
                let propensity = if pool.is_empty() { 0.0 } else { 1.0 / pool.len() as f32 };
                let shown = k.min(pool.len());
                for i in 0..shown {
                    let j = i + index(rng, pool.len() - i);
                    pool.swap(i, j);
                }
                list.extend(pool[..shown].iter().map(|&(_, video)| Slot { video, score: 0.0, propensity }));
            }
        }
    }
}

/// The candidate pool for `query` at `at_ms` (see the module documentation).
fn candidate_pool<R: Rng + ?Sized>(
    world: &World,
    rng: &mut R,
    query: u32,
    at_ms: i64,
    state: &UserState,
    k: usize,
    pool: &mut Vec<(f64, u32)>,
) {
    pool.clear();
    let add = |v: Option<u32>, pool: &mut Vec<(f64, u32)>| {
        if let Some(v) = v
            && v != query
            && !pool.iter().any(|&(_, x)| x == v)
            && !state.has_watched(v)
        {
            pool.push((0.0, v));
        }
    };
    let topics = world.video(query).topics();
    let per_topic = (3 * k).div_ceil(topics.len().max(1));
    for &t in topics {
        for _ in 0..per_topic {
            add(world.topic_video(rng, t, at_ms), pool);
        }
    }
    for _ in 0..k {
        add(world.popular_video(rng, at_ms), pool);
    }
    for _ in 0..k {
        add(world.uniform_video(rng, at_ms), pool);
    }
    // A tiny or young catalogue may need more uniform draws to fill a list.
    for _ in 0..20 * k {
        if pool.len() >= k {
            break;
        }
        add(world.uniform_video(rng, at_ms), pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{WorldConfig, random};

    #[test]
    fn lists_are_k_distinct_available_videos_without_the_query() {
        let world = World::build(&WorldConfig::toy()).unwrap();
        let mut rng = random::stream(1, 2, 3, 4);
        let at = world.config().epoch_ms + 3 * 86_400_000;
        let (mut pool, mut list) = (Vec::new(), Vec::new());
        let state = UserState::default();
        for policy in [LoggingPolicy::PopularityNoise { noise: 0.5 }, LoggingPolicy::RandomOrder] {
            for query in [0, 1, 500, 999] {
                policy.choose(&world, &mut rng, query, at, &state, &mut pool, &mut list);
                assert_eq!(list.len(), 10);
                let mut ids: Vec<u32> = list.iter().map(|s| s.video).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), 10);
                assert!(!ids.contains(&query));
                assert!(list.iter().all(|s| world.video(s.video).upload_ms <= at));
                match policy {
                    LoggingPolicy::RandomOrder => {
                        assert!(list.iter().all(|s| s.propensity == 1.0 / pool.len() as f32 && s.score == 0.0))
                    }
                    _ => {
                        assert!(list.iter().all(|s| s.propensity == 0.0));
                        assert!(list.windows(2).all(|w| w[0].score >= w[1].score));
                    }
                }
            }
        }
        assert!(LoggingPolicy::PopularityNoise { noise: -1.0 }.validate().is_err());
        let json = serde_json::to_string(&LoggingPolicy::PopularityNoise { noise: 0.5 }).unwrap();
        assert_eq!(json, r#"{"kind":"popularity_noise","noise":0.5}"#);
        assert_eq!(
            serde_json::from_str::<LoggingPolicy>(r#"{"kind":"random_order"}"#).unwrap(),
            LoggingPolicy::RandomOrder
        );
    }
}
