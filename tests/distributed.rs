//! Data-parallel training over MPI (`--features distributed`): the data_parallel example run
//! by `mpirun` with 2 and 3 processes ends with the weights one process reaches at the same
//! global batch on the same global order, and every process holds the same bits; a process
//! that fails ends the run with its error instead of leaving the others waiting. `.ci/run`
//! installs Open MPI and builds the example before running this file.
//!
//! The tolerances: the quickstart MLP after 10 SGD steps, within 1e-5 (the gradients are
//! summed in another order, nothing more). The ASL CNN after 10 steps, within 2e-3: its
//! batch norm and dropout see the whole global batch, as they would in one process, and its
//! first steps agree to rounding (1e-8), but a rounding difference can tip a max-pool window
//! or a ReLU to the other side, which moves a weight by about a learning rate times a
//! gradient entry (4e-4 measured). Batch norm over each process's share alone, as DDP does
//! without SyncBatchNorm, is off by 4e-2.
#![cfg(feature = "distributed")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    example_named("data_parallel")
}

fn example_named(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples").join(name);
    assert!(path.is_file(), "{} is missing: cargo build --features distributed --examples", path.display());
    path
}

/// Runs the example on `processes` processes (plainly for 1) with `args`, returning its output.
fn run(processes: usize, args: &[&str], out: &Path) -> String {
    let mut command = if processes == 1 {
        Command::new(example())
    } else {
        let mut mpirun = Command::new("mpirun");
        mpirun.args(["-np", &processes.to_string(), "--oversubscribe"]).arg(example());
        mpirun
    };
    let output = command
        .args(args)
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
    state
        .into_iter()
        .filter(|(_, t)| t.dtype() == kiln::DType::F32)
        .map(|(name, t)| (name, t.to_vec().unwrap()))
        .collect()
}

/// 10 steps at a global batch of 96 on 1, 2 and 3 processes: the same weights, within
/// `tolerance`, and the same bits on every process.
fn processes_train_as_one(what: &str, args: &[&str], tolerance: f32) {
    let dir = common::scratch("distributed", what);
    let args: Vec<&str> = ["--limit", "960", "--batch-size", "96"].iter().chain(args).copied().collect();
    run(1, &args, &dir.join("one"));
    let alone = weights(&dir.join("one"));
    for processes in [2, 3] {
        let out = dir.join(format!("np{processes}"));
        let stdout = run(processes, &args, &out);
        // Every process reports the same hash of its weights.
        let hashes: Vec<&str> = stdout.lines().filter_map(|l| l.split("weights ").nth(1)?.split(';').next()).collect();
        assert_eq!(hashes.len(), processes, "{stdout}");
        assert!(hashes.iter().all(|h| *h == hashes[0]), "processes diverged: {stdout}");
        let shared = weights(&out);
        assert_eq!(shared.len(), alone.len());
        for ((name, shared), (_, single)) in shared.iter().zip(&alone) {
            let worst = shared.iter().zip(single).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < tolerance, "{what}, {processes} processes, {name}: off by {worst}");
        }
        assert!(stdout.contains(&format!("{processes} processes, {} images each", 96 / processes)), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn processes_train_the_mnist_mlp_as_one_process_with_the_whole_batch() {
    let Some(root) = common::data_root("processes_train_the_mnist_mlp_as_one_process_with_the_whole_batch") else {
        return;
    };
    let data = root.join("mnist");
    processes_train_as_one("mnist-mlp", &["--sgd", "0.05", "--data", data.to_str().unwrap()], 1e-5);
}

#[test]
fn processes_train_the_asl_cnn_as_one_process_with_the_whole_batch() {
    let Some(root) = common::data_root("processes_train_the_asl_cnn_as_one_process_with_the_whole_batch") else {
        return;
    };
    let data = root.join("sign-language-mnist");
    let args = ["--model", "asl-cnn", "--sgd", "0.01", "--data", data.to_str().unwrap()];
    processes_train_as_one("asl-cnn", &args, 2e-3);
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

/// Two processes on the GPU (each its own adapter, or the one `KILN_ADAPTER` names: lavapipe
/// in CI): batch norm's gather and the gradient average go through host memory, and 2 SGD
/// steps of the ASL CNN end within 1e-4 of one process on the CPU (GPU and CPU kernels agree
/// to ~1e-6 an op).
#[test]
fn processes_on_the_gpu_train_as_one_process_on_the_cpu() {
    let test = "processes_on_the_gpu_train_as_one_process_on_the_cpu";
    let Some(root) = common::data_root(test) else { return };
    if kiln::wgsl::testing::context_or_skip(test).is_none() {
        return;
    }
    let dir = common::scratch("distributed", "gpu");
    let data = root.join("sign-language-mnist");
    let args = ["--model", "asl-cnn", "--sgd", "0.01", "--limit", "192", "--batch-size", "96", "--data"];
    let args: Vec<&str> = args.iter().copied().chain([data.to_str().unwrap()]).collect();
    run(1, &[&args[..], &["--device", "cpu"]].concat(), &dir.join("cpu"));
    let adapter = std::env::var(kiln::wgsl::ADAPTER_ENV).unwrap_or_else(|_| "best".into());
    let output = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "-x", &format!("{}={adapter}", kiln::wgsl::ADAPTER_ENV)])
        .arg(example())
        .args(&args)
        .args(["--device", "gpu", "--out"])
        .arg(dir.join("gpu"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("mpirun runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let devices: Vec<&str> = stdout.lines().filter(|l| l.contains(": device ")).collect();
    assert_eq!(devices.len(), 2, "{stdout}");
    assert!(devices.iter().all(|l| !l.ends_with("device cpu")), "{stdout}");
    for ((name, gpu), (_, cpu)) in weights(&dir.join("gpu")).iter().zip(&weights(&dir.join("cpu"))) {
        let worst = gpu.iter().zip(cpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{name}: off by {worst}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Example `name` with `args` on `processes` processes (with `--distributed` when several),
/// ended within five minutes; its stdout.
fn run_example(name: &str, processes: usize, args: &[&str], out: &Path) -> String {
    let mut command = Command::new("timeout");
    command.arg("300");
    if processes > 1 {
        command.args(["mpirun", "-np", &processes.to_string(), "--oversubscribe"]);
    }
    command.arg(example_named(name)).args(args).args(["--device", "cpu", "--out"]).arg(out);
    if processes > 1 {
        command.arg("--distributed");
    }
    let output = command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("mpirun runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Every tensor of `file` in `one` and `two` within `tolerance`.
fn same_weights(one: &Path, two: &Path, file: &str, tolerance: f32) {
    let (a, b) =
        (kiln::nn::load_state_dict(&one.join(file)).unwrap(), kiln::nn::load_state_dict(&two.join(file)).unwrap());
    assert_eq!(a.len(), b.len());
    for (name, x) in a.iter().filter(|(_, x)| x.dtype() == kiln::DType::F32) {
        let (x, y) = (x.to_vec().unwrap(), b[name].to_vec().unwrap());
        let worst = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(worst < tolerance, "{file}, {name}: off by {worst}");
    }
}

/// A tutorial example under `mpirun -np 2 … --distributed`: rank 0 alone reports and saves,
/// its report covers the whole test set, and its weights are one process's after the same
/// steps (4 Adam steps at the tutorial's batch of 256 with dropout: within lr/10, as Adam
/// turns rounding differences in near-zero gradients into larger steps; 3e-5 measured).
#[test]
fn a_tutorial_example_trains_on_two_processes_as_on_one() {
    let Some(root) = common::data_root("a_tutorial_example_trains_on_two_processes_as_on_one") else { return };
    let dir = common::scratch("distributed", "fashion-cnn");
    let data = root.join("fashion-mnist");
    let args = ["--limit", "512", "--epochs", "2", "--data", data.to_str().unwrap()];
    let alone = run_example("fashion_mnist_cnn", 1, &args, &dir.join("one"));
    let shared = run_example("fashion_mnist_cnn", 2, &args, &dir.join("two"));
    for stdout in [&alone, &shared] {
        assert_eq!(stdout.matches("epoch  2/2").count(), 1, "one report: {stdout}");
        assert_eq!(stdout.matches("saved the model").count(), 1, "{stdout}");
        // The per-class report is over the whole test set, not rank 0's share.
        let accuracy = stdout.lines().find(|line| line.trim_start().starts_with("accuracy")).unwrap_or_default();
        assert!(accuracy.ends_with(" 512"), "{stdout}");
    }
    same_weights(&dir.join("one"), &dir.join("two"), "model.safetensors", 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Keras quickstart (`Model::fit_distributed`) on 2 processes: one progress report, the
/// global test figures (the reloaded model, evaluated on rank 0 alone over the whole test
/// set, scores what `evaluate_distributed` reported), one process's weights after 4 steps.
#[test]
fn the_keras_example_trains_on_two_processes_as_on_one() {
    let Some(root) = common::data_root("the_keras_example_trains_on_two_processes_as_on_one") else { return };
    let dir = common::scratch("distributed", "keras");
    let data = root.join("mnist");
    let args = ["--limit", "128", "--epochs", "1", "--data", data.to_str().unwrap()];
    let alone = run_example("mnist_mlp", 1, &args, &dir.join("one"));
    let shared = run_example("mnist_mlp", 2, &args, &dir.join("two"));
    let accuracy = |stdout: &str, prefix: &str| -> String {
        let line = stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {stdout}"));
        line.split("test accuracy ").nth(1).unwrap().to_string()
    };
    for stdout in [&alone, &shared] {
        assert_eq!(stdout.matches("Epoch 1/1").count(), 1, "one report: {stdout}");
        assert_eq!(accuracy(stdout, "test loss"), accuracy(stdout, "reloaded from"), "{stdout}");
    }
    same_weights(&dir.join("one"), &dir.join("two"), "model.safetensors", 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// fine_tune on 2 processes: both phases data-parallel, the pretrained model sent from rank 0,
/// one report, and the pretrained weights one process's.
#[test]
fn fine_tuning_trains_on_two_processes_as_on_one() {
    let Some(root) = common::data_root("fine_tuning_trains_on_two_processes_as_on_one") else { return };
    let dir = common::scratch("distributed", "fine-tune");
    let args = ["--limit", "256", "--epochs", "1", "--data", root.to_str().unwrap()];
    let alone = run_example("fine_tune", 1, &args, &dir.join("one"));
    let shared = run_example("fine_tune", 2, &args, &dir.join("two"));
    for stdout in [&alone, &shared] {
        assert_eq!(stdout.matches("MNIST test accuracy").count(), 1, "one report: {stdout}");
        assert_eq!(stdout.matches("loaded non-strictly").count(), 1, "{stdout}");
    }
    same_weights(&dir.join("one"), &dir.join("two"), "fashion_cnn.safetensors", 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}
