//! What [`FeedbackLog::open`](super::FeedbackLog::open) does before it
//! accepts a write: find the segments, check every header, scan the newest
//! segment record by record and cut off a torn or corrupt tail.
//!
//! Rules:
//! - Only the newest segment can have a torn tail (the writer appends to it
//!   alone), so only it is scanned; older segments were fsynced whole before
//!   the next one was created, and only their headers are checked here. A bad
//!   header of an older segment is reported and readers skip that segment.
//! - The newest segment is kept up to its last good record: a complete frame
//!   with a matching checksum, the expected sequence number and a payload
//!   that decodes to a valid event. Everything after it is cut off (it was
//!   never acknowledged if the damage is a torn write, because
//!   acknowledgements wait for fsync). The cut bytes are first copied to
//!   `<segment>.dropped-<offset>` next to it for inspection, then the
//!   segment is truncated and fsynced, and a `warn!` says how much went.
//! - A newest segment shorter than its header holds no records; its header is
//!   written again. One with a bad header *and* data stops the open with an
//!   error: the log could not tell which sequence numbers it holds.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use crate::{
    error::LogError,
    segment::{
        FRAME_LEN, HEADER_LEN, MAX_RECORD_BYTES, Next, READ_BUFFER_BYTES, RecordProblem, RecordReader, SegmentFile,
        decode_event, encode_header, keep_aside, list_segments, read_full, read_header, segment_file_name,
    },
};

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryReport {
    /// Segment files in the folder after the open.
    pub segments: usize,
    /// The last sequence number in the log; 0 when it is empty.
    pub last_seq: u64,
    /// The torn or corrupt tail cut off the newest segment, if there was one.
    pub truncated: Option<TruncatedTail>,
    /// Older segments with a bad header; readers skip them.
    pub bad_segments: Vec<SegmentProblem>,
    /// The newest segment was shorter than its header (a crash while it was
    /// being created) and got its header written again.
    pub header_rewritten: bool,
}

/// A tail cut off the newest segment.
#[derive(Debug, Clone, PartialEq)]
pub struct TruncatedTail {
    pub segment: PathBuf,
    /// Where the segment now ends: right after its last good record.
    pub offset: u64,
    pub dropped_bytes: u64,
    /// Complete frames (good checksum or not) found in the dropped bytes by
    /// following their length fields; a torn write drops 0 complete frames.
    pub dropped_records: u64,
    /// What was wrong with the first record that was not kept.
    pub problem: RecordProblem,
    /// Where a copy of the dropped bytes was kept.
    pub kept_at: PathBuf,
}

/// A segment that readers cannot use.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentProblem {
    pub segment: PathBuf,
    pub problem: String,
}

/// The state the writer thread starts from.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The newest segment, open for writing and positioned at its end.
    pub file: File,
    pub segment: SegmentFile,
    /// Its length in bytes (header included).
    pub len: u64,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    pub report: RecoveryReport,
}

/// Scans and repairs the log folder `dir` (which must exist).
pub(crate) fn recover(dir: &Path) -> Result<Recovered, LogError> {
    remove_stale_temp_files(dir)?;
    let segments = list_segments(dir).map_err(LogError::io("listing", dir))?;
    let mut report = RecoveryReport { segments: segments.len(), ..RecoveryReport::default() };
    let Some((last, sealed)) = segments.split_last() else {
        let (file, segment) = create_segment(dir, 1)?;
        report.segments = 1;
        return Ok(Recovered { file, segment, len: HEADER_LEN, next_seq: 1, report });
    };

    for segment in sealed {
        let mut file = File::open(&segment.path).map_err(LogError::io("opening", &segment.path))?;
        if let Err(problem) = read_header(&mut file, segment).map_err(LogError::io("reading", &segment.path))? {
            tracing::warn!(segment = %segment.path.display(), %problem, "feedback log: older segment has a bad header; readers will skip it");
            report.bad_segments.push(SegmentProblem { segment: segment.path.clone(), problem });
        }
    }

    let path = &last.path;
    let mut file =
        OpenOptions::new().read(true).write(true).open(path).map_err(LogError::io("opening", path.as_path()))?;
    let file_len = file.metadata().map_err(LogError::io("reading", path.as_path()))?.len();
    match read_header(&mut file, last).map_err(LogError::io("reading", path.as_path()))? {
        Ok(()) => {}
        Err(problem) if file_len < HEADER_LEN => {
            tracing::warn!(segment = %path.display(), %problem, "feedback log: newest segment has no complete header (crash while creating it); writing it again");
            rewrite_header(&mut file, last).map_err(LogError::io("repairing", path.as_path()))?;
            report.header_rewritten = true;
        }
        Err(problem) => return Err(LogError::BadLastSegment { path: path.clone(), problem }),
    }

    let read_clone = file.try_clone().map_err(LogError::io("opening", path.as_path()))?;
    let mut reader = RecordReader::new(read_clone, HEADER_LEN).map_err(LogError::io("reading", path.as_path()))?;
    let mut next_seq = last.first_seq;
    let (good_end, problem) = loop {
        let start = reader.offset();
        match reader.next(Some(next_seq)).map_err(LogError::io("reading", path.as_path()))? {
            Next::Record { seq } => match decode_event(reader.payload()) {
                Ok(_) => next_seq = seq + 1,
                Err(why) => break (start, Some(RecordProblem::Undecodable(why))),
            },
            Next::End => break (start, None),
            Next::Bad(problem) => break (start, Some(problem)),
        }
    };
    drop(reader);

    if let Some(problem) = problem {
        let tail =
            drop_tail(dir, &mut file, last, good_end, problem).map_err(LogError::io("truncating", path.as_path()))?;
        tracing::warn!(
            segment = %path.display(),
            offset = tail.offset,
            dropped_bytes = tail.dropped_bytes,
            dropped_records = tail.dropped_records,
            problem = %tail.problem,
            kept_at = %tail.kept_at.display(),
            "feedback log: cut a torn or corrupt tail off the newest segment; every record before it is kept"
        );
        report.truncated = Some(tail);
    }
    let len = file.seek(SeekFrom::Start(good_end.max(HEADER_LEN))).map_err(LogError::io("seeking", path.as_path()))?;
    report.last_seq = next_seq - 1;
    Ok(Recovered { file, segment: last.clone(), len, next_seq, report })
}

/// Creates the segment starting at `first_seq` so that it appears whole or
/// not at all: header written and fsynced under a temporary name, renamed,
/// folder fsynced. Returns it open for writing, positioned after the header.
pub(crate) fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, SegmentFile), LogError> {
    let name = segment_file_name(first_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
        file.write_all(&encode_header(first_seq))?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        Ok(file)
    })();
    match result {
        Ok(file) => Ok((file, SegmentFile { first_seq, path })),
        Err(source) => {
            let _ = fs::remove_file(&tmp);
            Err(LogError::Io { what: "creating segment", path, source })
        }
    }
}

/// Makes a file creation, rename or removal in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `.seg-*.wal.tmp` files left by a crash during segment creation
/// (they never held a record).
fn remove_stale_temp_files(dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(LogError::io("listing", dir))? {
        let entry = entry.map_err(LogError::io("listing", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".seg-") && name.ends_with(".wal.tmp") {
            tracing::info!(file = %entry.path().display(), "feedback log: removing an unfinished segment file");
            fs::remove_file(entry.path()).map_err(LogError::io("removing", entry.path()))?;
        }
    }
    Ok(())
}

fn rewrite_header(file: &mut File, segment: &SegmentFile) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&encode_header(segment.first_seq))?;
    file.sync_all()
}

/// Copies the bytes from `good_end` on aside, then truncates the segment
/// there and makes both durable.
fn drop_tail(
    dir: &Path,
    file: &mut File,
    segment: &SegmentFile,
    good_end: u64,
    problem: RecordProblem,
) -> io::Result<TruncatedTail> {
    let file_len = file.metadata()?.len();
    let dropped_records = count_frames(file, good_end, file_len)?;

    let name = segment.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let kept_at = dir.join(format!("{name}.dropped-{good_end}"));
    keep_aside(file, good_end, file_len - good_end, &kept_at)?;

    file.set_len(good_end)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(TruncatedTail {
        segment: segment.path.clone(),
        offset: good_end,
        dropped_bytes: file_len - good_end,
        dropped_records,
        problem,
        kept_at,
    })
}

/// Counts the complete frames from `from` to `file_len` by following their
/// length fields (without checking checksums), stopping at the first one
/// that is implausible or does not fit.
fn count_frames(file: &File, from: u64, file_len: u64) -> io::Result<u64> {
    let mut clone = file.try_clone()?;
    clone.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, clone);
    let (mut pos, mut count) = (from, 0);
    loop {
        let mut frame = [0u8; FRAME_LEN];
        if read_full(&mut r, &mut frame)? < FRAME_LEN {
            return Ok(count);
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let end = pos + FRAME_LEN as u64 + u64::from(len);
        if len == 0 || len > MAX_RECORD_BYTES || end > file_len {
            return Ok(count);
        }
        r.seek_relative(i64::from(len))?;
        pos = end;
        count += 1;
    }
}
