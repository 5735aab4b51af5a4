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

/// A TensorBoard log directory as TensorBoard itself reads it (tests/tensorboard_read.py,
/// through the `tensorboard` package).
#[derive(Debug)]
pub struct TensorBoardLog {
    /// Each scalar tag's (step, value) points (values are logged as f32).
    pub scalars: std::collections::BTreeMap<String, Vec<(u64, f32)>>,
    /// Each image tag's (step, [width, height]) entries.
    pub images: std::collections::BTreeMap<String, Vec<(u64, [u32; 2])>>,
}

impl TensorBoardLog {
    pub fn read(dir: &std::path::Path) -> Self {
        // The facade's tests/, from the facade or from a crate that includes this module.
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("tests/tensorboard_read.py"))
            .find(|script| script.is_file())
            .expect("tests/tensorboard_read.py in the workspace");
        let run = std::process::Command::new("python3").arg(script).arg(dir).output().unwrap();
        assert!(run.status.success(), "tensorboard_read.py: {}", String::from_utf8_lossy(&run.stderr));
        let log: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let entries = |kind: &str| {
            let tags = log[kind].as_object().unwrap_or_else(|| panic!("no {kind} in {log}"));
            tags.iter().map(|(tag, entries)| (tag.clone(), entries.as_array().unwrap().clone())).collect::<Vec<_>>()
        };
        let number = |v: &serde_json::Value| v.as_f64().unwrap();
        let scalars = entries("scalars")
            .into_iter()
            .map(|(tag, points)| (tag, points.iter().map(|p| (number(&p[0]) as u64, number(&p[1]) as f32)).collect()))
            .collect();
        let images = entries("images")
            .into_iter()
            .map(|(tag, images)| {
                let sized = images.iter().map(|i| (number(&i[0]) as u64, [number(&i[1]) as u32, number(&i[2]) as u32]));
                (tag, sized.collect())
            })
            .collect();
        Self { scalars, images }
    }

    /// The points of scalar `tag` (none if it is missing).
    pub fn scalar(&self, tag: &str) -> &[(u64, f32)] {
        self.scalars.get(tag).map_or(&[], Vec::as_slice)
    }
}

/// A fresh, empty directory for one test's files, under the system's temporary directory.
pub fn scratch(prefix: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{prefix}-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}
