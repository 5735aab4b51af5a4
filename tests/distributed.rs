//! Data-parallel training over MPI (`--features distributed`): the data_parallel example run
//! by `mpirun` with 2 and 3 processes ends with the weights one process reaches at the same
//! global batch on the same global order (SGD with momentum, 10 steps, within 1e-5), and
//! every process holds the same bits; a process that fails ends the run with its error
//! instead of leaving the others waiting. `.ci/run` installs Open MPI and builds the example
//! before running this file.
#![cfg(feature = "distributed")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples/data_parallel");
    assert!(
        path.is_file(),
        "{} is missing: cargo build --features distributed --example data_parallel",
        path.display()
    );
    path
}

/// Runs the example on `processes` processes (plainly for 1), returning its output.
fn run(processes: usize, data: &Path, out: &Path) -> String {
    let args = ["--limit", "960", "--batch-size", "96", "--sgd", "0.05", "--data"];
    let mut command = if processes == 1 {
        Command::new(example())
    } else {
        let mut mpirun = Command::new("mpirun");
        mpirun.args(["-np", &processes.to_string(), "--oversubscribe"]).arg(example());
        mpirun
    };
    let output = command
        .args(args)
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("mpirun runs (apt-get install openmpi-bin)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn weights(out: &Path) -> Vec<(String, Vec<f32>)> {
    let state = kiln::nn::load_state_dict(&out.join("model.safetensors")).unwrap();
    state.into_iter().map(|(name, t)| (name, t.to_vec().unwrap())).collect()
}

#[test]
fn processes_train_as_one_process_with_the_whole_batch() {
    let Some(root) = common::data_root("processes_train_as_one_process_with_the_whole_batch") else { return };
    let dir = common::scratch("distributed", "equal");
    let data = root.join("mnist");
    run(1, &data, &dir.join("one"));
    let alone = weights(&dir.join("one"));
    for processes in [2, 3] {
        let out = dir.join(format!("np{processes}"));
        let stdout = run(processes, &data, &out);
        // Every process reports the same hash of its weights.
        let hashes: Vec<&str> = stdout.lines().filter_map(|l| l.split("weights ").nth(1)).collect();
        assert_eq!(hashes.len(), processes, "{stdout}");
        assert!(hashes.iter().all(|h| *h == hashes[0]), "processes diverged: {stdout}");
        for ((name, shared), (_, single)) in weights(&out).iter().zip(&alone) {
            let worst = shared.iter().zip(single).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{processes} processes, {name}: off by {worst}");
        }
        assert!(stdout.contains(&format!("{processes} processes, {} images each", 96 / processes)), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rank 1 is given a dataset directory that does not exist (mpirun's `A : B` form starts the
/// two ranks with different arguments): the run ends, within a minute rather than hanging
/// in rank 0's first collective step, with rank 1's error.
#[test]
fn a_failing_process_stops_the_run_with_its_error() {
    let Some(root) = common::data_root("a_failing_process_stops_the_run_with_its_error") else { return };
    let missing = root.join("no-such-dataset");
    let start = std::time::Instant::now();
    let output = Command::new("timeout")
        .arg("60")
        .args(["mpirun", "-np", "1"])
        .arg(example())
        .arg("--data")
        .arg(root.join("mnist"))
        .args([":", "-np", "1"])
        .arg(example())
        .arg("--data")
        .arg(&missing)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(124), "the run hung: {stderr}");
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("rank 1 of 2") && stderr.contains("no-such-dataset"), "{stderr}");
    assert!(start.elapsed().as_secs() < 60);
}
