//! What the facade's tests share.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared datasets' root: `KILN_DATA_DIR`, else `../shared/data` beside the checkout.
/// `None` (the test then skips, saying so) when it is absent, unless `KILN_REQUIRE_DATA=1`
/// (CI) makes that a failure.
pub fn data_root(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("KILN_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("{test}: KILN_REQUIRE_DATA=1 but {} is not a directory (set KILN_DATA_DIR)", dir.display());
    }
    eprintln!("SKIPPED {test}: no dataset directory at {} (set KILN_DATA_DIR)", dir.display());
    None
}

/// Whether python3 can import every one of `modules` (the real tools a test checks Kiln's
/// files with: ONNX Runtime, TensorBoard). When it cannot, the test skips, saying so, unless
/// `KILN_REQUIRE_PYTHON=1` (CI, which installs them) makes that a failure.
pub fn python_has(test: &str, modules: &[&str]) -> bool {
    let imports = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    let found = std::process::Command::new("python3").args(["-c", &imports]).output().is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let install = format!("pip install {}", modules.join(" "));
    if std::env::var("KILN_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("{test}: KILN_REQUIRE_PYTHON=1 but python3 cannot import {modules:?} ({install})");
    }
    eprintln!("SKIPPED {test}: python3 cannot import {modules:?} ({install})");
    false
}
