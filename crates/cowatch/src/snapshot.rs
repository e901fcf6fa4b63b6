//! Snapshots: the tables and the user windows in a small checksummed binary
//! file, written crash-safely, with the feedback-log sequence number they
//! cover. The byte layout is in the crate documentation ("Snapshots").
//!
//! Loading builds a fresh generator and hands it over only when every byte
//! has been read, every value checked and the checksum matches: a damaged
//! file is an error naming the file and the problem, never a panic and never
//! a silently empty or partial table.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Read, Write},
    path::{Path, PathBuf},
    sync::{PoisonError, atomic::Ordering::Relaxed},
};

use watchnext_core::ids::{UserId, VideoId};

use crate::{
    config::{CowatchConfig, MAX_NEIGHBOURS_LIMIT, MAX_WINDOW_LIMIT},
    error::CowatchError,
    generator::{CowatchGenerator, DecayClock, name_heap_bytes},
    table::{Neighbour, VideoRow, list_capacity},
    window::{UserWindow, WindowEntry},
};

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"WNCOWTCH";
/// The format version this build writes; it reads this one and version 1.
///
/// Version 2 added the decay clock to the header; the rows' times are in
/// decay time. A version-1 file (rows in event time) loads as it is, with
/// the decay clock set to the event clock: event time is a valid decay
/// time (the one a service whose watches never came sparser than one per
/// `half_life_hours / half_life_min_watches` would have).
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the header, its checksum included.
pub const HEADER_BYTES: usize = 52;
/// Bytes of a version-1 header.
const HEADER_BYTES_V1: usize = 44;
/// Record tags.
const RECORD: u8 = 1;
const END: u8 = 0;

/// What a snapshot holds, as written or loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The feedback-log sequence number the tables cover: replay from the
    /// event after it.
    pub covered_seq: u64,
    /// The generator's clock when written (latest event time, Unix ms).
    pub clock_ms: i64,
    pub videos: u64,
    pub users: u64,
    /// File size.
    pub bytes: u64,
}

/// A writer that keeps the CRC32C of everything written through it.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
    written: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CowatchGenerator {
    /// Writes the tables and user windows to `path` crash-safely (temporary
    /// file in the same folder, fsync, rename, fsync of the folder), recording
    /// `covered_seq`: the sequence number of the last feedback-log event
    /// passed to `observe` before this call. Ingestion waits while the file is
    /// written, so the snapshot is exactly the state after that event;
    /// `generate` does not wait.
    pub fn snapshot(&self, path: &Path, covered_seq: u64) -> Result<SnapshotInfo, CowatchError> {
        let _gate = self.ingest_gate.write().unwrap_or_else(PoisonError::into_inner);
        let io_err = |source| CowatchError::Io { path: path.to_owned(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "the snapshot path has no file name")))?;
        fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), watchnext_core::fsutil::writer_tag()));
        let result = (|| {
            let file = File::create(&tmp)?;
            let mut out = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: 0, written: 0 };
            let (videos, users, clock_ms) = self.write_body(&mut out, covered_seq)?;
            let crc = out.crc;
            out.inner.write_all(&crc.to_le_bytes())?;
            let bytes = out.written + 4;
            let file = out.inner.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()?;
            Ok(SnapshotInfo { covered_seq, clock_ms, videos, users, bytes })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err)
    }

    fn write_body<W: Write>(&self, out: &mut W, covered_seq: u64) -> io::Result<(u64, u64, i64)> {
        let clock_ms = self.clock_ms.load(Relaxed);
        let decay_ms = self.decay_now();
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&covered_seq.to_le_bytes());
        header.extend_from_slice(&clock_ms.to_le_bytes());
        header.extend_from_slice(&self.next_id.load(Relaxed).to_le_bytes());
        header.extend_from_slice(&decay_ms.to_le_bytes());
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        out.write_all(&header)?;

        let too_long = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} too long"));
        let mut videos = 0u64;
        let mut buf = Vec::with_capacity(4096);
        for row in self.rows.iter() {
            buf.clear();
            buf.push(RECORD);
            buf.extend_from_slice(&row.key().to_le_bytes());
            let name = row.name.as_bytes();
            buf.extend_from_slice(&u16::try_from(name.len()).map_err(|_| too_long("video id"))?.to_le_bytes());
            buf.extend_from_slice(name);
            buf.extend_from_slice(&row.base_ms.to_le_bytes());
            buf.extend_from_slice(&row.touched_ms.to_le_bytes());
            buf.extend_from_slice(&row.total.to_le_bytes());
            let n = u16::try_from(row.neighbours.len()).map_err(|_| too_long("neighbour list"))?;
            buf.extend_from_slice(&n.to_le_bytes());
            for nb in &row.neighbours {
                buf.extend_from_slice(&nb.id.to_le_bytes());
                buf.extend_from_slice(&nb.count.to_le_bytes());
                buf.extend_from_slice(&nb.err.to_le_bytes());
            }
            out.write_all(&buf)?;
            videos += 1;
        }
        out.write_all(&[END])?;
        out.write_all(&videos.to_le_bytes())?;

        let mut users = 0u64;
        for window in self.windows.iter() {
            buf.clear();
            buf.push(RECORD);
            let user = window.key().as_bytes();
            buf.extend_from_slice(&u16::try_from(user.len()).map_err(|_| too_long("user id"))?.to_le_bytes());
            buf.extend_from_slice(user);
            buf.extend_from_slice(&window.last_ms.to_le_bytes());
            let n = u16::try_from(window.entries.len()).map_err(|_| too_long("window"))?;
            buf.extend_from_slice(&n.to_le_bytes());
            for e in &window.entries {
                buf.extend_from_slice(&e.id.to_le_bytes());
                buf.extend_from_slice(&e.t_ms.to_le_bytes());
                buf.extend_from_slice(&e.weight.to_le_bytes());
            }
            out.write_all(&buf)?;
            users += 1;
        }
        out.write_all(&[END])?;
        out.write_all(&users.to_le_bytes())?;
        Ok((videos, users, clock_ms))
    }

    /// Builds a generator from the snapshot at `path` with `config` (which
    /// may differ from the writer's: longer lists are cut to the strongest
    /// K neighbours, longer windows to the last W watches). Returns it with
    /// what the file holds; the caller replays the feedback log from
    /// `covered_seq + 1`. A missing, truncated, damaged or foreign file is an
    /// error and nothing is loaded.
    pub fn load(path: &Path, config: CowatchConfig) -> Result<(Self, SnapshotInfo), CowatchError> {
        let generator = Self::new(config)?;
        let file = File::open(path).map_err(|source| CowatchError::Io { path: path.to_owned(), source })?;
        let len = file.metadata().map_err(|source| CowatchError::Io { path: path.to_owned(), source })?.len();
        let mut loader = Loader {
            path: path.to_owned(),
            file,
            buf: vec![0; usize::try_from(len).unwrap_or(CHUNK).min(CHUNK)],
            pos: 0,
            end: 0,
            remaining: len.saturating_sub(4),
            crc: 0,
        };
        let info = loader.load_into(&generator, len)?;
        Ok((generator, info))
    }
}

/// Bytes read from the file at a time (the checksum is computed per chunk).
const CHUNK: usize = 1 << 20;

/// Reads a snapshot, checking as it goes.
struct Loader<R> {
    path: PathBuf,
    file: R,
    /// The current chunk: `buf[pos..end]` is not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Bytes before the trailing checksum not yet read into `buf`.
    remaining: u64,
    /// CRC32C of every byte read into `buf` so far.
    crc: u32,
}

impl<R: Read> Loader<R> {
    fn corrupt(&self, problem: impl Into<String>) -> CowatchError {
        CowatchError::Corrupt { path: self.path.clone(), problem: problem.into() }
    }

    fn io(&self, source: io::Error) -> CowatchError {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            self.corrupt("truncated: the file ends early")
        } else {
            CowatchError::Io { path: self.path.clone(), source }
        }
    }

    /// Reads the next chunk of the body (never the trailing checksum).
    fn refill(&mut self) -> Result<(), CowatchError> {
        let want = usize::try_from(self.remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        if want == 0 {
            return Err(self.corrupt("truncated: the file ends early"));
        }
        if let Err(e) = self.file.read_exact(&mut self.buf[..want]) {
            return Err(self.io(e));
        }
        self.crc = crc32c::crc32c_append(self.crc, &self.buf[..want]);
        self.remaining -= want as u64;
        self.pos = 0;
        self.end = want;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], CowatchError> {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N).filter(|_| self.pos + N <= self.end) {
            out.copy_from_slice(src);
            self.pos += N;
        } else {
            self.fill(&mut out)?;
        }
        Ok(out)
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<(), CowatchError> {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.end {
                self.refill()?;
            }
            let n = (out.len() - done).min(self.end - self.pos);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, CowatchError> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, CowatchError> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Result<u32, CowatchError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, CowatchError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn i64(&mut self) -> Result<i64, CowatchError> {
        Ok(i64::from_le_bytes(self.bytes()?))
    }
    fn f32(&mut self, what: &str) -> Result<f32, CowatchError> {
        let v = f32::from_le_bytes(self.bytes()?);
        if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(self.corrupt(format!("{what} is {v}"))) }
    }
    fn string(&mut self) -> Result<String, CowatchError> {
        let len = usize::from(self.u16()?);
        let mut buf = vec![0u8; len];
        self.fill(&mut buf)?;
        String::from_utf8(buf).map_err(|_| self.corrupt("an id is not UTF-8"))
    }

    /// Is the next record another one (`true`) or the end of the section?
    fn record(&mut self, section: &str) -> Result<bool, CowatchError> {
        match self.u8()? {
            RECORD => Ok(true),
            END => Ok(false),
            tag => Err(self.corrupt(format!("unknown record tag {tag} in the {section} section"))),
        }
    }

    fn end_count(&mut self, section: &str, read: u64) -> Result<(), CowatchError> {
        let count = self.u64()?;
        if count == read {
            Ok(())
        } else {
            Err(self.corrupt(format!("the {section} section says {count} records, {read} were read")))
        }
    }

    fn load_into(&mut self, g: &CowatchGenerator, file_len: u64) -> Result<SnapshotInfo, CowatchError> {
        // The header: magic (is it ours?), checksum, version (can we read it?).
        if file_len < (HEADER_BYTES_V1 + 4) as u64 {
            let mut head = Vec::new();
            (&mut self.file).take(8).read_to_end(&mut head).map_err(|e| self.io(e))?;
            return Err(if !head.is_empty() && MAGIC.starts_with(&head) {
                self.corrupt(format!("truncated: {file_len} bytes, shorter than the header"))
            } else {
                CowatchError::NotASnapshot { path: self.path.clone() }
            });
        }
        let head: [u8; HEADER_BYTES_V1] = self.bytes()?;
        if head[..8] != MAGIC {
            return Err(CowatchError::NotASnapshot { path: self.path.clone() });
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        // A version-1 header is 44 bytes, a version-2 one 52; an unknown
        // version is reported as such when either checksum holds (its header
        // is intact), as damage otherwise.
        let v1_intact = crc32c::crc32c(&head[..HEADER_BYTES_V1 - 4])
            == u32::from_le_bytes([head[40], head[41], head[42], head[43]]);
        let mut header = head.to_vec();
        if version != 1 && !(version != FORMAT_VERSION && v1_intact) {
            header.extend_from_slice(&self.bytes::<{ HEADER_BYTES - HEADER_BYTES_V1 }>()?);
        }
        let len = header.len();
        let field = |at: usize| -> [u8; 8] {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            b
        };
        let half = |at: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[at..at + 4]);
            b
        };
        if crc32c::crc32c(&header[..len - 4]) != u32::from_le_bytes(half(len - 4)) {
            return Err(self.corrupt("header checksum mismatch"));
        }
        let flags = u32::from_le_bytes(half(12));
        let covered_seq = u64::from_le_bytes(field(16));
        let clock_ms = i64::from_le_bytes(field(24));
        let next_id = u64::from_le_bytes(field(32));
        if version != 1 && version != FORMAT_VERSION {
            return Err(CowatchError::UnsupportedVersion {
                path: self.path.clone(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if flags != 0 {
            return Err(self.corrupt(format!("unknown header flags {flags:#x}")));
        }
        if next_id > u64::from(u32::MAX) {
            return Err(self.corrupt(format!("next id {next_id} is beyond the id space")));
        }
        let decay_ms = if version == 1 { clock_ms } else { i64::from_le_bytes(field(40)) };
        if decay_ms > clock_ms {
            return Err(self.corrupt(format!("the decay clock {decay_ms} is ahead of the clock {clock_ms}")));
        }

        let k = g.config.max_neighbours;
        let w = g.config.window_size;
        let mut videos = 0u64;
        let mut table_heap = 0usize;
        while self.record("video")? {
            let id = self.u32()?;
            if u64::from(id) >= next_id {
                return Err(self.corrupt(format!("video id {id} is not below the next id {next_id}")));
            }
            let name = self.string()?;
            if VideoId::parse("video_id", &name).is_err() {
                return Err(self.corrupt(format!("video #{videos} has an invalid id")));
            }
            let base_ms = self.i64()?;
            let touched_ms = self.i64()?;
            let total = self.f32("a watch total")?;
            let n = usize::from(self.u16()?);
            if n > MAX_NEIGHBOURS_LIMIT {
                return Err(self.corrupt(format!("video `{name}` has {n} neighbours")));
            }
            let mut neighbours = Vec::with_capacity(list_capacity(n, k.max(n)));
            for _ in 0..n {
                let nb = self.u32()?;
                let count = self.f32("a co-watch count")?;
                let err = self.f32("a co-watch error")?;
                if u64::from(nb) >= next_id || nb == id || err > count {
                    return Err(self.corrupt(format!("video `{name}` has an impossible neighbour entry")));
                }
                neighbours.push(Neighbour { id: nb, count, err });
            }
            let name: std::sync::Arc<str> = name.into();
            let mut row = VideoRow { name: name.clone(), base_ms, touched_ms, total, neighbours };
            row.truncate_to(k);
            let heap = row.heap_bytes() + name_heap_bytes(name.len());
            if g.rows.insert(id, row).is_some() {
                return Err(self.corrupt(format!("video id {id} appears twice")));
            }
            if g.ids.insert(name.clone(), id).is_some() {
                return Err(self.corrupt(format!("video `{name}` appears twice")));
            }
            table_heap += heap;
            videos += 1;
        }
        self.end_count("video", videos)?;

        let mut users = 0u64;
        let mut window_heap = 0usize;
        while self.record("window")? {
            let user = self.string()?;
            if UserId::parse("user_id", &user).is_err() {
                return Err(self.corrupt(format!("window #{users} has an invalid user id")));
            }
            let last_ms = self.i64()?;
            let n = usize::from(self.u16()?);
            if n > MAX_WINDOW_LIMIT {
                return Err(self.corrupt(format!("a window holds {n} watches")));
            }
            let mut window = UserWindow::with_capacity(w);
            window.last_ms = last_ms;
            for _ in 0..n {
                let id = self.u32()?;
                let t_ms = self.i64()?;
                let weight = self.f32("a watch weight")?;
                if u64::from(id) >= next_id || weight > 1.0 {
                    return Err(self.corrupt("a window holds an impossible entry"));
                }
                window.entries.push(WindowEntry { id, t_ms, weight });
            }
            if window.entries.len() > w {
                let excess = window.entries.len() - w;
                window.entries.drain(..excess);
            }
            window_heap += name_heap_bytes(user.len()) + window.entries.capacity() * size_of::<WindowEntry>();
            if g.windows.insert(user.into_boxed_str(), window).is_some() {
                return Err(self.corrupt("a user's window appears twice"));
            }
            users += 1;
        }
        self.end_count("window", users)?;

        let unread = self.remaining + (self.end - self.pos) as u64;
        if unread != 0 {
            return Err(self.corrupt(format!("{unread} unexpected bytes before the checksum")));
        }
        let computed = self.crc;
        let mut stored = [0u8; 4];
        if let Err(e) = self.file.read_exact(&mut stored) {
            return Err(self.io(e));
        }
        if u32::from_le_bytes(stored) != computed {
            return Err(self.corrupt("checksum mismatch (the file was damaged after it was written)"));
        }

        g.next_id.store(next_id, Relaxed);
        g.clock_ms.store(clock_ms, Relaxed);
        *g.decay.lock().unwrap_or_else(PoisonError::into_inner) =
            if clock_ms == i64::MIN { DecayClock::START } else { DecayClock { event_ms: clock_ms, decay_ms } };
        g.videos.store(g.rows.len(), Relaxed);
        g.table_heap.store(table_heap as i64, Relaxed);
        g.users.store(g.windows.len(), Relaxed);
        g.window_heap.store(window_heap as i64, Relaxed);
        Ok(SnapshotInfo { covered_seq, clock_ms, videos, users, bytes: file_len })
    }
}
