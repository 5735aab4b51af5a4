//! How fast the Sign Language MNIST training CSV (27,455 rows, 83 MB) is read, as rows/s,
//! plain and gzipped; and, where Python has pandas, the same file through `pandas.read_csv`
//! in the same run, with the ratio.
//!
//! `cargo bench -p kiln-data --bench read_csv` (KILN_DATA_DIR points at the datasets;
//! default ../shared/data beside the checkout).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_data::presets::{AslLabels, sign_language_mnist};

const RUNS: usize = 3;

/// Best of `RUNS` wall-clock seconds.
fn best_of(mut run: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut rows = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        rows = run();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, rows)
}

fn pandas_seconds(path: &Path) -> Option<f64> {
    let script = format!(
        "import time, pandas\nbest = 1e9\nfor _ in range({RUNS}):\n    t = time.perf_counter()\n    frame = pandas.read_csv({:?})\n    best = min(best, time.perf_counter() - t)\nassert len(frame) == 27455\nprint(best)",
        path.display().to_string()
    );
    let out = Command::new("python3").args(["-c", &script]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let dir = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let gz = dir.join("sign-language-mnist/sign_mnist_train.csv.gz");
    if !gz.is_file() {
        eprintln!("read_csv bench: {} not found; set KILN_DATA_DIR", gz.display());
        return;
    }
    let plain = std::env::temp_dir().join("kiln-bench-sign_mnist_train.csv");
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&gz).unwrap()).read_to_end(&mut text).unwrap();
    std::fs::write(&plain, &text).unwrap();

    println!("Sign Language MNIST train CSV ({} MB uncompressed), best of {RUNS}:", text.len() / 1_000_000);
    for (label, path) in [("csv", &plain), ("csv.gz", &gz)] {
        let (kiln, rows) = best_of(|| sign_language_mnist(path, AslLabels::Kaggle).unwrap().len());
        print!("  {label:7} kiln-data {kiln:6.3} s  {:>9.0} rows/s", rows as f64 / kiln);
        match pandas_seconds(path) {
            Some(pandas) => println!(
                "   pandas {pandas:6.3} s  {:>9.0} rows/s   kiln {:.1}x faster",
                rows as f64 / pandas,
                pandas / kiln
            ),
            None => println!("   (pandas not installed: no comparison)"),
        }
    }
    let _ = std::fs::remove_file(plain);
}
