//! Experiment arms: a user is assigned to an arm by hashing their id, so
//! the same user always lands in the same arm (until the arms change), and
//! shares are respected over many users. A request may force an arm by
//! name; an unknown name is a client error.

use watchnext_core::features::{FNV_OFFSET, stable_hash};

use crate::config::ArmConfig;

/// The configured arms with their cumulative shares.
#[derive(Debug, Clone)]
pub struct Arms {
    arms: Vec<ArmConfig>,
    /// Upper bound of each arm's slice of [0, 1).
    bounds: Vec<f64>,
}

/// Buckets a user id falls into (the share resolution).
const BUCKETS: u64 = 10_000;

impl Arms {
    /// `arms`, or a single `default` arm when empty.
    pub fn new(arms: Vec<ArmConfig>) -> Self {
        let arms = if arms.is_empty() {
            vec![ArmConfig {
                name: "default".into(),
                share: 1.0,
                model_version: String::new(),
                weights: Default::default(),
            }]
        } else {
            arms
        };
        let total: f64 = arms.iter().map(|a| a.share).sum();
        let mut acc = 0.0;
        let bounds = arms
            .iter()
            .map(|a| {
                acc += a.share / total;
                acc
            })
            .collect();
        Self { arms, bounds }
    }

    /// Every arm.
    pub fn all(&self) -> &[ArmConfig] {
        &self.arms
    }

    /// The arm of `user`: `stable_hash(user) mod 10,000` against the shares.
    pub fn assign(&self, user: &str) -> &ArmConfig {
        let bucket = stable_hash(FNV_OFFSET ^ 0xa4a5, user.as_bytes()) % BUCKETS;
        let x = (bucket as f64 + 0.5) / BUCKETS as f64;
        let i = self.bounds.iter().position(|&b| x < b).unwrap_or(self.arms.len() - 1);
        &self.arms[i]
    }

    /// The arm called `name`.
    pub fn named(&self, name: &str) -> Option<&ArmConfig> {
        self.arms.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(name: &str, share: f64) -> ArmConfig {
        ArmConfig { name: name.into(), share, model_version: String::new(), weights: Default::default() }
    }

    #[test]
    fn assignment_is_stable_and_follows_the_shares() {
        let arms = Arms::new(vec![arm("control", 3.0), arm("treatment", 1.0)]);
        let mut control = 0;
        for u in 0..20_000 {
            let user = format!("user-{u}");
            let a = arms.assign(&user).name.clone();
            assert_eq!(arms.assign(&user).name, a, "stable per user");
            control += usize::from(a == "control");
        }
        let share = control as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "control share {share}");
        assert_eq!(Arms::new(Vec::new()).assign("anyone").name, "default");
        assert!(arms.named("treatment").is_some() && arms.named("nope").is_none());
    }
}
