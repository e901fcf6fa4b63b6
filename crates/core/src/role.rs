//! The roles of a `watchnext` process. The embedded default, [`Role::All`],
//! serves every service on one port and the roles call each other in-process;
//! a split deployment runs one role per process and they call each other over
//! gRPC, through the same traits.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// What one process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every service in one process (the embedded default).
    All,
    /// The front door: fan-out, merge, ranking call, combiner.
    Recommender,
    /// The multitask ranking model.
    Ranker,
    /// Topic-match candidate generator.
    Topic,
    /// Co-watch candidate generator.
    Cowatch,
    /// Sequence-model candidate generator.
    Sequence,
    /// Context-aware candidate generator.
    Context,
    /// Feedback ingestion into the durable log.
    Feedback,
}

impl Role {
    /// Every role, `All` first.
    pub const ALL: [Role; 8] = [
        Role::All,
        Role::Recommender,
        Role::Ranker,
        Role::Topic,
        Role::Cowatch,
        Role::Sequence,
        Role::Context,
        Role::Feedback,
    ];

    /// The four candidate-generator roles.
    pub const GENERATORS: [Role; 4] = [Role::Topic, Role::Cowatch, Role::Sequence, Role::Context];

    /// The lowercase name used in config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Recommender => "recommender",
            Role::Ranker => "ranker",
            Role::Topic => "topic",
            Role::Cowatch => "cowatch",
            Role::Sequence => "sequence",
            Role::Context => "context",
            Role::Feedback => "feedback",
        }
    }

    /// Whether a process of this role serves `other`.
    pub fn includes(self, other: Role) -> bool {
        self == Role::All || self == other
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
            format!("unknown role `{s}`; expected one of {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
        let err = "rankr".parse::<Role>().unwrap_err();
        assert!(err.contains("ranker") && err.contains("rankr"), "{err}");
        assert!(Role::All.includes(Role::Topic));
        assert!(!Role::Ranker.includes(Role::Topic));
    }
}
