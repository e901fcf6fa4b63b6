//! Finding the ONNX Runtime shared library.

use std::path::{Path, PathBuf};

use crate::OnnxError;

/// File name of the library inside the `.ort/` folder.
pub const LIBRARY_FILE: &str = "libonnxruntime.so";
/// The folder `scripts/setup.sh` unpacks the library into, at the repository root.
pub const DEFAULT_DIR: &str = ".ort";

/// Resolves the library path: `configured` (from `onnx.library_path`) if not
/// empty, else `ORT_DYLIB_PATH`, else `.ort/libonnxruntime.so` in the current
/// directory, the executable's directory or any of their ancestors (so
/// `target/release/watchnext` finds the repository's copy).
pub fn locate_library(configured: &str) -> Result<PathBuf, OnnxError> {
    let env = std::env::var("ORT_DYLIB_PATH").unwrap_or_default();
    let cwd = std::env::current_dir().ok();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    resolve(configured, &env, cwd.as_deref(), exe_dir.as_deref())
}

fn resolve(configured: &str, env: &str, cwd: Option<&Path>, exe_dir: Option<&Path>) -> Result<PathBuf, OnnxError> {
    // An explicit choice is final: falling back elsewhere would hide a typo.
    for explicit in [configured, env] {
        if !explicit.is_empty() {
            let path = PathBuf::from(explicit);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(OnnxError::LibraryNotFound { searched: path.display().to_string() })
            };
        }
    }
    let mut searched = Vec::new();
    for start in [cwd, exe_dir].into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(DEFAULT_DIR).join(LIBRARY_FILE);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate.display().to_string());
        }
    }
    if searched.is_empty() {
        searched.push(format!("{DEFAULT_DIR}/{LIBRARY_FILE}"));
    }
    Err(OnnxError::LibraryNotFound { searched: searched.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win_and_are_not_second_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so");
        std::fs::write(&lib, b"").unwrap();
        let found = resolve(lib.to_str().unwrap(), "/elsewhere.so", None, None).unwrap();
        assert_eq!(found, lib);
        let err = resolve("/no/such/lib.so", "", Some(dir.path()), None).unwrap_err().to_string();
        assert!(err.contains("/no/such/lib.so") && err.contains("scripts/setup.sh"), "{err}");
        let found = resolve("", lib.to_str().unwrap(), None, None).unwrap();
        assert_eq!(found, lib, "ORT_DYLIB_PATH is used when config is empty");
    }

    #[test]
    fn the_default_folder_is_found_from_a_nested_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".ort")).unwrap();
        std::fs::write(root.path().join(".ort/libonnxruntime.so"), b"").unwrap();
        let nested = root.path().join("target/release");
        std::fs::create_dir_all(&nested).unwrap();
        let found = resolve("", "", None, Some(&nested)).unwrap();
        assert_eq!(found, root.path().join(".ort/libonnxruntime.so"));

        let empty = tempfile::tempdir().unwrap();
        let err = resolve("", "", Some(empty.path()), None).unwrap_err().to_string();
        assert!(err.contains(".ort/libonnxruntime.so") && err.contains("ORT_DYLIB_PATH"), "{err}");
    }
}
