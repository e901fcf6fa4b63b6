//! The on-disk format of one segment file, shared by the writer, the
//! recovery scan and the readers. Nothing here knows about threads or
//! acknowledgements; it only frames bytes and checks them.
//!
//! ```text
//! file name:  seg-<first_seq, 20 decimal digits>.wal       e.g. seg-00000000000000000001.wal
//!
//! header (24 bytes, little-endian):
//!   0        8            12           16                     24
//!   | magic  | version u32 | reserved 0 | first_seq u64        |
//!   "WNXFBLOG"    = 1
//!
//! record (16-byte frame + payload), repeated until the end of the file:
//!   0           4           8                16             16+len
//!   | len u32   | crc u32   | seq u64        | payload ...   |
//!   len = payload bytes (1..=MAX_RECORD_BYTES)
//!   crc = CRC32C over (seq as 8 little-endian bytes ++ payload)
//!   payload = prost-encoded watchnext.v1.FeedbackEvent
//! ```
//!
//! Sequence numbers are global and dense: the first record of a segment
//! carries the `first_seq` of its header and name, every next record the
//! previous one plus one, and the next segment starts where this one ends.
//! The checksum covers the sequence number so that a record copied to the
//! wrong place (or a stale block) is caught as well as a flipped bit.

use std::{
    fs::{self, File},
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use prost::Message as _;
use watchnext_core::event::Event;
use watchnext_proto::v1 as pb;

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"WNXFBLOG";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub const HEADER_LEN: u64 = 24;
/// Size of a record's frame (length, checksum, sequence number).
pub const FRAME_LEN: usize = 16;
/// The largest payload one record may carry. Anything larger in a file is a
/// damaged length field, not an event (a real event is a few hundred bytes,
/// a few KiB with its features).
pub const MAX_RECORD_BYTES: u32 = 16 << 20;

/// Buffer size of every segment reader: large enough for sequential reads
/// at disk speed, small enough that a reader never holds much memory.
pub(crate) const READ_BUFFER_BYTES: usize = 256 << 10;

/// The file name of the segment whose first record has `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.wal")
}

/// The first sequence number encoded in a segment file name, or `None` for
/// any other file (temporary files, kept dropped tails, the lock file).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment file of a log folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    /// From the file name; the header must agree.
    pub first_seq: u64,
    pub path: PathBuf,
}

/// The segments of `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_segment_file_name) {
            segments.push(SegmentFile { first_seq, path: entry.path() });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// The header of a segment starting at `first_seq`.
pub(crate) fn encode_header(first_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Checks a header read from a file named for `expected_first_seq`; the
/// error says what is wrong, in words.
pub(crate) fn check_header(bytes: &[u8], expected_first_seq: u64) -> Result<(), String> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(format!("the file is {} bytes long, shorter than the {HEADER_LEN}-byte header", bytes.len()));
    }
    if bytes[0..8] != MAGIC {
        return Err("it does not start with the feedback-log magic bytes \"WNXFBLOG\"".into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}; this build reads version {FORMAT_VERSION}"));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[16..24]);
    let first_seq = u64::from_le_bytes(seq);
    if first_seq != expected_first_seq {
        return Err(format!("the header says first sequence number {first_seq}, the file name {expected_first_seq}"));
    }
    Ok(())
}

/// Reads and checks the header of `segment`; the outer error is an I/O
/// failure, the inner one a bad header.
pub(crate) fn read_header(file: &mut File, segment: &SegmentFile) -> io::Result<Result<(), String>> {
    let mut header = [0u8; HEADER_LEN as usize];
    file.seek(SeekFrom::Start(0))?;
    let n = read_full(file, &mut header)?;
    Ok(check_header(&header[..n], segment.first_seq))
}

/// Appends one framed record to `out`.
pub(crate) fn frame_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let seq_bytes = seq.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), payload);
    // Payload lengths are checked against MAX_RECORD_BYTES before they get here.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// Encodes an event the way the log stores it.
pub(crate) fn encode_event(event: &Event, out: &mut Vec<u8>) {
    // Encoding into a Vec cannot run out of room, so the Result is always Ok.
    let pb = event.to_proto();
    out.reserve(pb.encoded_len());
    let _ = pb.encode(out);
}

/// Decodes a stored payload back into an event, or says why it cannot.
pub(crate) fn decode_event(payload: &[u8]) -> Result<Event, String> {
    let pb = pb::FeedbackEvent::decode(payload).map_err(|e| format!("the payload is not a FeedbackEvent ({e})"))?;
    Event::from_proto(&pb, 0).map_err(|e| format!("the payload is not a valid event ({e})"))
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordProblem {
    /// The file ends inside the record (a torn write, or a write still in
    /// progress when the file was read).
    Short { have: u64, need: u64 },
    /// The length field is 0 or larger than [`MAX_RECORD_BYTES`].
    BadLength(u32),
    /// The checksum does not match the sequence number and payload.
    BadChecksum { stored: u32, computed: u32 },
    /// A well-formed record with the wrong sequence number.
    BadSequence { expected: u64, found: u64 },
    /// The checksum matches but the payload is not a valid event.
    Undecodable(String),
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordProblem::Short { have, need } => {
                write!(f, "the file ends inside a record ({have} of {need} bytes present)")
            }
            RecordProblem::BadLength(len) => {
                write!(f, "record length {len} is outside 1..={MAX_RECORD_BYTES}")
            }
            RecordProblem::BadChecksum { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            RecordProblem::BadSequence { expected, found } => {
                write!(f, "sequence number {found} where {expected} was expected")
            }
            RecordProblem::Undecodable(why) => f.write_str(why),
        }
    }
}

/// What the next read of a segment found.
#[derive(Debug)]
pub(crate) enum Next {
    /// A whole record with a good checksum; its payload is in
    /// [`RecordReader::payload`].
    Record { seq: u64 },
    /// The file ends exactly at a record boundary.
    End,
    /// Something that is not a good record starts at [`RecordReader::offset`].
    Bad(RecordProblem),
}

/// Reads the records of one segment sequentially through a fixed-size
/// buffer. After a `Record` the offset moves past it; after `End` or `Bad`
/// it stays at the start of the unreadable record so that a caller can
/// truncate there, or [`rewind`](Self::rewind) and try again later.
#[derive(Debug)]
pub(crate) struct RecordReader {
    inner: BufReader<File>,
    /// Byte offset of the next record in the file.
    offset: u64,
    /// The last payload read, reused between records.
    payload: Vec<u8>,
}

impl RecordReader {
    /// A reader positioned at `offset` (usually [`HEADER_LEN`]).
    pub fn new(mut file: File, offset: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self { inner: BufReader::with_capacity(READ_BUFFER_BYTES, file), offset, payload: Vec::new() })
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Goes back to the start of the record that could not be read (drops
    /// the buffer, so bytes written since are seen).
    pub fn rewind(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.offset)).map(|_| ())
    }

    /// Reads the next record. `expected_seq`, when given, must match.
    pub fn next(&mut self, expected_seq: Option<u64>) -> io::Result<Next> {
        let mut frame = [0u8; FRAME_LEN];
        let n = read_full(&mut self.inner, &mut frame)?;
        if n == 0 {
            return Ok(Next::End);
        }
        if n < FRAME_LEN {
            return Ok(Next::Bad(RecordProblem::Short { have: n as u64, need: FRAME_LEN as u64 }));
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&frame[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        if len == 0 || len > MAX_RECORD_BYTES {
            return Ok(Next::Bad(RecordProblem::BadLength(len)));
        }
        self.payload.resize(len as usize, 0);
        let got = read_full(&mut self.inner, &mut self.payload)?;
        if got < len as usize {
            let need = FRAME_LEN as u64 + u64::from(len);
            return Ok(Next::Bad(RecordProblem::Short { have: (FRAME_LEN + got) as u64, need }));
        }
        let computed = crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), &self.payload);
        if computed != stored {
            return Ok(Next::Bad(RecordProblem::BadChecksum { stored, computed }));
        }
        if let Some(expected) = expected_seq
            && seq != expected
        {
            return Ok(Next::Bad(RecordProblem::BadSequence { expected, found: seq }));
        }
        self.offset += FRAME_LEN as u64 + u64::from(len);
        Ok(Next::Record { seq })
    }
}

/// Finds where reading can resume after damage at `from` in the sealed
/// segment `path`: the first offset after it holding a whole record whose
/// checksum matches and whose sequence number is in `seqs` (the record
/// expected at `from` or a later one, before the next segment's first). The
/// checksum covers the sequence number, so a random match is a 1-in-2³²
/// event on top of the sequence range. Scans in 1 MiB windows; returns
/// `(offset, seq)`, or `None` when no good record follows.
pub(crate) fn resync(path: &Path, from: u64, seqs: std::ops::Range<u64>) -> io::Result<Option<(u64, u64)>> {
    const WINDOW: usize = 1 << 20;
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut probe = file.try_clone()?;
    let mut window = vec![0u8; WINDOW + FRAME_LEN];
    let mut payload = Vec::new();
    let mut base = from + 1;
    while base + FRAME_LEN as u64 <= file_len {
        file.seek(SeekFrom::Start(base))?;
        let n = read_full(&mut file, &mut window)?;
        if n < FRAME_LEN {
            break;
        }
        for i in 0..=(n - FRAME_LEN).min(WINDOW - 1) {
            let frame = &window[i..i + FRAME_LEN];
            let mut seq_bytes = [0u8; 8];
            seq_bytes.copy_from_slice(&frame[8..16]);
            let seq = u64::from_le_bytes(seq_bytes);
            if !seqs.contains(&seq) {
                continue;
            }
            let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let offset = base + i as u64;
            if len == 0 || len > MAX_RECORD_BYTES || offset + FRAME_LEN as u64 + u64::from(len) > file_len {
                continue;
            }
            let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
            payload.resize(len as usize, 0);
            probe.seek(SeekFrom::Start(offset + FRAME_LEN as u64))?;
            if read_full(&mut probe, &mut payload)? < payload.len() {
                continue;
            }
            if crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), &payload) == stored {
                return Ok(Some((offset, seq)));
            }
        }
        base += WINDOW as u64;
    }
    Ok(None)
}

/// Copies `len` bytes of `file` from `start` into a new file `to` (written
/// under a temporary name, fsynced, then renamed): how damaged bytes that
/// recovery cuts or a reader skips are kept for inspection.
pub(crate) fn keep_aside(file: &mut File, start: u64, len: u64, to: &Path) -> io::Result<()> {
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        file.seek(SeekFrom::Start(start))?;
        let mut out = File::create(&tmp)?;
        io::copy(&mut Read::by_ref(file).take(len), &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_files_are_ignored() {
        assert_eq!(segment_file_name(42), "seg-00000000000000000042.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        for other in
            ["LOCK", "seg-1.wal", "seg-00000000000000000001.wal.dropped-24", ".seg-00000000000000000001.wal.tmp"]
        {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn headers_are_checked_field_by_field() {
        let h = encode_header(7);
        assert_eq!(check_header(&h, 7), Ok(()));
        assert!(check_header(&h, 8).unwrap_err().contains("file name 8"));
        assert!(check_header(&h[..10], 7).unwrap_err().contains("shorter"));
        let mut bad = h;
        bad[0] = b'X';
        assert!(check_header(&bad, 7).unwrap_err().contains("magic"));
        let mut bad = h;
        bad[8] = 2;
        assert!(check_header(&bad, 7).unwrap_err().contains("version 2"));
    }

    #[test]
    fn records_are_framed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = Vec::new();
        frame_record(&mut bytes, 5, b"hello");
        frame_record(&mut bytes, 6, b"world!");
        assert_eq!(bytes.len(), 2 * FRAME_LEN + 11);
        fs::write(&path, &bytes).unwrap();

        let mut r = RecordReader::new(File::open(&path).unwrap(), 0).unwrap();
        assert!(matches!(r.next(Some(5)).unwrap(), Next::Record { seq: 5 }));
        assert_eq!(r.payload(), b"hello");
        assert!(matches!(r.next(Some(7)).unwrap(), Next::Bad(RecordProblem::BadSequence { expected: 7, found: 6 })));
        r.rewind().unwrap();
        assert!(matches!(r.next(Some(6)).unwrap(), Next::Record { seq: 6 }));
        assert!(matches!(r.next(None).unwrap(), Next::End));
        assert_eq!(r.offset(), bytes.len() as u64);

        // A flipped payload bit, then a torn frame.
        let mut flipped = bytes.clone();
        flipped[FRAME_LEN + 1] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let mut r = RecordReader::new(File::open(&path).unwrap(), 0).unwrap();
        assert!(matches!(r.next(None).unwrap(), Next::Bad(RecordProblem::BadChecksum { .. })));
        assert_eq!(r.offset(), 0);
        fs::write(&path, &bytes[..FRAME_LEN + 2]).unwrap();
        let mut r = RecordReader::new(File::open(&path).unwrap(), 0).unwrap();
        assert!(matches!(r.next(None).unwrap(), Next::Bad(RecordProblem::Short { have: 18, need: 21 })));
    }
}
