//! Snapshots: a round trip answers exactly like the live tables, a replayed
//! tail after a snapshot matches the uninterrupted run, and any damage is
//! refused with a clear error.

mod common;

use std::path::Path;

use common::*;
use watchnext_core::{event::Event, generator::Generator};
use watchnext_cowatch::{CowatchConfig, CowatchError, CowatchGenerator, HEADER_BYTES};

/// A small stream: 300 users, 200 videos, sessions of 2 to 6 watches.
fn stream(seed: u64, from_ms: i64) -> Vec<Event> {
    let mut state = seed | 1;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut events = Vec::new();
    let mut t = from_ms;
    for _ in 0..600 {
        let user = format!("u{}", rand(300));
        let len = 2 + rand(5);
        let topic = rand(10);
        for _ in 0..len {
            t += 7_000;
            let video = format!("v{}", topic * 20 + rand(20));
            events.push(watch_fraction(&user, &video, t, 0.2 + rand(80) as f32 / 100.0));
        }
    }
    events
}

fn answers(g: &CowatchGenerator) -> Vec<(String, Vec<(String, f32)>)> {
    (0..200)
        .map(|v| {
            let video = format!("v{v}");
            let out = g.generate(&query(&video), 20);
            (video, out.candidates.into_iter().map(|c| (c.video.to_string(), c.score)).collect())
        })
        .collect()
}

fn load(path: &Path) -> Result<CowatchGenerator, CowatchError> {
    CowatchGenerator::load(path, CowatchConfig::default()).map(|(g, _)| g)
}

#[test]
fn a_round_trip_answers_exactly_like_the_live_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cowatch.snap");
    let live = generator(CowatchConfig::default());
    live.observe(&stream(1, T0));
    let written = live.snapshot(&path, 4_242).unwrap();
    assert_eq!(written.covered_seq, 4_242);
    assert_eq!(written.bytes, std::fs::metadata(&path).unwrap().len());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");

    let (loaded, info) = CowatchGenerator::load(&path, CowatchConfig::default()).unwrap();
    assert_eq!(info, written);
    let expected = answers(&live);
    assert!(expected.iter().filter(|(_, c)| !c.is_empty()).count() > 150);
    assert_eq!(answers(&loaded), expected);
    assert_eq!(loaded.memory(), live.memory());
    assert_eq!(loaded.stats().clock_ms, live.stats().clock_ms);
    // Watches 7 s apart, a half-life per 1M watches: the decay clock lags
    // the event clock, and the snapshot keeps it.
    let decay = live.stats().decay_clock_ms;
    assert!(decay < live.stats().clock_ms - 60_000, "{:?}", live.stats());
    assert_eq!(loaded.stats().decay_clock_ms, decay);
}

#[test]
fn snapshot_then_tail_replay_equals_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cowatch.snap");
    let events = stream(2, T0);
    let (head, tail) = events.split_at(events.len() / 2);

    let uninterrupted = generator(CowatchConfig::default());
    uninterrupted.observe(head);
    uninterrupted.snapshot(&path, head.len() as u64).unwrap();
    uninterrupted.observe(tail);

    let (restarted, info) = CowatchGenerator::load(&path, CowatchConfig::default()).unwrap();
    restarted.observe(&events[info.covered_seq as usize..]);
    assert_eq!(answers(&restarted), answers(&uninterrupted), "windows spanning the snapshot survive it");
}

#[test]
fn a_smaller_k_at_load_keeps_the_strongest_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cowatch.snap");
    let live = generator(CowatchConfig::default());
    live.observe(&stream(3, T0));
    live.snapshot(&path, 1).unwrap();
    let (small, _) =
        CowatchGenerator::load(&path, CowatchConfig { max_neighbours: 2, ..CowatchConfig::default() }).unwrap();
    assert!(small.neighbour_lists().0 <= 2);
    assert!(small.memory().table_bytes < live.memory().table_bytes);
}

#[test]
fn truncated_or_damaged_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cowatch.snap");
    let live = generator(CowatchConfig::default());
    live.observe(&stream(4, T0));
    live.snapshot(&path, 7).unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.snap");

    // Every truncation, at a spread of lengths.
    let mut lengths: Vec<usize> =
        vec![0, 1, 5, 8, 20, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 1, good.len() - 1];
    lengths.extend((1..50).map(|i| good.len() * i / 50));
    for len in lengths {
        std::fs::write(&bad, &good[..len]).unwrap();
        match load(&bad) {
            Err(CowatchError::Corrupt { problem, .. }) => assert!(!problem.is_empty()),
            Err(CowatchError::NotASnapshot { .. }) if len == 0 => {}
            other => panic!("truncated to {len} of {}: {other:?}", good.len()),
        }
    }
    // A flipped bit anywhere.
    let mut positions: Vec<usize> = vec![0, 9, 17, 30, 41, HEADER_BYTES, good.len() - 1];
    positions.extend((1..60).map(|i| good.len() * i / 60));
    for pos in positions {
        for bit in [0, 3, 7] {
            let mut bytes = good.clone();
            bytes[pos] ^= 1 << bit;
            std::fs::write(&bad, &bytes).unwrap();
            let err = load(&bad).map(|_| ()).expect_err(&format!("bit {bit} of byte {pos} flipped"));
            assert!(
                matches!(err, CowatchError::Corrupt { .. } | CowatchError::NotASnapshot { .. }),
                "byte {pos}: {err}"
            );
        }
    }
    // Appended garbage.
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&bad, &longer).unwrap();
    assert!(matches!(load(&bad), Err(CowatchError::Corrupt { .. })));
    // Not a snapshot at all, a missing file, a newer version.
    std::fs::write(&bad, b"{\"videos\": []}\n this is JSON, not a snapshot of ours at all").unwrap();
    let err = load(&bad).map(|_| ()).unwrap_err();
    assert!(matches!(err, CowatchError::NotASnapshot { .. }), "{err}");
    assert!(err.to_string().contains("bad.snap"), "{err}");
    assert!(matches!(load(&dir.path().join("missing")), Err(CowatchError::Io { .. })));
    let mut newer = good.clone();
    newer[8] = 3;
    let crc = crc32c(&newer[..HEADER_BYTES - 4]);
    newer[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&bad, &newer).unwrap();
    let err = load(&bad).map(|_| ()).unwrap_err();
    assert!(matches!(err, CowatchError::UnsupportedVersion { found: 3, supported: 2, .. }), "{err}");
    assert!(err.to_string().contains("versions 1 to 2"), "{err}");
    // A version-3 header laid out like version 1's is named as such too.
    let mut newer_v1 = as_version_1(&good);
    newer_v1[8] = 3;
    let crc = crc32c(&newer_v1[..40]);
    newer_v1[40..44].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&bad, &newer_v1).unwrap();
    let err = load(&bad).map(|_| ()).unwrap_err();
    assert!(matches!(err, CowatchError::UnsupportedVersion { found: 3, .. }), "{err}");

    // The good file still loads.
    assert!(load(&path).is_ok());
}

/// The same snapshot in format version 1: a 44-byte header without the
/// decay clock (the rows' times were event times then).
fn as_version_1(v2: &[u8]) -> Vec<u8> {
    let mut out = v2[..40].to_vec();
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&v2[HEADER_BYTES..v2.len() - 4]);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_version_1_snapshot_still_loads_with_the_decay_clock_at_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cowatch.snap");
    // With event time alone the decay clock is the event clock, as version 1 assumed.
    let config = CowatchConfig { half_life_min_watches: 0, ..CowatchConfig::default() };
    let events = stream(5, T0);
    let (head, tail) = events.split_at(events.len() / 2);
    let live = generator(config.clone());
    live.observe(head);
    live.snapshot(&path, head.len() as u64).unwrap();
    let old = dir.path().join("v1.snap");
    std::fs::write(&old, as_version_1(&std::fs::read(&path).unwrap())).unwrap();

    let (loaded, info) = CowatchGenerator::load(&old, config).unwrap();
    assert_eq!(info.covered_seq, head.len() as u64);
    assert_eq!(info.bytes, std::fs::metadata(&path).unwrap().len() - 8);
    let stats = loaded.stats();
    assert_eq!((stats.clock_ms, stats.decay_clock_ms), (live.stats().clock_ms, live.stats().clock_ms));
    assert_eq!(answers(&loaded), answers(&live));
    live.observe(tail);
    loaded.observe(tail);
    assert_eq!(answers(&loaded), answers(&live), "and it goes on from there");
    assert_eq!(loaded.stats().decay_clock_ms, live.stats().decay_clock_ms);
}

/// CRC32C (Castagnoli), bitwise: the test's own, independent of the crate's.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
