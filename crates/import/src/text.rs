//! Small text helpers shared by the importers: line reading with line
//! numbers, Latin-1 fallback, calendar arithmetic, CSV plumbing and a stable
//! hash.

use std::{
    borrow::Cow,
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use crate::error::ImportError;

/// A file's name as it appears in messages.
pub(crate) fn shown(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn open(path: &Path) -> Result<File, ImportError> {
    File::open(path).map_err(|e| ImportError::io(&shown(path), e))
}

/// Reads a file line by line as bytes, without the line end (`\n` or `\r\n`).
pub(crate) struct Lines {
    path: String,
    reader: BufReader<File>,
    buf: Vec<u8>,
    line: u64,
}

impl Lines {
    pub(crate) fn open(path: &Path) -> Result<Self, ImportError> {
        let file = open(path)?;
        Ok(Self { path: shown(path), reader: BufReader::with_capacity(1 << 16, file), buf: Vec::new(), line: 0 })
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The next line and its 1-based number; `None` at the end of the file.
    pub(crate) fn next_line(&mut self) -> Result<Option<(u64, &[u8])>, ImportError> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|e| ImportError::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut end = self.buf.len();
        if end > 0 && self.buf[end - 1] == b'\n' {
            end -= 1;
        }
        if end > 0 && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        let mut start = 0;
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            start = 3.min(end);
        }
        Ok(Some((self.line, &self.buf[start..end])))
    }
}

/// UTF-8 when the bytes are valid UTF-8, else Latin-1 (ISO-8859-1), whose
/// bytes are the first 256 code points. GroupLens ships `u.item` (ml-100k)
/// and `movies.dat` (ml-1m) in Latin-1 and the later files in UTF-8; a
/// Latin-1 title is valid UTF-8 only in contrived cases.
pub(crate) fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// ASCII-only fields (numbers, ids of numeric datasets).
pub(crate) fn ascii(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("`{}` is not text", String::from_utf8_lossy(bytes)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub(crate) const MS_PER_DAY: i64 = 86_400_000;

fn digits(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} `{s}`"));
    }
    s.parse().map_err(|_| format!("bad {what} `{s}`"))
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.ffffff][Z|±HH:MM]` (no offset = UTC) into
/// Unix epoch milliseconds; sub-millisecond digits are truncated.
pub(crate) fn parse_datetime_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("timestamp `{text}` is not `YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]`");
    let s = text.trim();
    if s.len() < 19 || !s.as_bytes()[..19].is_ascii() || !s.is_char_boundary(19) {
        return Err(bad());
    }
    let (date, rest) = s.split_at(10);
    let (sep, rest) = rest.split_at(1);
    if sep != " " && sep != "T" {
        return Err(bad());
    }
    let (time, mut rest) = rest.split_at(8);
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 || d[0].len() != 4 {
        return Err(bad());
    }
    let (year, month, day) = (i64::from(digits(d[0], "year")?), digits(d[1], "month")?, digits(d[2], "day")?);
    let (hour, minute, second) = (digits(t[0], "hour")?, digits(t[1], "minute")?, digits(t[2], "second")?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("timestamp `{text}` has no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!("timestamp `{text}` has no such time of day"));
    }
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        let (f, r) = frac.split_at(n);
        let mut millis = f.bytes().take(3).fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
        for _ in n.min(3)..3 {
            millis *= 10;
        }
        ms = millis;
        rest = r;
    }
    let offset_minutes = match rest {
        "" | "Z" => 0i64,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let hm = &rest[1..];
            let (h, m) = match hm.split_once(':') {
                Some((h, m)) => (h, m),
                None if hm.len() == 4 && hm.is_char_boundary(2) => hm.split_at(2),
                None => return Err(bad()),
            };
            let (h, m) = (digits(h, "offset hour")?, digits(m, "offset minute")?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            sign * (i64::from(h) * 60 + i64::from(m))
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_minutes * 60;
    Ok(days * MS_PER_DAY + seconds * 1000 + ms)
}

/// 64-bit FNV-1a over the parts, each followed by a 0x1F separator. Stable
/// across platforms and Rust versions (unlike `DefaultHasher`).
pub(crate) fn fnv1a64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in part.iter().chain(&[0x1F]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// An RFC 4180 CSV reader over [`Lines`]: `,`-separated fields, a field
/// that starts with `"` runs to the next lone `"` (`""` is a quote) and may
/// span lines; a quote elsewhere is an ordinary character. Blank lines are
/// skipped. Unlike the `csv` crate it reports the exact line a record starts
/// on, blank lines and multi-line fields notwithstanding. The header is just
/// the first record, so that header checks are the importers'.
pub(crate) struct CsvReader {
    lines: Lines,
}

/// One CSV record: its fields (unescaped bytes) and where it starts.
#[derive(Debug, Default)]
pub(crate) struct Record {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    line: u64,
    unclosed: bool,
}

impl Record {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The 1-based line the record starts on.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| &self[i])
    }

    /// Why the record cannot be read as a row of `columns` fields, if it cannot.
    pub(crate) fn shape_problem(&self, columns: usize) -> Option<String> {
        if self.unclosed {
            Some("a quoted field is not closed before the end of the file".to_owned())
        } else if self.len() != columns {
            Some(format!("has {} fields; the header has {columns}", self.len()))
        } else {
            None
        }
    }
}

impl std::ops::Index<usize> for Record {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

impl CsvReader {
    pub(crate) fn open(path: &Path) -> Result<Self, ImportError> {
        Ok(Self { lines: Lines::open(path)? })
    }

    /// Reads the next record into `record`; `Ok(false)` at the end of the file.
    pub(crate) fn read(&mut self, record: &mut Record) -> Result<bool, ImportError> {
        #[derive(PartialEq)]
        enum State {
            Start,
            Unquoted,
            Quoted,
            QuoteInQuoted,
        }
        record.bytes.clear();
        record.ends.clear();
        record.unclosed = false;
        let mut state = State::Start;
        let mut started = false;
        loop {
            let Some((line, bytes)) = self.lines.next_line()? else {
                if started {
                    // EOF inside a quoted field.
                    record.unclosed = true;
                    record.ends.push(record.bytes.len());
                    return Ok(true);
                }
                return Ok(false);
            };
            if !started {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                started = true;
                record.line = line;
            } else {
                record.bytes.push(b'\n');
            }
            for &b in bytes {
                state = match (state, b) {
                    (State::Start, b'"') => State::Quoted,
                    (State::Start | State::Unquoted | State::QuoteInQuoted, b',') => {
                        record.ends.push(record.bytes.len());
                        State::Start
                    }
                    (State::Quoted, b'"') => State::QuoteInQuoted,
                    (State::QuoteInQuoted, b'"') => {
                        record.bytes.push(b'"');
                        State::Quoted
                    }
                    (State::Quoted, b) => {
                        record.bytes.push(b);
                        State::Quoted
                    }
                    (_, b) => {
                        record.bytes.push(b);
                        State::Unquoted
                    }
                };
            }
            if state != State::Quoted {
                record.ends.push(record.bytes.len());
                return Ok(true);
            }
        }
    }
}

/// The column names of a CSV header (a UTF-8 byte-order mark is dropped).
pub(crate) fn header_names(record: &Record) -> Vec<String> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = decode(f);
            let name = if i == 0 { name.trim_start_matches('\u{feff}') } else { &name };
            name.trim().to_owned()
        })
        .collect()
}

/// The index of a required column, or an error naming the header line.
pub(crate) fn column(names: &[String], name: &str, path: &str, line: u64) -> Result<usize, ImportError> {
    names.iter().position(|n| n == name).ok_or_else(|| {
        ImportError::malformed(path, line, format!("the header has no `{name}` column (it has: {})", names.join(",")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(1995, 1, 1) * MS_PER_DAY, 788_918_400_000);
    }

    #[test]
    fn obd_timestamps_parse_to_milliseconds() {
        // 2019-11-24T00:00:34.762830Z = 1574553634.762830 s.
        assert_eq!(parse_datetime_ms("2019-11-24 00:00:34.762830+00:00").unwrap(), 1_574_553_634_762);
        assert_eq!(parse_datetime_ms("2019-11-24T00:00:34Z").unwrap(), 1_574_553_634_000);
        assert_eq!(parse_datetime_ms("2019-11-24 01:00:34.7+01:00").unwrap(), 1_574_553_634_700);
        assert_eq!(parse_datetime_ms("2019-11-23 23:00:34-0100").unwrap(), 1_574_553_634_000);
        for bad in [
            "",
            "2019-11-24",
            "2019-02-30 00:00:00",
            "2019-11-24 24:00:00",
            "2019-11-24 00:00:00+x",
            "é",
            "2019-11-24é00:00:00",
            "2019-11-24 00:00:00+é0",
            "2019-11-24 00:00:00.+00:00",
        ] {
            assert!(parse_datetime_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latin1_is_the_fallback_for_invalid_utf8() {
        assert_eq!(decode(b"Caf\xe9"), "Café");
        assert_eq!(decode("Café".as_bytes()), "Café");
    }

    fn records(content: &[u8]) -> Vec<(u64, Vec<String>, bool)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, content).unwrap();
        let mut reader = CsvReader::open(&path).unwrap();
        let mut record = Record::default();
        let mut out = Vec::new();
        while reader.read(&mut record).unwrap() {
            let fields = record.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect();
            out.push((record.line(), fields, record.unclosed));
        }
        out
    }

    #[test]
    fn csv_records_follow_rfc_4180_and_keep_exact_lines() {
        let got = records(
            b"\xEF\xBB\xBFa,b,c\r\n\r\n1,\"x, \"\"y\"\"\",\n\n2,\"multi\nline\",5'2\"\n3,\"a\"b,\"\"\n4,\"open",
        );
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (1, s(&["a", "b", "c"]), false),
                (3, s(&["1", "x, \"y\"", ""]), false),
                (5, s(&["2", "multi\nline", "5'2\""]), false),
                (7, s(&["3", "ab", ""]), false),
                (8, s(&["4", "open"]), true),
            ]
        );
        let problem = |r: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.csv");
            std::fs::write(&path, r).unwrap();
            let mut record = Record::default();
            CsvReader::open(&path).unwrap().read(&mut record).unwrap();
            record.shape_problem(2)
        };
        assert_eq!(problem(b"1,2\n"), None);
        assert_eq!(problem(b"1,2,3\n").unwrap(), "has 3 fields; the header has 2");
        assert!(problem(b"1,\"2\n").unwrap().contains("not closed"));
    }

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a64([&b""[..]]), fnv1a64([&b""[..]]));
        assert_ne!(fnv1a64([&b"ab"[..], b"c"]), fnv1a64([&b"a"[..], b"bc"]));
        // Pinned, so that user ids never change between versions.
        assert_eq!(fnv1a64([&b"a"[..]]), 0x089b_e907_b544_fdc9);
    }
}
