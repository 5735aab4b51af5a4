//! What the kiln-data tests share: where they find the shared datasets (and the policy when
//! they are missing), scratch directories, and the check of a malformed file's error.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// `KILN_DATA_DIR`, else `../shared/data` beside the checkout. `None` (after a notice) when
/// it is absent, unless `KILN_REQUIRE_DATA=1`, which turns its absence into a failure.
pub fn data_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("KILN_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("{test}: KILN_REQUIRE_DATA=1 but {} is not a directory (set KILN_DATA_DIR)", dir.display());
    }
    eprintln!("SKIPPED {test}: no dataset directory at {} (set KILN_DATA_DIR)", dir.display());
    None
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-data-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Checks that reading a malformed file failed with a message that names the file and
/// contains each of `parts`.
pub fn error_of<T: std::fmt::Debug>(result: kiln_data::Result<T>, path: &std::path::Path, parts: &[&str]) {
    let message = result.expect_err("the file is malformed").to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(message.contains(name), "{message:?} does not name {name}");
    for part in parts {
        assert!(message.contains(part), "{message:?} does not say {part:?}");
    }
}
