//! The generator registry: the one list of candidate generators.
//!
//! Each entry of [`for_each_generator!`] pairs a generator's wire id (its
//! `CandidateSource` value in `proto/watchnext/v1/common.proto`) with its
//! name. Everything in the code base that enumerates generators derives
//! from that list instead of naming them:
//!
//! - the process roles (`server.role = "<name>"`, [`crate::Role::Generator`]);
//! - the configuration sections `[generators.<name>]` and the endpoint keys
//!   `endpoints.<name>` (validated against the list);
//! - the provenance features of the shared schema (`source_<name>`,
//!   `score_<name>`, `rank_<name>` in [`crate::features::DENSE`]);
//! - the stage label `generate_<name>` ([`crate::stages`]);
//! - file, log and report names ([`crate::event::source_name`]).
//!
//! The server's `generators::REGISTRY` (crate `watchnext-server`) adds each
//! generator's constructor: its config type and how it is built, fed and
//! maintained (snapshots, model reloads, offline fitting). So adding a
//! generator is: its crate (a type implementing
//! [`crate::generator::Generator`]), a `CandidateSource` value in the
//! proto, one line here and one entry there. Tests in both places fail when
//! the three disagree. Note that a new generator changes the feature schema
//! (three more dense features): bump [`crate::features::SCHEMA_VERSION`]
//! and retrain the ranker.

use crate::event::Source;

/// Calls `$callback! { Variant => "name", ... }` with every generator, in
/// wire order. The single list of generators; see the module documentation.
#[macro_export]
macro_rules! for_each_generator {
    ($callback:ident) => {
        $callback! {
            Topic => "topic",
            Cowatch => "cowatch",
            Sequence => "sequence",
            Context => "context",
        }
    };
}

macro_rules! define_generators {
    ($($variant:ident => $name:literal,)*) => {
        /// Every generator's source, in wire order.
        pub const GENERATORS: &[Source] = &[$(Source::$variant,)*];
        /// Every generator's name, in [`GENERATORS`] order.
        pub const NAMES: &[&str] = &[$($name,)*];
        /// Every generator's stage label (`generate_<name>`), in [`GENERATORS`] order.
        pub const STAGES: &[&str] = &[$(concat!("generate_", $name),)*];
        /// Every candidate source, [`Source::Unspecified`] first: index = wire value.
        pub const SOURCES: &[Source] = &[Source::Unspecified, $(Source::$variant,)*];
    };
}
for_each_generator!(define_generators);

/// How many generators there are.
pub const COUNT: usize = GENERATORS.len();

/// The position of `source` in [`GENERATORS`] (None for `Unspecified`).
pub fn index(source: Source) -> Option<usize> {
    GENERATORS.iter().position(|s| *s == source)
}

/// The generator named `name`.
pub fn by_name(name: &str) -> Option<Source> {
    NAMES.iter().position(|n| *n == name).map(|i| GENERATORS[i])
}

/// The generators' names, comma-separated (for error messages).
pub fn names() -> String {
    NAMES.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_covers_every_wire_value_once_and_in_wire_order() {
        for (i, source) in SOURCES.iter().enumerate() {
            assert_eq!(*source as i32, i as i32, "{source:?} out of wire order");
        }
        // The proto has no value beyond the list (a new one needs an entry).
        assert!(Source::try_from(SOURCES.len() as i32).is_err(), "a CandidateSource value has no registry entry");
        for (source, name) in GENERATORS.iter().zip(NAMES) {
            assert_eq!(by_name(name), Some(*source));
            // The proto's own name ends with the registry's.
            assert!(source.as_str_name().eq_ignore_ascii_case(&format!("CANDIDATE_SOURCE_{name}")), "{name}");
        }
        assert_eq!(index(Source::Unspecified), None);
        assert_eq!(by_name("nope"), None);
        assert_eq!(STAGES[index(Source::Cowatch).unwrap()], "generate_cowatch");
    }
}
