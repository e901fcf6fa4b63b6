//! Streaming reads of the log: `(seq, Event)` in sequence (= append = time)
//! order, segment after segment, through a fixed-size buffer.
//!
//! A reader made by [`FeedbackLog::reader`](super::FeedbackLog::reader)
//! stops at the writer's durable watermark (the last fsynced sequence
//! number), so it only ever returns acknowledged events. When it has caught
//! up, `next()` returns `None`; calling it again later returns what was
//! appended since (the iterator is deliberately not fused), which is how an
//! online consumer follows the log. A reader made by [`LogReader::open`]
//! reads a folder on its own and stops at the first incomplete record.
//!
//! Damage never stops a reader, and never hides what follows it: at a bad
//! record in a segment that is no longer being written (a later segment
//! exists) the reader resynchronises — it looks for the next whole record
//! with a matching checksum and a plausible sequence number (every record
//! carries its length, checksum and sequence number) and goes on from
//! there. What it had to skip is a [`ReadProblem`] naming the lost
//! sequence numbers, logged at error level and counted in
//! `watchnext_feedback_reader_lost_records_total` (each reader counts what
//! it skipped; any increase means damage). A reader of an open log (the
//! process that owns the folder) also keeps a copy of the skipped bytes as
//! `<segment>.damaged-<offset>` next to the segment, for inspection. Only
//! an I/O error ends the iteration (as an `Err` item).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use watchnext_core::event::Event;

use super::writer::Shared;
use crate::{
    error::LogError,
    segment::{
        HEADER_LEN, Next, RecordProblem, RecordReader, SegmentFile, decode_event, keep_aside, list_segments,
        read_header,
    },
};

/// Something a reader skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadProblem {
    pub segment: PathBuf,
    /// Byte offset in the segment where the skipped part starts.
    pub offset: u64,
    pub problem: String,
    /// Acknowledged records this reader could not return because of it.
    pub lost_records: u64,
}

/// The segment being read.
#[derive(Debug)]
struct Current {
    segment: SegmentFile,
    reader: RecordReader,
    /// A later segment exists, so this one will not grow any more.
    sealed: bool,
    /// The first sequence number of the next segment, once sealed.
    next_first: Option<u64>,
    /// Offset of a damaged durable record already reported (reported once,
    /// however often the caller polls).
    reported_at: Option<u64>,
}

/// An iterator over `(seq, Event)`; see the module documentation.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    /// Records before this sequence number are skipped (checked, not decoded).
    from_seq: u64,
    /// The writer's state when reading through an open log: its durable
    /// watermark bounds what is read. `None` for a folder read on its own.
    shared: Option<Arc<Shared>>,
    current: Option<Current>,
    /// `first_seq` of the last segment opened (or skipped); the next one is
    /// the first segment after it.
    last_opened: Option<u64>,
    /// The sequence number the next record should carry.
    expected: u64,
    problems: Vec<ReadProblem>,
    /// An I/O error ended the iteration.
    failed: bool,
}

impl LogReader {
    /// Reads the log folder `dir` from sequence number `from_seq` on (1 = all),
    /// without an open [`FeedbackLog`](super::FeedbackLog). If a writer is
    /// appending meanwhile, records it has written but not yet fsynced may be
    /// returned.
    pub fn open(dir: impl AsRef<Path>, from_seq: u64) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        // Fail early, naming the folder, if it cannot be read at all.
        list_segments(&dir).map_err(LogError::io("listing", dir.as_path()))?;
        Ok(Self::new(dir, from_seq, None))
    }

    pub(crate) fn new(dir: PathBuf, from_seq: u64, shared: Option<Arc<Shared>>) -> Self {
        Self {
            dir,
            from_seq: from_seq.max(1),
            shared,
            current: None,
            last_opened: None,
            expected: 0,
            problems: Vec::new(),
            failed: false,
        }
    }

    /// Everything skipped so far (damaged records, bad headers, missing ranges).
    pub fn problems(&self) -> &[ReadProblem] {
        &self.problems
    }

    /// Acknowledged records skipped so far because of damage.
    pub fn lost_records(&self) -> u64 {
        self.problems.iter().map(|p| p.lost_records).sum()
    }

    /// The sequence number the next record will carry (after the last one
    /// read); 0 before the first segment is opened.
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    fn report(&mut self, segment: &Path, offset: u64, problem: String, lost_records: u64) {
        if lost_records > 0 {
            tracing::error!(segment = %segment.display(), offset, lost_records, %problem, "feedback log reader: damaged data skipped; acknowledged records lost");
            metrics::counter!("watchnext_feedback_reader_lost_records_total").increment(lost_records);
        } else {
            tracing::warn!(segment = %segment.display(), offset, %problem, "feedback log reader: skipping damaged data");
        }
        self.problems.push(ReadProblem { segment: segment.to_path_buf(), offset, problem, lost_records });
    }

    /// Keeps a copy of the damaged bytes `start..end` of `segment` beside it
    /// (once; only when reading an open log, whose process owns the folder).
    fn quarantine(&self, segment: &Path, start: u64, end: u64) {
        if self.shared.is_none() || end <= start {
            return;
        }
        let name = segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let kept = segment.with_file_name(format!("{name}.damaged-{start}"));
        if kept.exists() {
            return;
        }
        let copy = File::open(segment).and_then(|mut file| keep_aside(&mut file, start, end - start, &kept));
        match copy {
            Ok(()) => {
                tracing::warn!(kept = %kept.display(), bytes = end - start, "feedback log: damaged bytes kept aside")
            }
            Err(err) => {
                tracing::warn!(segment = %segment.display(), %err, "feedback log: could not keep the damaged bytes aside")
            }
        }
    }

    fn durable_limit(&self) -> Option<u64> {
        self.shared.as_ref().map(|s| s.durable_last_seq())
    }

    /// Opens the segment after the last one opened (or the one holding
    /// `from_seq` at the start). `false` when there is none yet.
    fn open_next_segment(&mut self) -> Result<bool, LogError> {
        loop {
            let segments = list_segments(&self.dir).map_err(LogError::io("listing", self.dir.as_path()))?;
            let candidate = match self.last_opened {
                None => segments.iter().rev().find(|s| s.first_seq <= self.from_seq).or(segments.first()),
                Some(last) => segments.iter().find(|s| s.first_seq > last),
            };
            let Some(segment) = candidate.cloned() else { return Ok(false) };
            let is_newest = segments.last() == Some(&segment);
            let path = segment.path.clone();
            let mut file = File::open(&path).map_err(LogError::io("opening", path.as_path()))?;
            if let Err(problem) = read_header(&mut file, &segment).map_err(LogError::io("reading", path.as_path()))? {
                let len = file.metadata().map_err(LogError::io("reading", path.as_path()))?.len();
                if is_newest && len < HEADER_LEN {
                    return Ok(false); // still being created by a writer in another process
                }
                let next_first = segments.iter().find(|s| s.first_seq > segment.first_seq).map(|s| s.first_seq);
                let first = segment.first_seq.max(self.from_seq);
                let lost = next_first.map_or(0, |n| n.saturating_sub(first));
                let what =
                    if lost > 0 { format!("; records {first}..={} lost", first + lost - 1) } else { String::new() };
                self.report(&path, 0, format!("bad segment header, segment skipped: {problem}{what}"), lost);
                self.last_opened = Some(segment.first_seq);
                if let Some(next) = next_first.filter(|_| self.expected > 0) {
                    // Counted here, not again as missing when the next segment opens.
                    self.expected = next;
                }
                continue;
            }
            if self.expected > 0 && segment.first_seq > self.expected {
                let missing = format!("records {}..={} are missing", self.expected, segment.first_seq - 1);
                self.report(&path, 0, missing, segment.first_seq - self.expected);
            }
            let reader = RecordReader::new(file, HEADER_LEN).map_err(LogError::io("reading", path.as_path()))?;
            self.expected = segment.first_seq;
            self.last_opened = Some(segment.first_seq);
            self.current = Some(Current { segment, reader, sealed: false, next_first: None, reported_at: None });
            return Ok(true);
        }
    }

    fn step(&mut self) -> Result<Option<(u64, Event)>, LogError> {
        loop {
            if self.current.is_none() && !self.open_next_segment()? {
                return Ok(None);
            }
            let limit = self.durable_limit();
            if limit.is_some_and(|durable| self.expected > durable) {
                return Ok(None);
            }
            let expected = self.expected;
            let Some(cur) = self.current.as_mut() else { return Ok(None) };
            let path = cur.segment.path.clone();
            let start = cur.reader.offset();
            let outcome = cur.reader.next(Some(expected)).map_err(LogError::io("reading", path.as_path()))?;
            let problem = match outcome {
                Next::Record { seq } => {
                    self.expected = seq + 1;
                    if seq < self.from_seq {
                        continue;
                    }
                    match decode_event(cur.reader.payload()) {
                        Ok(event) => return Ok(Some((seq, event))),
                        Err(why) => {
                            self.report(&path, start, format!("record {seq} skipped: {why}"), 1);
                            continue;
                        }
                    }
                }
                Next::End => None,
                Next::Bad(problem) => Some(problem),
            };

            if !cur.sealed {
                let first_seq = cur.segment.first_seq;
                let segments = list_segments(&self.dir).map_err(LogError::io("listing", self.dir.as_path()))?;
                let Some(cur) = self.current.as_mut() else { return Ok(None) };
                cur.reader.rewind().map_err(LogError::io("reading", path.as_path()))?;
                if let Some(next) = segments.iter().find(|s| s.first_seq > first_seq) {
                    // The writer has moved on: everything it wrote here is visible
                    // now, so read once more from where we stopped.
                    cur.sealed = true;
                    cur.next_first = Some(next.first_seq);
                    continue;
                }
                // Still the newest segment: caught up, or a write in progress. A bad
                // record the writer has already made durable is real damage, though.
                let durable_damage = limit.is_some_and(|durable| expected <= durable);
                if let Some(problem) = problem
                    && durable_damage
                    && cur.reported_at != Some(start)
                {
                    cur.reported_at = Some(start);
                    self.report(&path, start, format!("durable record {expected} is damaged: {problem}"), 0);
                }
                return Ok(None);
            }

            // Damage in a finished segment: resume at the next good record
            // of this segment, or go on with the next segment.
            let next_first = cur.next_first;
            if let Some(problem) = problem {
                let found = match problem {
                    RecordProblem::Short { .. } => None,
                    _ => crate::segment::resync(&path, start, expected..next_first.unwrap_or(u64::MAX))
                        .map_err(LogError::io("reading", path.as_path()))?,
                };
                if let Some((offset, seq)) = found {
                    let file = File::open(&path).map_err(LogError::io("opening", path.as_path()))?;
                    let reader = RecordReader::new(file, offset).map_err(LogError::io("reading", path.as_path()))?;
                    if let Some(cur) = self.current.as_mut() {
                        cur.reader = reader;
                    }
                    let first = expected.max(self.from_seq);
                    let lost = seq.saturating_sub(first);
                    let what =
                        if lost > 0 { format!("records {first}..={} lost", seq - 1) } else { "no record lost".into() };
                    let message = format!(
                        "{problem}; {what}, {} damaged bytes skipped, reading resumes at record {seq}",
                        offset - start
                    );
                    self.quarantine(&path, start, offset);
                    self.report(&path, start, message, lost);
                    self.expected = seq;
                    continue;
                }
                let first = expected.max(self.from_seq);
                let lost = next_first.map_or(0, |n| n.saturating_sub(first));
                let rest = match (&problem, lost) {
                    (RecordProblem::Short { .. }, 0) => "the segment ends inside a record".to_owned(),
                    (_, 0) => format!("rest of the segment skipped: {problem}"),
                    _ => format!("rest of the segment skipped: {problem}; records {first}..={} lost", first + lost - 1),
                };
                let end = std::fs::metadata(&path).map_or(start, |m| m.len());
                self.quarantine(&path, start, end);
                self.report(&path, start, rest, lost);
                if let Some(next) = next_first {
                    // Counted here, not again as missing when the next segment opens.
                    self.expected = next;
                }
            }
            self.current = None;
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<(u64, Event), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(item) => item.map(Ok),
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}
