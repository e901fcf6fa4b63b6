//! The roles of a `watchnext` process. The embedded default, [`Role::All`],
//! serves every service on one port and the roles call each other in-process;
//! a split deployment runs one role per process and they call each other over
//! gRPC, through the same traits.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{event::Source, registry};

/// What one process serves. Written in config and on the command line by
/// name: `all`, `recommender`, `ranker`, `feedback`, or a generator's
/// registry name (`topic`, `cowatch`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Every service in one process (the embedded default).
    All,
    /// The front door: fan-out, merge, ranking call, combiner.
    Recommender,
    /// The multitask ranking model.
    Ranker,
    /// One candidate generator of the registry ([`crate::registry`]).
    Generator(Source),
    /// Feedback ingestion into the durable log.
    Feedback,
}

impl Role {
    /// Every role, `All` first, the generators in registry order.
    pub fn all() -> impl Iterator<Item = Role> {
        [Role::All, Role::Recommender, Role::Ranker].into_iter().chain(Self::generators()).chain([Role::Feedback])
    }

    /// The candidate-generator roles, in registry order.
    pub fn generators() -> impl Iterator<Item = Role> {
        registry::GENERATORS.iter().map(|s| Role::Generator(*s))
    }

    /// The generator role named `name` in the registry.
    pub fn generator(name: &str) -> Option<Role> {
        registry::by_name(name).map(Role::Generator)
    }

    /// The lowercase name used in config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Recommender => "recommender",
            Role::Ranker => "ranker",
            Role::Generator(source) => crate::event::source_name(source),
            Role::Feedback => "feedback",
        }
    }

    /// The generator this role serves, if it is a generator role.
    pub fn source(self) -> Option<Source> {
        match self {
            Role::Generator(source) => Some(source),
            _ => None,
        }
    }

    /// Whether a process of this role serves `other`.
    pub fn includes(self, other: Role) -> bool {
        self == Role::All || self == other
    }

    /// Whether a process of this role hosts any candidate generator.
    pub fn hosts_generators(self) -> bool {
        matches!(self, Role::All | Role::Generator(_))
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
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
        Role::all().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<_> = Role::all().map(|r| r.name()).collect();
            format!("unknown role `{s}`; expected one of {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for role in Role::all() {
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
        assert_eq!("cowatch".parse::<Role>().unwrap(), Role::Generator(Source::Cowatch));
        assert_eq!(Role::generators().count(), registry::COUNT);
        let json = serde_json::to_string(&Role::Generator(Source::Sequence)).unwrap();
        assert_eq!(json, "\"sequence\"");
        assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), Role::Generator(Source::Sequence));
        assert!(serde_json::from_str::<Role>("\"unspecified\"").is_err());
        let err = "rankr".parse::<Role>().unwrap_err();
        assert!(err.contains("ranker") && err.contains("rankr"), "{err}");
        assert!(Role::All.includes(Role::Generator(Source::Topic)));
        assert!(!Role::Ranker.includes(Role::Generator(Source::Topic)));
    }
}
