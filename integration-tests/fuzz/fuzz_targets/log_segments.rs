//! The feedback log's reader and start-up recovery against damaged segment
//! files: a log written once by the real writer, then damaged per input
//! (bytes flipped, files cut short, bytes inserted), then read back and
//! recovered. Neither may panic, and every record either returns is one
//! that was written, with its own sequence number, in order.
#![no_main]

use std::{path::Path, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use watchnext_core::{
    event::{Event, EventKind},
    ids::{UserId, VideoId},
    request::Device,
};
use watchnext_feedback::{FeedbackLog, LogOptions, LogReader, segment::parse_segment_file_name};

struct Pristine {
    events: Vec<Event>,
    /// Segment files, by name.
    files: Vec<(String, Vec<u8>)>,
}

fn event(i: usize) -> Event {
    let kind = match i % 4 {
        0 => EventKind::Watch { seconds_watched: i as f32, video_duration_seconds: 600.0 },
        1 => EventKind::Click,
        2 => EventKind::Like,
        _ => EventKind::Dismiss,
    };
    Event {
        timestamp_ms: 1_700_000_000_000 + i as i64 * 1_000,
        request_id: format!("r{}", i / 3),
        user: UserId::parse("u", &format!("user-{}", i % 17)).expect("id"),
        video: VideoId::parse("v", &format!("video-{}", i % 23)).expect("id"),
        device: Device::Phone,
        kind,
    }
}

fn options() -> LogOptions {
    // Small segments: the log spans several files.
    LogOptions { segment_max_bytes: 2_048, ..LogOptions::default() }
}

fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<Event> = (0..150).map(event).collect();
        {
            let (log, _) = FeedbackLog::open(dir.path(), options()).expect("open");
            for chunk in events.chunks(7) {
                log.append_blocking(chunk.to_vec()).expect("append");
            }
        }
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                parse_segment_file_name(&name)?;
                let bytes = std::fs::read(dir.path().join(&name)).ok()?;
                Some((name, bytes))
            })
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{} segments", files.len());
        Pristine { events, files }
    })
}

/// Every record `dir` yields is the one written with that sequence number, in order.
fn check_reader(dir: &Path, events: &[Event]) {
    let Ok(reader) = LogReader::open(dir, 1) else { return };
    let mut last = 0u64;
    for item in reader {
        let Ok((seq, event)) = item else { break };
        assert!(seq > last, "sequence {seq} after {last}");
        last = seq;
        let written = usize::try_from(seq - 1).ok().and_then(|i| events.get(i));
        assert_eq!(written, Some(&event), "record {seq} is not the one written");
    }
}

fuzz_target!(|data: &[u8]| {
    let p = pristine();
    let mut files = p.files.clone();
    // Up to 8 damages of 5 bytes each: file, kind, position (2 bytes), value.
    for op in data.chunks_exact(5).take(8) {
        let (name, bytes) = &mut files[op[0] as usize % p.files.len()];
        let _ = name;
        if bytes.is_empty() {
            continue;
        }
        let at = u16::from_le_bytes([op[2], op[3]]) as usize % bytes.len();
        match op[1] % 3 {
            0 => bytes[at] ^= op[4] | 1,
            1 => bytes.truncate(at),
            _ => bytes.insert(at, op[4]),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    check_reader(dir.path(), &p.events);
    // Start-up recovery on the damaged folder, then a reader again.
    if let Ok((log, _report)) = FeedbackLog::open(dir.path(), options()) {
        drop(log);
        check_reader(dir.path(), &p.events);
    }
});
