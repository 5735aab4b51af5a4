//! `mpirun -np 2 asl-app train --distributed` (`--features distributed`; `.ci/run` installs
//! Open MPI): rank 0 alone writes the run's files; its first step is the single process's
//! (batch norm's statistics to the bit, every weight within lr/10 — Adam turns rounding
//! differences in the gradients into up to a full step where a gradient is near zero, and
//! the convolution biases batch norm follows have a gradient of zero but for rounding, so
//! they are left out); a resumed distributed run ends with the bits of an uninterrupted one;
//! a batch the processes cannot share is refused on every process, without hanging.
#![cfg(feature = "distributed")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use asl_app::CHECKPOINT;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("asl-app-distributed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `asl-app train` on the bundled data's first `limit` samples at a batch of `batch`, on the
/// CPU, on `processes` processes under mpirun (or plainly for 1), ended within two minutes.
fn train(processes: usize, out: &Path, sizes: (usize, usize, usize), extra: &[&str]) -> Output {
    command(processes, out, sizes, extra).output().expect("mpirun runs (apt-get install openmpi-bin)")
}

fn command(processes: usize, out: &Path, (limit, batch, epochs): (usize, usize, usize), extra: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command.arg("120");
    if processes > 1 {
        command.args(["mpirun", "-np", &processes.to_string(), "--oversubscribe"]);
    }
    command
        .arg(env!("CARGO_BIN_EXE_asl-app"))
        .args(["train", "--device", "cpu", "--batch-size", &batch.to_string(), "--seed", "3"])
        .args(["--limit", &limit.to_string()])
        .args(["--epochs", &epochs.to_string(), "--out"])
        .arg(out)
        .args(if processes > 1 { &["--distributed"][..] } else { &[] })
        .args(extra)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1");
    command
}

fn succeeded(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn state(path: &Path) -> Vec<(String, Vec<f32>)> {
    let state = kiln::nn::load_state_dict(path).unwrap();
    state.into_iter().filter(|(_, t)| t.dtype() == kiln::DType::F32).map(|(k, t)| (k, t.to_vec().unwrap())).collect()
}

#[test]
fn two_processes_take_one_process_s_first_step_and_rank_0_alone_writes() {
    let dir = scratch("first-step");
    let alone = dir.join("alone");
    succeeded(train(1, &alone, (96, 96, 1), &[]));
    let shared = dir.join("shared");
    let board = dir.join("board");
    let stdout = succeeded(train(2, &shared, (96, 96, 1), &["--tensorboard", board.to_str().unwrap()]));
    assert!(stdout.contains("2 processes, 48 samples each per step (96 in all)"), "{stdout}");
    assert!(stdout.contains("rank 1 of 2: device cpu"), "{stdout}");
    assert_eq!(stdout.matches("epoch  1/1").count(), 1, "rank 0 alone reports: {stdout}");
    for file in asl_app::RUN_FILES {
        assert!(shared.join(file).is_file(), "{file} missing: {stdout}");
    }
    let logs = std::fs::read_dir(&board).unwrap().count();
    assert_eq!(logs, 1, "one TensorBoard event file, rank 0's");

    let (one, two) = (state(&alone.join(asl_app::MODEL)), state(&shared.join(asl_app::MODEL)));
    assert_eq!(one.len(), two.len());
    // The ASL CNN's convolutions are 0, 4 and 9; batch norm follows each.
    let before_batch_norm = ["0.bias", "4.bias", "9.bias"];
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        if name.contains("running") {
            assert_eq!(a, b, "{name}: the whole batch's statistics, bit for bit");
        } else if !before_batch_norm.contains(&name.as_str()) {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{name}: off by {worst}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_resumed_distributed_run_ends_as_an_uninterrupted_one() {
    let dir = scratch("resume");
    let whole = dir.join("whole");
    succeeded(train(2, &whole, (192, 96, 2), &[]));
    let resumed = dir.join("resumed");
    succeeded(train(2, &resumed, (192, 96, 1), &[]));
    let stdout = succeeded(train(2, &resumed, (192, 96, 2), &["--resume"]));
    assert!(stdout.contains("epoch  2/2"), "{stdout}");
    // The weights, Adam's moments and rate, and the random streams; not the timings.
    let (whole, resumed) = (state(&whole.join(CHECKPOINT)), state(&resumed.join(CHECKPOINT)));
    assert_eq!(whole.len(), resumed.len());
    for ((name, a), (_, b)) in whole.iter().zip(&resumed).filter(|((name, _), _)| !name.ends_with("seconds")) {
        assert!(a == b, "{name} differs after resuming");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_the_processes_cannot_share_is_refused_on_every_process() {
    let dir = scratch("bad-batch");
    let output = train(2, &dir, (96, 33, 1), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(124), "the run hung: {stderr}");
    assert!(!output.status.success());
    assert!(stderr.contains("--batch-size 33") && stderr.contains("multiple of 2"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rank 0 alone holds the run directory, so it alone finds another run there: it ends every
/// process with that error (MPI_Abort) instead of leaving rank 1 waiting in the first
/// collective step.
#[test]
fn a_refusal_on_rank_0_alone_stops_every_process() {
    let dir = scratch("taken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(asl_app::METRICS), "epoch\n").unwrap();
    let output = train(2, &dir, (96, 96, 1), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(124), "the run hung: {stderr}");
    assert!(!output.status.success());
    assert!(stderr.contains("rank 0 of 2") && stderr.contains("holds another run"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The process of rank `rank` whose command line names `out`, from /proc.
#[cfg(target_os = "linux")]
fn process_of_rank(out: &Path, rank: usize) -> Option<i32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let named = |bytes: &[u8], text: &str| bytes.split(|&b| b == 0).any(|part| part == text.as_bytes());
        (named(&cmdline, out.to_str()?) && named(&environ, &wanted) && !named(&cmdline, "mpirun")).then_some(pid)
    })
}

/// A process killed outright (SIGKILL, as the out-of-memory killer does) cannot say
/// anything: Open MPI notices its death and ends the others, saying which rank died how.
#[cfg(target_os = "linux")]
#[test]
fn a_process_killed_by_a_signal_ends_the_run() {
    let dir = scratch("killed");
    let run = command(2, &dir, (4000, 32, 3), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun runs");
    let start = std::time::Instant::now();
    let rank_1 = loop {
        if let Some(pid) = process_of_rank(&dir, 1) {
            break pid;
        }
        assert!(start.elapsed().as_secs() < 60, "rank 1 never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Into training: its first collective steps are behind it.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: a plain kill(2) of a process this test started.
    assert_eq!(unsafe { libc::kill(rank_1, libc::SIGKILL) }, 0);
    let output = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(124), "the run hung: {stderr}");
    assert!(!output.status.success());
    assert!(stderr.contains("rank 1") && stderr.contains("signal 9"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
