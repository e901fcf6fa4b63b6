//! The Open Bandit Dataset (ZOZO, Inc.; ZOZOTOWN fashion e-commerce; Saito et
//! al., NeurIPS 2021 Datasets & Benchmarks). One import reads one
//! `<policy>/<campaign>/` folder, e.g. `random/all` or `bts/men`, holding
//!
//! - `<campaign>.csv`: an unnamed index, `timestamp`
//!   (`2019-11-24 00:00:34.762830+00:00`), `item_id`, `position` (1, 2, 3:
//!   the left, centre and right slot of the widget), `click` (0/1),
//!   `propensity_score` (the logging policy's probability of this item at
//!   this position), `user_feature_0..3` (hashed categoricals) and
//!   `user-item_affinity_<k>` (ignored);
//! - `item_context.csv`: an unnamed index, `item_id`, `item_feature_0`
//!   (numeric, price-like; ignored: the catalogue has no place for it) and
//!   `item_feature_1..3` (hashed categoricals).
//!
//! Item ids are numbered per campaign (0..80 in `all`, 0..34 in `men`), so
//! import each campaign into its own catalogue.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use watchnext_core::{
    Device, UserId, VideoId,
    catalog::{Catalog, Video},
    event::{Event, EventKind, EventSink, Impression},
};

use crate::{
    error::{ImportError, OnError, Problems},
    report::{Emitter, Imported},
    text,
};

/// How to import an Open Bandit Dataset folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObdOptions {
    pub on_error: OnError,
}

/// The slots of the ZOZOTOWN widget.
const POSITIONS: u32 = 3;

/// One log row, as held while sorting.
#[derive(Debug, Clone, Copy)]
struct Row {
    timestamp_ms: i64,
    row: u64,
    user: u64,
    item: u32,
    position: u32,
    propensity: f32,
    click: bool,
}

/// The id of an OBD item in the catalogue and the events.
pub fn obd_video_id(item_id: u32) -> String {
    format!("obd:{item_id}")
}

/// The user id given to a row: OBD has no user ids, so this is a stable
/// 64-bit FNV-1a hash of `user_feature_0..3` (rows with equal features share
/// a "user").
pub fn obd_user_id(user_features: [&str; 4]) -> String {
    user_id_of_hash(text::fnv1a64(user_features.iter().map(|f| f.as_bytes())))
}

fn user_id_of_hash(hash: u64) -> String {
    format!("obd:{hash:016x}")
}

/// Imports the `<policy>/<campaign>/` folder `dir`: one impression per log
/// row, plus a click where `click` is 1, in time order.
pub fn import_obd<S: EventSink>(dir: &Path, options: &ObdOptions, sink: &mut S) -> Result<Imported, ImportError> {
    let shown_dir = text::shown(dir);
    let name_of = |p: Option<&Path>| p.and_then(Path::file_name).and_then(|n| n.to_str()).map(str::to_owned);
    let dir_abs = std::path::absolute(dir).map_err(|e| ImportError::io(&shown_dir, e))?;
    let (Some(campaign), Some(policy)) = (name_of(Some(&dir_abs)), name_of(dir_abs.parent())) else {
        return Err(ImportError::unusable(&shown_dir, "is not an Open Bandit Dataset `<policy>/<campaign>/` folder"));
    };
    let log_path = dir.join(format!("{campaign}.csv"));
    let items_path = dir.join("item_context.csv");
    for p in [&log_path, &items_path] {
        if !p.is_file() {
            return Err(ImportError::unusable(
                &shown_dir,
                format!(
                    "is not an Open Bandit Dataset `<policy>/<campaign>/` folder: `{}` is missing",
                    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
                ),
            ));
        }
    }
    let mut problems = Problems::new(options.on_error);
    let mut lines_read = 0;

    let (catalog, item_index) = read_items(&items_path, &mut problems, &mut lines_read)?;
    let (mut rows, users) = read_log(&log_path, &item_index, &mut problems, &mut lines_read)?;
    if !rows.is_sorted_by_key(|r| r.timestamp_ms) {
        rows.sort_by_key(|r| r.timestamp_ms);
    }

    let video_ids = catalog
        .videos()
        .iter()
        .map(|v| VideoId::parse("video_id", &v.id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ImportError::unusable(&text::shown(&items_path), e.to_string()))?;
    let mut out = Emitter::new(sink);
    for r in &rows {
        let user = UserId::parse("user_id", &user_id_of_hash(r.user))
            .map_err(|e| ImportError::unusable(&text::shown(&log_path), e.to_string()))?;
        let event = |kind| Event {
            timestamp_ms: r.timestamp_ms,
            request_id: format!("obd:{policy}:{campaign}:{}", r.row),
            user: user.clone(),
            video: video_ids[r.item as usize].clone(),
            device: Device::Unknown,
            kind,
        };
        out.push(event(EventKind::Impression(Impression {
            position: r.position,
            propensity: r.propensity,
            experiment_arm: policy.clone(),
            ..Impression::default()
        })))?;
        if r.click {
            out.push(event(EventKind::Click))?;
        }
    }
    let source = format!("obd {policy}/{campaign} ({shown_dir})");
    let report = out.finish(source, lines_read, users, &catalog, problems);
    Ok(Imported { catalog, report })
}

/// `item_context.csv` → the catalogue (ordered by item id) and a map from
/// item id to catalogue index.
fn read_items(
    path: &Path,
    problems: &mut Problems,
    lines_read: &mut u64,
) -> Result<(Catalog, HashMap<u32, u32>), ImportError> {
    let shown = text::shown(path);
    let mut reader = text::CsvReader::open(path)?;
    let mut record = text::Record::default();
    let mut items: Vec<(u32, Video)> = Vec::new();
    if reader.read(&mut record)? {
        let names = text::header_names(&record);
        let line = record.line();
        let id_col = text::column(&names, "item_id", &shown, line)?;
        let feature_cols: Vec<(usize, &str)> = ["item_feature_1", "item_feature_2", "item_feature_3"]
            .into_iter()
            .filter_map(|n| names.iter().position(|c| c == n).map(|i| (i, n)))
            .collect();
        let mut seen = HashSet::new();
        while reader.read(&mut record)? {
            *lines_read += 1;
            let line = record.line();
            let parsed = if let Some(problem) = record.shape_problem(names.len()) {
                Err(problem)
            } else {
                parse_item_id(&record[id_col])
                    .and_then(|id| if seen.insert(id) { Ok(id) } else { Err(format!("item {id} appears again")) })
            };
            match parsed {
                Ok(id) => {
                    let topics = feature_cols
                        .iter()
                        .filter(|(i, _)| !record[*i].is_empty())
                        .map(|(i, n)| format!("{n}:{}", text::decode(&record[*i]).trim()))
                        .collect();
                    items.push((
                        id,
                        Video {
                            id: obd_video_id(id),
                            title: String::new(),
                            topics,
                            duration_seconds: 0.0,
                            upload_ms: 0,
                        },
                    ));
                }
                Err(problem) => problems.line(&shown, line, problem)?,
            }
        }
    }
    items.sort_unstable_by_key(|(id, _)| *id);
    let index = items.iter().enumerate().map(|(i, (id, _))| (*id, i as u32)).collect();
    let catalog =
        Catalog::new(items.into_iter().map(|(_, v)| v).collect()).map_err(|p| ImportError::unusable(&shown, p))?;
    Ok((catalog, index))
}

fn parse_item_id(field: &[u8]) -> Result<u32, String> {
    let s = text::ascii(field)?.trim();
    match s.parse::<u32>() {
        Ok(id) => Ok(id),
        Err(_) => Err(format!("item_id `{s}` is not a whole number in 0..=4294967295")),
    }
}

/// `<campaign>.csv` → rows (file order) and the number of distinct users.
fn read_log(
    path: &Path,
    item_index: &HashMap<u32, u32>,
    problems: &mut Problems,
    lines_read: &mut u64,
) -> Result<(Vec<Row>, u64), ImportError> {
    let shown = text::shown(path);
    let mut reader = text::CsvReader::open(path)?;
    let mut record = text::Record::default();
    let mut rows = Vec::new();
    let mut users = HashSet::new();
    if !reader.read(&mut record)? {
        return Ok((rows, 0));
    }
    let names = text::header_names(&record);
    let line = record.line();
    let col = |n| text::column(&names, n, &shown, line);
    let (ts_col, item_col, pos_col, click_col, prop_col) =
        (col("timestamp")?, col("item_id")?, col("position")?, col("click")?, col("propensity_score")?);
    let user_cols = [col("user_feature_0")?, col("user_feature_1")?, col("user_feature_2")?, col("user_feature_3")?];
    let mut ordinal = 0u64;
    while reader.read(&mut record)? {
        *lines_read += 1;
        let row = ordinal;
        ordinal += 1;
        let parsed = (|| {
            if let Some(problem) = record.shape_problem(names.len()) {
                return Err(problem);
            }
            let timestamp_ms = text::parse_datetime_ms(text::ascii(&record[ts_col])?)?;
            if timestamp_ms <= 0 {
                return Err("timestamp is before 1970".to_owned());
            }
            let item_id = parse_item_id(&record[item_col])?;
            let item = item_index
                .get(&item_id)
                .copied()
                .ok_or_else(|| format!("item {item_id} is not in item_context.csv"))?;
            let pos_text = text::ascii(&record[pos_col])?.trim();
            let position = match pos_text.parse::<u32>() {
                Ok(p) if (1..=POSITIONS).contains(&p) => p,
                _ => return Err(format!("position `{pos_text}` is not 1, 2 or 3")),
            };
            let click = match text::ascii(&record[click_col])?.trim() {
                "0" => false,
                "1" => true,
                other => return Err(format!("click `{other}` is not 0 or 1")),
            };
            let prop_text = text::ascii(&record[prop_col])?.trim();
            let propensity = match prop_text.parse::<f32>() {
                Ok(p) if p.is_finite() && p > 0.0 && p <= 1.0 => p,
                _ => return Err(format!("propensity_score `{prop_text}` is not within (0, 1]")),
            };
            let user = text::fnv1a64(user_cols.iter().map(|&c| &record[c]));
            Ok(Row { timestamp_ms, row, user, item, position, propensity, click })
        })();
        match parsed {
            Ok(r) => {
                users.insert(r.user);
                rows.push(r);
            }
            Err(problem) => problems.line(&shown, record.line(), problem)?,
        }
    }
    Ok((rows, users.len() as u64))
}
