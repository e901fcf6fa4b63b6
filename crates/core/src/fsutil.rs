//! Crash-safe file writes, used for every file a later run reads back
//! (models, manifests, snapshots, indexes).

use std::{
    fs::{self, File},
    io::{self, Write},
    path::Path,
};

/// Writes `bytes` to `path` so that a crash leaves either the old file or the
/// new one, never a torn mix: write a temporary file in the same folder,
/// fsync it, rename it over `path`, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), writer_tag()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Distinguishes concurrent writers of one temporary name, also across
/// containers that share a volume and all run as process id 1: host name
/// (a pod's name), process id, a per-process counter and the clock.
pub fn writer_tag() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host: String = std::env::var("HOSTNAME")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{host}-{}-{n}-{nanos}", std::process::id())
}

/// The versioned directories under `root`, newest first: `read` gives each
/// visible sub-directory's `(created_ms, version, value)` when it holds a
/// complete, readable version (hidden folders — partial writes — are
/// skipped); ordered by `(created_ms, version)`, largest first.
pub fn dirs_newest_first<T>(
    root: &Path,
    mut read: impl FnMut(&Path) -> Option<(i64, String, T)>,
) -> Vec<(std::path::PathBuf, T)> {
    let Ok(entries) = fs::read_dir(root) else { return Vec::new() };
    let mut found: Vec<((i64, String), std::path::PathBuf, T)> = entries
        .flatten()
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| {
            let path = entry.path();
            read(&path).map(|(created, version, value)| ((created, version), path, value))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    found.into_iter().map(|(_, path, value)| (path, value)).collect()
}

/// The newest versioned directory under `root` (see [`dirs_newest_first`]).
pub fn newest_dir<T>(
    root: &Path,
    read: impl FnMut(&Path) -> Option<(i64, String, T)>,
) -> Option<(std::path::PathBuf, T)> {
    dirs_newest_first(root, read).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/model.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
