//! A platform's own logs, as CSV (with a header row) or JSON Lines, one event
//! per row:
//!
//! | column / key | required | meaning |
//! |---|---|---|
//! | `timestamp_ms` | yes | Unix epoch milliseconds, > 0 |
//! | `user_id`, `video_id` | yes | ids: non-empty, at most 256 bytes, no control characters |
//! | `event` | yes | `impression`, `click`, `watch`, `like`, `dismiss` or `rating` |
//! | `request_id` | no | the list the event belongs to; ties impressions to their outcomes |
//! | `device` | no | `phone`, `tablet`, `tv`, `desktop` or `unknown` (empty = unknown) |
//! | `position` | impression | 1-based slot in the list |
//! | `query_video_id` | no, impression only | the video being watched when the list was shown |
//! | `propensity` | no, impression only | probability the logging policy showed it there, 0..=1 (0 = unknown) |
//! | `seconds_watched` | watch | seconds watched, >= 0 |
//! | `video_duration_seconds` | no, watch only | the video's length, >= 0 (0 = unknown) |
//! | `rating` | rating | the rating, any finite number |
//!
//! ```text
//! timestamp_ms,user_id,video_id,event,request_id,position,device,seconds_watched,video_duration_seconds,rating,query_video_id,propensity
//! 1700000000000,u1,v9,impression,r1,1,phone,,,,v3,0.25
//! 1700000000000,u1,v9,click,r1,,phone,,,,,
//! 1700000004000,u1,v9,watch,r1,,phone,212.5,300,,,
//! ```
//! ```json
//! {"timestamp_ms":1700000000000,"user_id":"u1","video_id":"v9","event":"impression","request_id":"r1","position":1,"device":"phone","query_video_id":"v3","propensity":0.25}
//! {"timestamp_ms":1700000004000,"user_id":"u1","video_id":"v9","event":"watch","request_id":"r1","seconds_watched":212.5,"video_duration_seconds":300}
//! ```
//!
//! Columns may come in any order and the optional ones may be left out. An
//! empty cell, an empty string or `null` means "absent". JSON values may be
//! strings or numbers (ids may be integers). Unknown columns or keys, and a
//! field given for an event it does not apply to (a `rating` on a click),
//! are errors rather than silently dropped data. Each row becomes a
//! `watchnext.v1.FeedbackEvent` checked by `Event::from_proto`, the same
//! rules the Feedback service applies. Rows may come in any order: events
//! are sorted by time (stably, so equal times keep the file's order), which
//! holds them all in memory.
//!
//! The optional catalogue is either the project's `catalog.jsonl` (one JSON
//! video per line, read by `Catalog::read`, whose errors are always fatal) or
//! a CSV with the columns `video_id,title,topics,duration_seconds,upload_ms`
//! (`topics` `|`-separated; all but `video_id` optional):
//!
//! ```text
//! video_id,title,topics,duration_seconds,upload_ms
//! v9,Cats at sea,animals|travel,300,1700000000000
//! ```
//! With a catalogue, an event on a video it lacks is a malformed line;
//! without one, the catalogue returned lists every video the events name.

use std::{
    borrow::Cow,
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
};

use watchnext_core::{
    Device, VideoId,
    catalog::{Catalog, Video},
    event::{Event, EventSink},
};
use watchnext_proto::v1::{self as pb, feedback_event::Event as PbEvent};

use crate::{
    error::{ImportError, OnError, Problems},
    report::{Emitter, Imported},
    text::{self, Lines},
};

/// The columns (CSV) or keys (JSON Lines) of a generic event row.
pub const EVENT_FIELDS: [&str; 12] = [
    "timestamp_ms",
    "user_id",
    "video_id",
    "event",
    "request_id",
    "position",
    "device",
    "seconds_watched",
    "video_duration_seconds",
    "rating",
    "query_video_id",
    "propensity",
];

/// The columns of a generic catalogue CSV.
pub const CATALOG_FIELDS: [&str; 5] = ["video_id", "title", "topics", "duration_seconds", "upload_ms"];

const TIMESTAMP: usize = 0;
const USER: usize = 1;
const VIDEO: usize = 2;
const EVENT: usize = 3;
const REQUEST: usize = 4;
const POSITION: usize = 5;
const DEVICE: usize = 6;
const SECONDS: usize = 7;
const DURATION: usize = 8;
const RATING: usize = 9;
const QUERY: usize = 10;
const PROPENSITY: usize = 11;

/// The file format of generic events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsFormat {
    Csv,
    JsonLines,
}

impl EventsFormat {
    /// From the file name: `.csv` is CSV; `.jsonl`, `.ndjson` and `.json` are
    /// JSON Lines.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::JsonLines),
            _ => None,
        }
    }
}

/// How to import generic events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenericOptions {
    pub on_error: OnError,
    /// The events file's format; `None` = from its extension.
    pub format: Option<EventsFormat>,
    /// A catalogue (`.jsonl`/`.json`: the project's `catalog.jsonl`; else
    /// CSV); `None` = derived from the events.
    pub catalog: Option<PathBuf>,
}

/// Imports a generic events file (and optional catalogue): the events, sorted
/// by time, into `sink`.
pub fn import_generic<S: EventSink>(
    events_path: &Path,
    options: &GenericOptions,
    sink: &mut S,
) -> Result<Imported, ImportError> {
    let shown = text::shown(events_path);
    let format = options.format.or_else(|| EventsFormat::from_path(events_path)).ok_or_else(|| {
        ImportError::unusable(&shown, "has an unknown format: name it .csv, .jsonl or .ndjson, or say which it is")
    })?;
    let mut problems = Problems::new(options.on_error);
    let mut lines_read = 0;
    let catalog = match &options.catalog {
        Some(path) => Some(read_catalog(path, &mut problems, &mut lines_read)?),
        None => None,
    };

    let mut events = Vec::new();
    let mut accept = |line: u64, row: Result<Event, String>, problems: &mut Problems| {
        let row = row.and_then(|e| match &catalog {
            Some(c) if c.index_of(e.video.as_str()).is_none() => {
                Err(format!("video `{}` is not in the catalogue", e.video))
            }
            _ => Ok(e),
        });
        match row {
            Ok(e) => {
                events.push(e);
                Ok(())
            }
            Err(problem) => problems.line(&shown, line, problem),
        }
    };
    match format {
        EventsFormat::Csv => {
            let mut reader = text::CsvReader::open(events_path)?;
            let mut record = text::Record::default();
            if reader.read(&mut record)? {
                let header_line = record.line();
                let columns = header_columns(&text::header_names(&record), &EVENT_FIELDS, &shown, header_line)?;
                for (field, required) in [(TIMESTAMP, true), (USER, true), (VIDEO, true), (EVENT, true)] {
                    if required && !columns.contains(&field) {
                        return Err(ImportError::malformed(
                            &shown,
                            header_line,
                            format!("the header has no `{}` column", EVENT_FIELDS[field]),
                        ));
                    }
                }
                while reader.read(&mut record)? {
                    lines_read += 1;
                    let row = if let Some(problem) = record.shape_problem(columns.len()) {
                        Err(problem)
                    } else {
                        csv_fields(&record, &columns, &EVENT_FIELDS).and_then(|f| event_of(&f))
                    };
                    accept(record.line(), row, &mut problems)?;
                }
            }
        }
        EventsFormat::JsonLines => {
            let mut reader = Lines::open(events_path)?;
            while let Some((line, bytes)) = reader.next_line()? {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                lines_read += 1;
                let row = json_fields(bytes).and_then(|f| event_of(&f));
                accept(line, row, &mut problems)?;
            }
        }
    }

    events.sort_by_key(|e| e.timestamp_ms);
    let users = events.iter().map(|e| e.user.as_str()).collect::<HashSet<_>>().len() as u64;
    let catalog = match catalog {
        Some(c) => c,
        None => derived_catalog(&events).map_err(|p| ImportError::unusable(&shown, p))?,
    };
    let mut out = Emitter::new(sink);
    for e in events {
        out.push(e)?;
    }
    let source = format!("generic {} ({shown})", if format == EventsFormat::Csv { "csv" } else { "jsonl" });
    let report = out.finish(source, lines_read, users, &catalog, problems);
    Ok(Imported { catalog, report })
}

/// Reads a generic catalogue on its own (see the module documentation); the
/// report counts its lines and skipped lines.
pub fn import_catalog(path: &Path, on_error: OnError) -> Result<Imported, ImportError> {
    let mut problems = Problems::new(on_error);
    let mut lines_read = 0;
    let catalog = read_catalog(path, &mut problems, &mut lines_read)?;
    let mut no_events: Vec<Event> = Vec::new();
    let report = Emitter::new(&mut no_events).finish(
        format!("catalogue ({})", text::shown(path)),
        lines_read,
        0,
        &catalog,
        problems,
    );
    Ok(Imported { catalog, report })
}

/// Every video the events name (watched and query videos), by id.
fn derived_catalog(events: &[Event]) -> Result<Catalog, String> {
    let mut ids = BTreeSet::new();
    for e in events {
        ids.insert(e.video.as_str());
        if let watchnext_core::event::EventKind::Impression(imp) = &e.kind
            && let Some(q) = &imp.query_video
        {
            ids.insert(q.as_str());
        }
    }
    Catalog::new(
        ids.into_iter()
            .map(|id| Video {
                id: id.to_owned(),
                title: String::new(),
                topics: Vec::new(),
                duration_seconds: 0.0,
                upload_ms: 0,
            })
            .collect(),
    )
}

fn read_catalog(path: &Path, problems: &mut Problems, lines_read: &mut u64) -> Result<Catalog, ImportError> {
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jsonl" | "json" | "ndjson"));
    if is_json {
        let catalog = Catalog::read(path)?;
        *lines_read += catalog.len() as u64;
        return Ok(catalog);
    }
    let shown = text::shown(path);
    let mut reader = text::CsvReader::open(path)?;
    let mut record = text::Record::default();
    let mut videos = Vec::new();
    if reader.read(&mut record)? {
        let header_line = record.line();
        let columns = header_columns(&text::header_names(&record), &CATALOG_FIELDS, &shown, header_line)?;
        if !columns.contains(&0) {
            return Err(ImportError::malformed(&shown, header_line, "the header has no `video_id` column"));
        }
        let mut first_line: HashMap<String, u64> = HashMap::new();
        while reader.read(&mut record)? {
            *lines_read += 1;
            let line = record.line();
            let parsed = if let Some(problem) = record.shape_problem(columns.len()) {
                Err(problem)
            } else {
                csv_fields(&record, &columns, &CATALOG_FIELDS).and_then(|f| video_of(&f)).and_then(|v| match first_line
                    .get(&v.id)
                {
                    Some(first) => Err(format!("video `{}` appears again (first on line {first})", v.id)),
                    None => Ok(v),
                })
            };
            match parsed {
                Ok(v) => {
                    first_line.insert(v.id.clone(), line);
                    videos.push(v);
                }
                Err(problem) => problems.line(&shown, line, problem)?,
            }
        }
    }
    Catalog::new(videos).map_err(|p| ImportError::unusable(&shown, p))
}

/// Maps header columns to field indices; unknown or repeated columns are
/// errors on the header line.
fn header_columns(names: &[String], known: &[&str], path: &str, line: u64) -> Result<Vec<usize>, ImportError> {
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let Some(field) = known.iter().position(|k| k == name) else {
            return Err(ImportError::malformed(
                path,
                line,
                format!("unknown column `{name}`; the columns are {}", known.join(",")),
            ));
        };
        if columns.contains(&field) {
            return Err(ImportError::malformed(path, line, format!("column `{name}` appears twice")));
        }
        columns.push(field);
    }
    Ok(columns)
}

type Fields<'a, const N: usize> = [Option<Cow<'a, str>>; N];

fn csv_fields<'a, const N: usize>(
    record: &'a text::Record,
    columns: &[usize],
    names: &[&str; N],
) -> Result<Fields<'a, N>, String> {
    let mut fields: Fields<'a, N> = std::array::from_fn(|_| None);
    for (value, &field) in record.iter().zip(columns) {
        let value = std::str::from_utf8(value).map_err(|_| format!("`{}` is not UTF-8", names[field]))?;
        let value = value.trim();
        if !value.is_empty() {
            fields[field] = Some(Cow::Borrowed(value));
        }
    }
    Ok(fields)
}

fn json_fields(bytes: &[u8]) -> Result<Fields<'static, 12>, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut fields: Fields<'static, 12> = std::array::from_fn(|_| None);
    for (key, value) in map {
        let Some(field) = EVENT_FIELDS.iter().position(|k| *k == key) else {
            return Err(format!("unknown key `{key}`; the keys are {}", EVENT_FIELDS.join(",")));
        };
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(format!("`{key}` is {other}; expected a string or a number")),
        };
        let text = text.trim();
        if !text.is_empty() {
            fields[field] = Some(Cow::Owned(text.to_owned()));
        }
    }
    Ok(fields)
}

fn get<'f, const N: usize>(fields: &'f Fields<'_, N>, i: usize) -> Option<&'f str> {
    fields[i].as_deref()
}

fn number<T: std::str::FromStr>(fields: &Fields<'_, 12>, i: usize, what: &str) -> Result<Option<T>, String> {
    get(fields, i)
        .map(|s| s.parse::<T>().map_err(|_| format!("`{}` is `{s}`, not {what}", EVENT_FIELDS[i])))
        .transpose()
}

fn device_of(text: Option<&str>) -> Result<Device, String> {
    let Some(text) = text else { return Ok(Device::Unknown) };
    Device::ALL
        .into_iter()
        .find(|d| d.name().eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("device `{text}` is not one of phone, tablet, tv, desktop, unknown"))
}

/// One row → a wire event → `Event::from_proto`.
fn event_of(fields: &Fields<'_, 12>) -> Result<Event, String> {
    let timestamp_ms = match number::<i64>(fields, TIMESTAMP, "a whole number")? {
        Some(t) if t > 0 => t,
        Some(t) => return Err(format!("`timestamp_ms` is {t}; it must be Unix epoch milliseconds > 0")),
        None => return Err("`timestamp_ms` is required".to_owned()),
    };
    let name = get(fields, EVENT).ok_or("`event` is required")?.to_ascii_lowercase();
    let (event, applies): (PbEvent, &[usize]) = match name.as_str() {
        "impression" => {
            let position = number::<u32>(fields, POSITION, "a whole number >= 1")?
                .ok_or("`position` is required for an impression")?;
            let propensity = number::<f32>(fields, PROPENSITY, "a number")?.unwrap_or(0.0);
            let query_video_id = get(fields, QUERY).unwrap_or_default().to_owned();
            (
                PbEvent::Impression(pb::Impression { position, propensity, query_video_id, ..Default::default() }),
                &[POSITION, PROPENSITY, QUERY],
            )
        }
        "click" => (PbEvent::Click(pb::Click {}), &[]),
        "watch" => {
            let seconds_watched =
                number::<f32>(fields, SECONDS, "a number")?.ok_or("`seconds_watched` is required for a watch")?;
            let video_duration_seconds = number::<f32>(fields, DURATION, "a number")?.unwrap_or(0.0);
            (PbEvent::Watch(pb::Watch { seconds_watched, video_duration_seconds }), &[SECONDS, DURATION])
        }
        "like" => (PbEvent::Like(pb::Like {}), &[]),
        "dismiss" => (PbEvent::Dismiss(pb::Dismiss {}), &[]),
        "rating" => {
            let value = number::<f32>(fields, RATING, "a number")?.ok_or("`rating` is required for a rating")?;
            (PbEvent::Rating(pb::Rating { value }), &[RATING])
        }
        other => {
            return Err(format!("event `{other}` is not one of impression, click, watch, like, dismiss, rating"));
        }
    };
    for field in [POSITION, PROPENSITY, QUERY, SECONDS, DURATION, RATING] {
        if fields[field].is_some() && !applies.contains(&field) {
            return Err(format!("`{}` does not apply to a {name} event", EVENT_FIELDS[field]));
        }
    }
    let wire = pb::FeedbackEvent {
        request_id: get(fields, REQUEST).unwrap_or_default().to_owned(),
        user_id: get(fields, USER).unwrap_or_default().to_owned(),
        video_id: get(fields, VIDEO).unwrap_or_default().to_owned(),
        timestamp_ms,
        device: device_of(get(fields, DEVICE))?.to_proto() as i32,
        event_id: String::new(),
        event: Some(event),
    };
    Event::from_proto(&wire, timestamp_ms).map_err(|e| e.to_string())
}

/// One catalogue CSV row → a video.
fn video_of(fields: &Fields<'_, 5>) -> Result<Video, String> {
    let id = get(fields, 0).unwrap_or_default();
    VideoId::parse("video_id", id).map_err(|e| e.to_string())?;
    let duration_seconds = match get(fields, 3) {
        None => 0.0,
        Some(s) => match s.parse::<f32>() {
            Ok(d) if d.is_finite() && d >= 0.0 => d,
            _ => return Err(format!("`duration_seconds` is `{s}`, not a finite number >= 0")),
        },
    };
    let upload_ms = match get(fields, 4) {
        None => 0,
        Some(s) => s.parse::<i64>().map_err(|_| format!("`upload_ms` is `{s}`, not a whole number"))?,
    };
    Ok(Video {
        id: id.to_owned(),
        title: get(fields, 1).unwrap_or_default().to_owned(),
        topics: get(fields, 2)
            .unwrap_or_default()
            .split('|')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        duration_seconds,
        upload_ms,
    })
}
