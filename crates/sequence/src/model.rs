//! The sequence-model contract: what the trainer writes and the generator
//! loads, one directory per model version.
//!
//! ```text
//! <data>/sequence/<version>/
//!   manifest.json         SequenceManifest (written last: a directory without it is incomplete)
//!   encoder.onnx          history → user vector
//!   videos.txt            the vocabulary: one video id per line; line i is row i
//!   video_embeddings.f32  videos × dim little-endian f32, row i = line i, unit length
//! ```
//!
//! **Encoder.** Input [`HISTORY_INPUT`]: `int64 [batch, history_len]`, a
//! user's most recent watches oldest first and *left*-padded, each entry a
//! vocabulary row + 1, with 0 as padding (so the most recent watch is
//! always the last column). Output [`USER_OUTPUT`]: `float [batch, dim]`,
//! unit length. Scores are inner products of the user vector with the
//! video embeddings (cosine, both being unit length), which is what the
//! nearest-neighbour index searches.
//!
//! A directory is written into a hidden sibling and renamed into place
//! ([`write_model_dir`]), so a reader sees a whole model or none.

use std::{
    collections::HashSet,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use watchnext_core::ids::VideoId;

/// The encoder graph.
pub const ENCODER_FILE: &str = "encoder.onnx";
/// The vocabulary.
pub const VIDEOS_FILE: &str = "videos.txt";
/// The video embeddings.
pub const EMBEDDINGS_FILE: &str = "video_embeddings.f32";
/// The manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The encoder's input.
pub const HISTORY_INPUT: &str = "history";
/// The encoder's output.
pub const USER_OUTPUT: &str = "user";
/// The manifest format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Why a model directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.display().to_string(), source }
}

fn invalid(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid { path: path.display().to_string(), reason: reason.into() }
}

/// What a sequence model is and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceManifest {
    /// [`FORMAT`].
    pub format: u32,
    pub version: String,
    /// Unix milliseconds; the newest directory is the one served.
    pub created_ms: i64,
    /// Length of a user vector and of each video embedding.
    pub dim: usize,
    /// Columns of the encoder's input.
    pub history_len: usize,
    /// Rows of the vocabulary and of the embeddings.
    pub videos: usize,
    /// Training data, schedule and validation metrics, as the trainer
    /// reports them (free-form: for people and reports).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl SequenceManifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let m: Self = serde_json::from_str(&text).map_err(|e| invalid(&path, e.to_string()))?;
        if m.format != FORMAT {
            return Err(invalid(&path, format!("format {} (this build reads format {FORMAT})", m.format)));
        }
        if m.dim == 0 || m.history_len == 0 || m.videos == 0 {
            return Err(invalid(&path, "dim, history_len and videos must all be positive"));
        }
        Ok(m)
    }
}

/// A whole model directory in memory.
#[derive(Debug, Clone)]
pub struct SequenceModel {
    pub dir: PathBuf,
    pub manifest: SequenceManifest,
    pub encoder: Vec<u8>,
    /// Row `i` of the embeddings.
    pub videos: Vec<VideoId>,
    /// `videos.len() × dim`, row-major, unit-length rows.
    pub embeddings: Vec<f32>,
}

impl SequenceModel {
    /// Reads and checks a model directory: the vocabulary has `videos`
    /// unique valid ids, the embeddings file has exactly `videos × dim`
    /// finite floats.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let manifest = SequenceManifest::read(dir)?;
        let encoder_path = dir.join(ENCODER_FILE);
        let encoder = fs::read(&encoder_path).map_err(io_err(&encoder_path))?;
        let videos_path = dir.join(VIDEOS_FILE);
        let text = fs::read_to_string(&videos_path).map_err(io_err(&videos_path))?;
        let mut videos = Vec::with_capacity(manifest.videos);
        let mut seen = HashSet::with_capacity(manifest.videos);
        for (i, line) in text.lines().enumerate() {
            let id =
                VideoId::parse("video id", line).map_err(|e| invalid(&videos_path, format!("line {}: {e}", i + 1)))?;
            if !seen.insert(id.clone()) {
                return Err(invalid(&videos_path, format!("line {}: video {line:?} appears twice", i + 1)));
            }
            videos.push(id);
        }
        if videos.len() != manifest.videos {
            return Err(invalid(
                &videos_path,
                format!("{} ids, the manifest says {} videos", videos.len(), manifest.videos),
            ));
        }
        let emb_path = dir.join(EMBEDDINGS_FILE);
        let bytes = fs::read(&emb_path).map_err(io_err(&emb_path))?;
        let expected = manifest.videos * manifest.dim * 4;
        if bytes.len() != expected {
            return Err(invalid(
                &emb_path,
                format!(
                    "{} bytes; {} videos × {} dims of f32 are {expected} bytes",
                    bytes.len(),
                    manifest.videos,
                    manifest.dim
                ),
            ));
        }
        let embeddings: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(i) = embeddings.iter().position(|x| !x.is_finite()) {
            return Err(invalid(&emb_path, format!("video {} holds a non-finite value", i / manifest.dim)));
        }
        Ok(Self { dir: dir.to_owned(), manifest, encoder, videos, embeddings })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut file = fs::File::create(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Writes a model directory crash-safely: every file into a hidden sibling
/// folder, fsynced, the manifest last, then the folder renamed to `dir`
/// (which must not exist yet) and the parent fsynced.
pub fn write_model_dir(
    dir: &Path,
    manifest: &SequenceManifest,
    encoder: &[u8],
    videos: &[VideoId],
    embeddings: &[f32],
) -> Result<(), ModelError> {
    if videos.len() != manifest.videos || embeddings.len() != manifest.videos * manifest.dim {
        return Err(invalid(dir, "videos and embeddings do not match the manifest"));
    }
    if dir.exists() {
        return Err(invalid(dir, "already exists; choose another version or directory"));
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dir.file_name().ok_or_else(|| invalid(dir, "has no folder name"))?;
    let staging = parent.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        write_synced(&staging.join(ENCODER_FILE), encoder)?;
        let mut text = String::with_capacity(videos.len() * 12);
        for v in videos {
            text.push_str(v.as_str());
            text.push('\n');
        }
        write_synced(&staging.join(VIDEOS_FILE), text.as_bytes())?;
        let bytes: Vec<u8> = embeddings.iter().flat_map(|x| x.to_le_bytes()).collect();
        write_synced(&staging.join(EMBEDDINGS_FILE), &bytes)?;
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| invalid(dir, e.to_string()))?;
        write_synced(&staging.join(MANIFEST_FILE), &json)?;
        fs::File::open(&staging).and_then(|f| f.sync_all()).map_err(io_err(&staging))?;
        fs::rename(&staging, dir).map_err(io_err(dir))?;
        fs::File::open(parent).and_then(|f| f.sync_all()).map_err(io_err(parent))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// The complete model directories under `root`, newest first by the
/// manifest's `created_ms` (directories without a readable manifest are
/// skipped).
pub fn model_dirs(root: &Path) -> Vec<(PathBuf, SequenceManifest)> {
    watchnext_core::fsutil::dirs_newest_first(root, |dir| {
        SequenceManifest::read(dir).ok().map(|m| (m.created_ms, m.version.clone(), m))
    })
}

/// The newest complete model directory under `root` (see [`model_dirs`]).
pub fn newest_model_dir(root: &Path) -> Option<(PathBuf, SequenceManifest)> {
    model_dirs(root).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(videos: usize, dim: usize) -> SequenceManifest {
        SequenceManifest {
            format: FORMAT,
            version: "v1".into(),
            created_ms: 1,
            dim,
            history_len: 4,
            videos,
            training: serde_json::Value::Null,
        }
    }

    fn ids(n: usize) -> Vec<VideoId> {
        (0..n).map(|i| VideoId::parse("v", &format!("v{i}")).unwrap()).collect()
    }

    #[test]
    fn a_written_directory_reads_back_whole_and_leaves_no_staging_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("v1");
        let emb: Vec<f32> = (0..6).map(|i| i as f32).collect();
        write_model_dir(&dir, &manifest(3, 2), b"onnx", &ids(3), &emb).unwrap();
        let m = SequenceModel::read(&dir).unwrap();
        assert_eq!(m.embeddings, emb);
        assert_eq!(m.videos, ids(3));
        assert_eq!(m.encoder, b"onnx");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
        assert_eq!(newest_model_dir(root.path()).unwrap().0, dir);
        // A second write to the same version is refused, not merged.
        assert!(write_model_dir(&dir, &manifest(3, 2), b"x", &ids(3), &emb).is_err());
    }

    #[test]
    fn truncated_or_inconsistent_files_are_refused_with_the_file_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("v1");
        write_model_dir(&dir, &manifest(3, 2), b"onnx", &ids(3), &[0.0; 6]).unwrap();
        fs::write(dir.join(EMBEDDINGS_FILE), [0u8; 20]).unwrap();
        let err = SequenceModel::read(&dir).unwrap_err().to_string();
        assert!(err.contains(EMBEDDINGS_FILE) && err.contains("24 bytes"), "{err}");
        fs::write(dir.join(EMBEDDINGS_FILE), [0u8; 24]).unwrap();
        fs::write(dir.join(VIDEOS_FILE), "v0\nv1\nv1\n").unwrap();
        let err = SequenceModel::read(&dir).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("twice"), "{err}");
        fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        assert!(newest_model_dir(root.path()).is_none());
    }
}
