//! What the facade's tests share.

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
