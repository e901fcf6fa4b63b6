//! Tests of the log against real files in temporary folders.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use watchnext_core::{
    Device, UserId, VideoId,
    event::{Event, EventKind, EventSink, FeatureVector, Impression, Source, Vote},
};

use super::*;
use crate::segment::{FRAME_LEN, HEADER_LEN, RecordProblem, frame_record, segment_file_name};

fn event(i: u64) -> Event {
    let kind = match i % 4 {
        0 => EventKind::Impression(Impression {
            position: (i % 10) as u32 + 1,
            query_video: Some(VideoId::parse("q", "q1").unwrap()),
            sources: vec![Vote::new(Source::Cowatch, 0.5, 1)],
            features: Some(FeatureVector { schema_hash: "h".into(), dense: vec![i as f32], sparse: vec![i as i64] }),
            model_version: "m".into(),
            experiment_arm: "a".into(),
            propensity: 0.5,
        }),
        1 => EventKind::Click,
        2 => EventKind::Watch { seconds_watched: i as f32, video_duration_seconds: 100.0 },
        _ => EventKind::Rating { value: 3.5 },
    };
    Event {
        timestamp_ms: 1_700_000_000_000 + i as i64,
        request_id: format!("req-{}", i / 4),
        user: UserId::parse("u", &format!("user-{}", i % 13)).unwrap(),
        video: VideoId::parse("v", &format!("video-{i}")).unwrap(),
        device: Device::Phone,
        kind,
    }
}

fn events(range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(event).collect()
}

fn read_all(reader: LogReader) -> Vec<(u64, Event)> {
    reader.map(Result::unwrap).collect()
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

fn tiny_segments() -> LogOptions {
    LogOptions { segment_max_bytes: 1024, ..LogOptions::default() }
}

#[tokio::test]
async fn appends_are_acknowledged_with_dense_sequence_numbers_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!((report.segments, report.last_seq, report.truncated.is_some()), (1, 0, false));
    assert_eq!(log.last_seq(), 0);

    let a = log.append(events(0..3)).await.unwrap();
    let b = log.append(events(3..4)).await.unwrap();
    let c = log.append_blocking(events(4..10)).unwrap();
    assert_eq!((a.first_seq, a.last_seq, b.first_seq, b.last_seq, c.first_seq, c.last_seq), (1, 3, 4, 4, 5, 10));
    assert_eq!(log.last_seq(), 10);

    let back = read_all(log.reader(1).unwrap());
    assert_eq!(back.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(back.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), events(0..10));
    let from_7 = read_all(log.reader(7).unwrap());
    assert_eq!(from_7.first().map(|(s, _)| *s), Some(7));
    assert_eq!(from_7.len(), 4);

    assert!(matches!(log.append(Vec::new()).await, Err(LogError::EmptyBatch)));
    let stats = log.stats();
    assert_eq!((stats.events, stats.batches, stats.last_seq), (10, 3, 10));
}

#[test]
fn sequence_numbers_stay_dense_across_rotations_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0u64;
    for run in 0..3 {
        let (log, report) = FeedbackLog::open(dir.path(), tiny_segments()).unwrap();
        assert_eq!(report.last_seq, next, "run {run}");
        assert!(report.truncated.is_none());
        for _ in 0..20 {
            let ack = log.append_blocking(events(next..next + 3)).unwrap();
            assert_eq!((ack.first_seq, ack.last_seq), (next + 1, next + 3));
            next += 3;
        }
    }
    let segments = segment_paths(dir.path());
    assert!(segments.len() > 5, "tiny segments rotate: {}", segments.len());
    for path in &segments {
        // A new segment starts before a batch would overflow the current one.
        let len = fs::metadata(path).unwrap().len();
        assert!(len <= 1024, "{} is {len} bytes", path.display());
    }
    // Names follow the first sequence number of each segment.
    let (log, _) = FeedbackLog::open(dir.path(), tiny_segments()).unwrap();
    let back = read_all(log.reader(1).unwrap());
    assert_eq!(back.len() as u64, next);
    assert!(back.iter().enumerate().all(|(i, (seq, e))| *seq == i as u64 + 1 && *e == event(i as u64)));
    let mut starts = Vec::new();
    for (seq, _) in &back {
        if dir.path().join(segment_file_name(*seq)).exists() {
            starts.push(*seq);
        }
    }
    assert_eq!(starts.len(), segments.len());
    // A reader can start in the middle of any segment.
    let mid = read_all(log.reader(next / 2).unwrap());
    assert_eq!(mid.first().map(|(s, _)| *s), Some(next / 2));
    assert_eq!(mid.len() as u64, next - next / 2 + 1);
    // And a reader without the log sees the same.
    drop(log);
    assert_eq!(read_all(LogReader::open(dir.path(), 1).unwrap()).len() as u64, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_are_grouped_and_every_ack_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    // A short wait makes grouping certain even on a disk whose fsync is nearly free.
    let options =
        LogOptions { max_batch_wait: Duration::from_millis(5), segment_max_bytes: 64 << 10, ..LogOptions::default() };
    let (log, _) = FeedbackLog::open(dir.path(), options).unwrap();
    let (tasks, batches_per_task, batch) = (8u64, 25u64, 10u64);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for b in 0..batches_per_task {
                let start = (t * batches_per_task + b) * batch;
                let ack = log.append(events(start..start + batch)).await.unwrap();
                acks.push((start, ack));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for h in handles {
        acks.extend(h.await.unwrap());
    }
    let total = tasks * batches_per_task * batch;
    let back = read_all(log.reader(1).unwrap());
    assert_eq!(back.len() as u64, total);
    assert!(back.iter().enumerate().all(|(i, (seq, _))| *seq == i as u64 + 1), "seq order, dense");
    for (start, ack) in acks {
        assert_eq!(ack.last_seq - ack.first_seq + 1, batch);
        for k in 0..batch {
            // Each acknowledged batch is contiguous and holds exactly its events.
            assert_eq!(back[(ack.first_seq + k - 1) as usize].1, event(start + k));
        }
    }
    let stats = log.stats();
    assert_eq!(stats.batches, tasks * batches_per_task);
    assert_eq!(stats.fsyncs, stats.commits);
    assert!(
        stats.fsyncs * 2 <= stats.batches,
        "group commit should share fsyncs: {} fsyncs for {} batches",
        stats.fsyncs,
        stats.batches
    );
}

#[test]
fn a_reader_of_an_open_log_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FeedbackLog::open(dir.path(), tiny_segments()).unwrap();
    let mut reader = log.reader(1).unwrap();
    assert!(reader.next().is_none(), "nothing yet");
    log.append_blocking(events(0..5)).unwrap();
    assert_eq!(reader.by_ref().map(Result::unwrap).count(), 5);
    assert!(reader.next().is_none(), "caught up");
    for i in 0..30 {
        log.append_blocking(events(5 + i * 2..7 + i * 2)).unwrap(); // rotates several times
    }
    let rest: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest.len(), 60);
    assert_eq!(rest[0].0, 6);
    assert!(reader.problems().is_empty(), "{:?}", reader.problems());
}

/// Writes 10 events in one segment, closes the log, returns the segment path.
fn ten_events(dir: &Path) -> PathBuf {
    let (log, _) = FeedbackLog::open(dir, LogOptions::default()).unwrap();
    log.append_blocking(events(0..10)).unwrap();
    drop(log);
    segment_paths(dir).remove(0)
}

/// Offset of record `seq` (1-based) in a segment written by `ten_events`.
fn record_offset(path: &Path, seq: u64) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut at = HEADER_LEN as usize;
    for _ in 1..seq {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += FRAME_LEN + len;
    }
    at as u64
}

#[test]
fn recovery_cuts_a_record_torn_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_events(dir.path());
    let full = fs::metadata(&seg).unwrap().len();
    let last = record_offset(&seg, 10);
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(last + 7).unwrap();

    let (log, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(report.last_seq, 9);
    let tail = report.truncated.expect("a torn tail is reported");
    assert_eq!((tail.offset, tail.dropped_bytes, tail.dropped_records), (last, 7, 0));
    assert!(matches!(tail.problem, RecordProblem::Short { .. }), "{:?}", tail.problem);
    assert_eq!(fs::metadata(&seg).unwrap().len(), last);
    assert_eq!(fs::read(&tail.kept_at).unwrap().len(), 7);
    assert!(full > last + 7);

    let ack = log.append_blocking(events(100..101)).unwrap();
    assert_eq!((ack.first_seq, ack.last_seq), (10, 10));
    let back = read_all(log.reader(1).unwrap());
    assert_eq!(back.len(), 10);
    assert_eq!(back[9], (10, event(100)));
}

#[test]
fn recovery_cuts_at_a_flipped_payload_byte() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_events(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    let at = record_offset(&seg, 5) as usize + FRAME_LEN + 3;
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();

    let (log, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(report.last_seq, 4);
    let tail = report.truncated.unwrap();
    assert!(matches!(tail.problem, RecordProblem::BadChecksum { .. }), "{:?}", tail.problem);
    assert_eq!(tail.dropped_records, 6, "records 5..=10 are cut");
    assert_eq!(tail.offset, record_offset(&seg, 5));
    assert_eq!(log.append_blocking(events(0..2)).unwrap(), AppendAck { first_seq: 5, last_seq: 6 });
    assert_eq!(read_all(log.reader(1).unwrap()).len(), 6);
}

#[test]
fn recovery_cuts_appended_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_events(dir.path());
    let len = fs::metadata(&seg).unwrap().len();
    let garbage: Vec<u8> = (0..100u8).map(|b| b.wrapping_mul(37).wrapping_add(11)).collect();
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&garbage).unwrap();

    let (log, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(report.last_seq, 10);
    let tail = report.truncated.unwrap();
    assert_eq!((tail.offset, tail.dropped_bytes), (len, 100));
    assert_eq!(log.append_blocking(events(0..1)).unwrap().first_seq, 11);

    // A second open finds nothing more to repair.
    drop(log);
    let (_, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!((report.last_seq, report.truncated), (11, None));
}

#[test]
fn recovery_cuts_a_record_with_a_good_checksum_but_no_event_inside() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_events(dir.path());
    let mut bytes = Vec::new();
    frame_record(&mut bytes, 11, b"\xff\xff\xff not protobuf");
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&bytes).unwrap();
    // And one whose sequence number does not follow.
    let (log, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert!(matches!(report.truncated.unwrap().problem, RecordProblem::Undecodable(_)));
    assert_eq!(report.last_seq, 10);
    drop(log);

    let mut bytes = Vec::new();
    frame_record(&mut bytes, 42, &fs::read(&seg).unwrap()[HEADER_LEN as usize + FRAME_LEN..][..10]);
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&bytes).unwrap();
    let (_, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(report.truncated.unwrap().problem, RecordProblem::BadSequence { expected: 11, found: 42 });
}

#[test]
fn a_damaged_old_segment_is_reported_and_skipped_never_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FeedbackLog::open(dir.path(), tiny_segments()).unwrap();
    for i in 0..30 {
        log.append_blocking(events(i * 3..i * 3 + 3)).unwrap();
    }
    drop(log);
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 4);

    // Flip a byte in the middle of the second segment's second record, and
    // break the third segment's header.
    let mut second = fs::read(&segments[1]).unwrap();
    let len0 = u32::from_le_bytes(second[24..28].try_into().unwrap()) as usize;
    second[HEADER_LEN as usize + FRAME_LEN + len0 + FRAME_LEN + 2] ^= 1;
    fs::write(&segments[1], &second).unwrap();
    let second_bytes = second.clone();
    let mut third = fs::read(&segments[2]).unwrap();
    third[0] = b'X';
    fs::write(&segments[2], &third).unwrap();

    let (log, report) = FeedbackLog::open(dir.path(), tiny_segments()).unwrap();
    assert_eq!(report.bad_segments.len(), 1);
    assert_eq!(report.bad_segments[0].segment, segments[2]);
    assert!(report.bad_segments[0].problem.contains("magic"));
    assert_eq!(report.last_seq, 90, "older segments do not limit the newest one");

    let mut reader = log.reader(1).unwrap();
    let back: Vec<u64> = reader.by_ref().map(|r| r.unwrap().0).collect();
    let problems = reader.problems();
    assert!(problems.iter().any(|p| p.segment == segments[1] && p.problem.contains("checksum")), "{problems:?}");
    assert!(problems.iter().any(|p| p.segment == segments[2] && p.problem.contains("header")), "{problems:?}");
    // Everything of the first segment, one record of the second, nothing of the
    // third, everything after: in order.
    assert!(back.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(back.last(), Some(&90));
    let first_of =
        |p: &Path| crate::segment::parse_segment_file_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
    let second_start = first_of(&segments[1]);
    // The reader resynchronises after the damaged record: only it is lost.
    assert!(back.contains(&second_start) && !back.contains(&(second_start + 1)));
    assert!(back.contains(&(second_start + 2)), "reading resumes after the damage: {back:?}");
    let third_start = first_of(&segments[2]);
    let fourth_start = first_of(&segments[3]);
    assert!(!back.iter().any(|s| (third_start..fourth_start).contains(s)));
    assert!(back.contains(&fourth_start));
    // Every loss is counted and named, nothing twice.
    let lost = 1 + (fourth_start - third_start);
    assert_eq!(reader.lost_records(), lost, "{problems:?}");
    assert_eq!(back.len() as u64, 90 - lost);
    let second = problems.iter().find(|p| p.segment == segments[1]).unwrap();
    let n = second_start + 1;
    assert!(second.problem.contains(&format!("records {n}..={n} lost")), "{}", second.problem);
    // The damaged bytes are kept aside, the segment itself is untouched.
    let kept = segments[1].with_file_name(format!(
        "{}.damaged-{}",
        segments[1].file_name().unwrap().to_string_lossy(),
        second.offset
    ));
    assert!(kept.is_file(), "{kept:?}");
    assert_eq!(fs::read(&segments[1]).unwrap(), second_bytes);
    // Appends go on.
    assert_eq!(log.append_blocking(events(0..1)).unwrap().first_seq, 91);
}

#[test]
fn a_flipped_length_in_a_large_old_segment_loses_one_record_not_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { segment_max_bytes: 16 << 10, ..LogOptions::default() };
    let (log, _) = FeedbackLog::open(dir.path(), options.clone()).unwrap();
    for i in 0..400 {
        log.append_blocking(events(i * 3..i * 3 + 3)).unwrap();
    }
    drop(log);
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    // Damage the length field of the 100th record of the first segment:
    // the reader cannot follow the lengths past it any more.
    let mut first = fs::read(&segments[0]).unwrap();
    let mut at = HEADER_LEN as usize;
    for _ in 0..99 {
        at += FRAME_LEN + u32::from_le_bytes(first[at..at + 4].try_into().unwrap()) as usize;
    }
    first[at + 3] ^= 0x40;
    fs::write(&segments[0], &first).unwrap();

    // The folder read on its own (as `export` does): one record lost, named.
    let mut reader = LogReader::open(dir.path(), 1).unwrap();
    let back: Vec<u64> = reader.by_ref().map(|r| r.unwrap().0).collect();
    assert_eq!(back.len(), 1199, "every record but the damaged one");
    assert!(!back.contains(&100) && back.contains(&99) && back.contains(&101));
    assert_eq!(reader.lost_records(), 1);
    let p = &reader.problems()[0];
    assert!(p.problem.contains("records 100..=100 lost") && p.problem.contains("resumes at record 101"), "{p:?}");
    // Read on its own, the folder is not written to.
    assert!(!fs::read_dir(dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("damaged")));
    // From a later sequence number, records before it are not counted lost.
    let mut later = LogReader::open(dir.path(), 150).unwrap();
    assert_eq!(later.by_ref().count(), 1200 - 149);
    assert_eq!(later.lost_records(), 0);
    let _ = options;
}

#[test]
fn a_newest_segment_with_a_bad_header_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_events(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8] = 7; // format version 7
    fs::write(&seg, &bytes).unwrap();
    let err = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::BadLastSegment { .. }), "{err}");
    assert!(err.to_string().contains("version 7"), "{err}");
}

#[test]
fn a_newest_segment_torn_while_being_created_gets_its_header_back() {
    let dir = tempfile::tempdir().unwrap();
    ten_events(dir.path());
    let torn = dir.path().join(segment_file_name(11));
    fs::write(&torn, b"WNXF").unwrap();
    fs::write(dir.path().join(format!(".{}.tmp", segment_file_name(11))), b"WNXFBLOG").unwrap();
    let (log, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert!(report.header_rewritten);
    assert_eq!(report.last_seq, 10);
    assert_eq!(fs::metadata(&torn).unwrap().len(), HEADER_LEN);
    assert_eq!(log.append_blocking(events(0..1)).unwrap().first_seq, 11);
    assert_eq!(read_all(log.reader(1).unwrap()).len(), 11);
    let stray = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert_eq!(stray.count(), 0, "unfinished segment files are removed");
}

#[test]
fn a_failed_write_is_answered_with_an_error_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    log.append_blocking(events(0..3)).unwrap();
    log.fail_next_write();
    let err = log.append_blocking(events(3..6)).unwrap_err();
    assert!(matches!(err, LogError::WriteFailed { .. }), "{err}");
    assert!(err.to_string().contains("send it again"), "{err}");
    log.check_health().unwrap();
    // The failed batch left no trace: the next one gets its sequence numbers.
    assert_eq!(log.append_blocking(events(6..8)).unwrap(), AppendAck { first_seq: 4, last_seq: 5 });
    let back = read_all(log.reader(1).unwrap());
    assert_eq!(back.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), [events(0..3), events(6..8)].concat());
    drop(log);
    let (_, report) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!((report.last_seq, report.truncated), (5, None));
}

#[test]
fn a_folder_opens_once() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    let err = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    drop(log);
    FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = LogOptions { segment_max_bytes: 10, ..LogOptions::default() };
    assert!(matches!(FeedbackLog::open(dir.path(), bad), Err(LogError::InvalidOptions(_))));
    let (log, _) = FeedbackLog::open(dir.path(), LogOptions::default()).unwrap();
    let mut huge = event(0);
    if let EventKind::Impression(imp) = &mut huge.kind {
        imp.features.as_mut().unwrap().dense = vec![0.5; 5 << 20];
    }
    let err = log.append_blocking(vec![event(1), huge]).unwrap_err();
    assert!(matches!(err, LogError::EventTooLarge { index: 1, .. }), "{err}");
    assert_eq!(log.last_seq(), 0);
}

#[test]
fn the_bulk_sink_writes_everything_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        FeedbackLog::open(dir.path(), LogOptions { segment_max_bytes: 4 << 20, ..LogOptions::default() }).unwrap();
    log.append_blocking(events(0..1)).unwrap();
    let mut sink = log.bulk_writer();
    let n = 200_000u64;
    for i in 0..n {
        sink.push(event(i)).unwrap();
    }
    let summary = sink.finish().unwrap();
    assert_eq!(summary, BulkSummary { events: n, first_seq: Some(2), last_seq: Some(n + 1) });
    assert_eq!(log.last_seq(), n + 1);
    assert!(log.stats().fsyncs < 20, "{:?}", log.stats());
    let mut count = 0u64;
    for item in log.reader(2).unwrap() {
        let (seq, e) = item.unwrap();
        assert_eq!(e, event(seq - 2));
        count += 1;
    }
    assert_eq!(count, n);
    assert!(segment_paths(dir.path()).len() > 1);
}

proptest::proptest! {
    // 32 cases in the suite; PROPTEST_CASES=N for a longer run.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever bytes of finished segments are flipped, a reader never
    /// fails or invents anything: every record is either returned intact,
    /// in order, or counted lost.
    #[test]
    fn flipped_bytes_in_finished_segments_lose_records_but_never_invent_or_hide_them(
        batches in proptest::collection::vec(1u64..6, 20..80),
        flips in proptest::collection::vec((0usize..1_000, 0usize..100_000, 0u8..8), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = FeedbackLog::open(dir.path(), tiny_segments()).unwrap();
        let mut next = 0;
        for size in &batches {
            log.append_blocking(events(next..next + size)).unwrap();
            next += size;
        }
        drop(log);
        let segments = segment_paths(dir.path());
        let sealed = &segments[..segments.len() - 1];
        proptest::prop_assume!(!sealed.is_empty());
        for (segment, at, bit) in &flips {
            let path = &sealed[segment % sealed.len()];
            let mut bytes = fs::read(path).unwrap();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            fs::write(path, &bytes).unwrap();
        }
        let mut reader = LogReader::open(dir.path(), 1).unwrap();
        let back: Vec<(u64, Event)> = reader.by_ref().map(|r| r.unwrap()).collect();
        proptest::prop_assert!(back.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        for (seq, event) in &back {
            proptest::prop_assert_eq!(event, &self::event(seq - 1), "record {} intact", seq);
        }
        proptest::prop_assert_eq!(back.len() as u64 + reader.lost_records(), next, "{:?}", reader.problems());
    }
}
