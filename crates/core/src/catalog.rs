//! The video catalogue: what every generator indexes and what the feature
//! schema reads about a video. The synthetic world and the importers write
//! it; the services load it at start-up.
//!
//! On disk it is JSON Lines (`catalog.jsonl`), one [`Video`] per line, so a
//! user can produce one from their own catalogue with any tool:
//!
//! ```json
//! {"id":"v42","title":"Cats at sea","topics":["animals","travel"],"duration_seconds":312.0,"upload_ms":1700000000000}
//! ```
//! `title` and `upload_ms` may be omitted; `topics` may be empty. Files are
//! written crash-safely ([`crate::fsutil::write_atomic`] semantics, streamed).

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::ids::VideoId;

/// The catalogue's file name inside a data folder.
pub const CATALOG_FILE: &str = "catalog.jsonl";

/// One video of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Topic names (genres, categories...).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Length in seconds; 0 when unknown.
    #[serde(default)]
    pub duration_seconds: f32,
    /// Upload time, Unix epoch milliseconds; 0 when unknown.
    #[serde(default)]
    pub upload_ms: i64,
}

/// A catalogue problem, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}:{line}: {problem}")]
    Malformed { path: String, line: usize, problem: String },
}

/// Fast, seeded hashing for the catalogue's id index and the per-request
/// maps of the serving path (SipHash's DoS resistance is not needed for
/// lookups, and it costs more than the rest of a lookup).
pub type FastHash = foldhash::quality::RandomState;

/// What the ranker's features read about a video, computed once per
/// catalogue rather than once per ranked candidate, and kept in flat arrays
/// so that a candidate's row touches a few cache lines instead of the
/// video's strings: its duration and upload time, the hash state of its id
/// and of its first topic for the sparse fields, the first topic's hash and
/// every distinct topic's hash, sorted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureKeys<'c> {
    pub duration_seconds: f32,
    pub upload_ms: i64,
    /// [`crate::features::field_hash`] of the id in the `video` field.
    pub id_hash: u64,
    /// [`crate::features::field_hash`] of the first topic (`""` when none)
    /// in the `topic` field.
    pub primary_topic_hash: u64,
    pub primary: Option<u64>,
    pub sorted: &'c [u64],
}

/// The fixed-size part of [`FeatureKeys`], one per video.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Facts {
    duration_seconds: f32,
    upload_ms: i64,
    id_hash: u64,
    primary_topic_hash: u64,
    primary: Option<u64>,
}

/// An in-memory catalogue with dense indices (`0..len`) for fast lookup.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    videos: Vec<Video>,
    index: HashMap<String, u32, FastHash>,
    /// Every video's [`FeatureKeys`], flat: video `i`'s sorted topic hashes
    /// are `topic_hashes[topic_starts[i]..topic_starts[i + 1]]`.
    facts: Vec<Facts>,
    topic_starts: Vec<u32>,
    topic_hashes: Vec<u64>,
}

impl Catalog {
    /// Builds a catalogue; a repeated id is an error naming it.
    pub fn new(videos: Vec<Video>) -> Result<Self, String> {
        let mut index = HashMap::with_capacity_and_hasher(videos.len(), FastHash::default());
        for (i, v) in videos.iter().enumerate() {
            VideoId::parse("id", &v.id).map_err(|e| format!("video #{i}: {e}"))?;
            let i = u32::try_from(i).map_err(|_| "more than 4 billion videos".to_owned())?;
            if index.insert(v.id.clone(), i).is_some() {
                return Err(format!("video id `{}` appears twice", v.id));
            }
        }
        let mut facts = Vec::with_capacity(videos.len());
        let mut topic_starts = Vec::with_capacity(videos.len() + 1);
        let mut topic_hashes = Vec::new();
        topic_starts.push(0);
        for v in &videos {
            let (primary, sorted) = crate::features::topic_keys(&v.topics);
            let (id_hash, primary_topic_hash) = crate::features::video_field_hashes(v);
            facts.push(Facts {
                duration_seconds: v.duration_seconds,
                upload_ms: v.upload_ms,
                id_hash,
                primary_topic_hash,
                primary,
            });
            topic_hashes.extend(sorted);
            let end = u32::try_from(topic_hashes.len()).map_err(|_| "more than 4 billion topic entries".to_owned())?;
            topic_starts.push(end);
        }
        Ok(Self { videos, index, facts, topic_starts, topic_hashes })
    }

    pub fn len(&self) -> usize {
        self.videos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    pub fn videos(&self) -> &[Video] {
        &self.videos
    }

    /// Dense index of a video id.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn get(&self, id: &str) -> Option<&Video> {
        self.index_of(id).map(|i| &self.videos[i as usize])
    }

    /// The feature keys of the video at dense index `i`.
    pub fn feature_keys(&self, i: u32) -> Option<FeatureKeys<'_>> {
        let i = i as usize;
        let f = *self.facts.get(i)?;
        let (start, end) = (self.topic_starts[i] as usize, self.topic_starts[i + 1] as usize);
        Some(FeatureKeys {
            duration_seconds: f.duration_seconds,
            upload_ms: f.upload_ms,
            id_hash: f.id_hash,
            primary_topic_hash: f.primary_topic_hash,
            primary: f.primary,
            sorted: &self.topic_hashes[start..end],
        })
    }

    /// Reads a JSON Lines catalogue; blank lines are skipped.
    pub fn read(path: &Path) -> Result<Self, CatalogError> {
        let p = path.display().to_string();
        let file = File::open(path).map_err(|source| CatalogError::Io { path: p.clone(), source })?;
        let mut videos = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| CatalogError::Io { path: p.clone(), source })?;
            if line.trim().is_empty() {
                continue;
            }
            let video: Video = serde_json::from_str(&line).map_err(|e| CatalogError::Malformed {
                path: p.clone(),
                line: n + 1,
                problem: e.to_string(),
            })?;
            if !video.duration_seconds.is_finite() || video.duration_seconds < 0.0 {
                return Err(CatalogError::Malformed {
                    path: p.clone(),
                    line: n + 1,
                    problem: "duration_seconds must be a finite number >= 0".into(),
                });
            }
            videos.push(video);
        }
        Self::new(videos).map_err(|problem| CatalogError::Malformed { path: p, line: 0, problem })
    }

    /// Writes the catalogue crash-safely (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), CatalogError> {
        write_videos(path, &self.videos)
    }
}

/// Streams videos to a JSON Lines file crash-safely.
pub fn write_videos(path: &Path, videos: &[Video]) -> Result<(), CatalogError> {
    let p = path.display().to_string();
    let io_err = |source| CatalogError::Io { path: p.clone(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = dir.join(format!(".{}.tmp-{}", CATALOG_FILE, crate::fsutil::writer_tag()));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        for v in videos {
            serde_json::to_writer(&mut out, v)?;
            out.write_all(b"\n")?;
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(id: &str) -> Video {
        Video { id: id.into(), title: String::new(), topics: vec!["a".into()], duration_seconds: 60.0, upload_ms: 1 }
    }

    #[test]
    fn round_trips_and_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOG_FILE);
        let catalog = Catalog::new(vec![video("x"), video("y")]).unwrap();
        catalog.write(&path).unwrap();
        let back = Catalog::read(&path).unwrap();
        assert_eq!(back.videos(), catalog.videos());
        assert_eq!(back.index_of("y"), Some(1));
        assert!(back.get("z").is_none());
    }

    #[test]
    fn feature_keys_hold_the_first_topic_the_distinct_topics_sorted_and_the_field_hashes() {
        let with =
            |id: &str, topics: &[&str]| Video { topics: topics.iter().map(|t| (*t).into()).collect(), ..video(id) };
        let catalog = Catalog::new(vec![
            Video { duration_seconds: 90.0, upload_ms: 1_234, ..with("x", &["jazz", "blues", "jazz"]) },
            with("y", &[]),
            with("z", &["blues"]),
        ])
        .unwrap();
        let x = catalog.feature_keys(0).unwrap();
        let z = catalog.feature_keys(2).unwrap();
        let (jazz, blues) = (crate::features::topic_keys(&["jazz".into()]).0, z.primary);
        assert_eq!(x.primary, jazz, "the first topic, before sorting");
        assert_eq!(x.sorted.len(), 2, "a repeated topic counts once");
        assert!(x.sorted.is_sorted() && x.sorted.contains(&blues.unwrap()) && x.sorted.contains(&jazz.unwrap()));
        assert_eq!((x.duration_seconds, x.upload_ms), (90.0, 1_234));
        assert_eq!(x.id_hash, crate::features::field_hash("video", "x"));
        assert_eq!(x.primary_topic_hash, crate::features::field_hash("topic", "jazz"));
        let y = catalog.feature_keys(1).unwrap();
        assert_eq!((y.primary, y.sorted), (None, &[][..]));
        assert_eq!(y.primary_topic_hash, crate::features::field_hash("topic", ""), "no topic hashes as the empty one");
        assert_eq!(z.sorted, [blues.unwrap()]);
        assert_eq!(catalog.feature_keys(3), None, "past the end");
        assert_eq!(Catalog::default().feature_keys(0), None);
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOG_FILE);
        std::fs::write(&path, "{\"id\":\"a\"}\n\n{\"id\":\"b\",\"duration_seconds\":\"long\"}\n").unwrap();
        let err = Catalog::read(&path).unwrap_err().to_string();
        assert!(err.contains(":3:"), "{err}");
        std::fs::write(&path, "{\"id\":\"a\"}\n{\"id\":\"a\"}\n").unwrap();
        let err = Catalog::read(&path).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
