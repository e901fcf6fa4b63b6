//! Model manifests: arbitrary `manifest.json` contents are read and checked
//! against this build's schema as the ranker does before loading a model.
//! Never a panic; a manifest that passes the check survives a write and a
//! read unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watchnext_core::{features::FeatureSchema, model::ModelManifest};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("manifest.json"), data).expect("write");
    let Ok(manifest) = ModelManifest::read(dir.path()) else { return };
    if manifest.check(&FeatureSchema::default()).is_ok() {
        let again = tempfile::tempdir().expect("tempdir");
        manifest.write(again.path()).expect("a checked manifest can be written");
        let back = ModelManifest::read(again.path()).expect("and read back");
        assert_eq!(back, manifest);
    }
});
