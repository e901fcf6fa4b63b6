//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::{collections::BTreeMap, path::Path};

use watchnext_core::event::{Event, EventKind};

/// Writes a fixture file (creating its folder).
pub fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a file name")).expect("creating a fixture folder");
    std::fs::write(path, content).expect("writing a fixture");
}

pub fn assert_time_ordered(events: &[Event]) {
    for (i, w) in events.windows(2).enumerate() {
        assert!(
            w[0].timestamp_ms <= w[1].timestamp_ms,
            "event {} at {} after {}",
            i + 1,
            w[1].timestamp_ms,
            w[0].timestamp_ms
        );
    }
}

/// Events grouped by request id, in order of appearance.
pub fn lists(events: &[Event]) -> BTreeMap<&str, Vec<&Event>> {
    let mut lists: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        lists.entry(e.request_id.as_str()).or_default().push(e);
    }
    lists
}

pub fn count(events: &[Event], name: &str) -> usize {
    events.iter().filter(|e| e.kind.name() == name).count()
}

/// Position of each impression of a list, by video.
pub fn positions(list: &[&Event]) -> Vec<(String, u32)> {
    list.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Impression(imp) => Some((e.video.to_string(), imp.position)),
            _ => None,
        })
        .collect()
}

/// The (video, kind) pairs of a list's outcome events.
pub fn outcomes(list: &[&Event]) -> Vec<(String, &'static str)> {
    list.iter()
        .filter(|e| !matches!(e.kind, EventKind::Impression(_)))
        .map(|e| (e.video.to_string(), e.kind.name()))
        .collect()
}
