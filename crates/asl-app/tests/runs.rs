//! A run never trains on nothing, keeps its directory to itself, and loses nothing when it
//! is stopped: Ctrl-C checkpoints the batch it finished, SIGKILL at any moment (checkpoint
//! writes included) leaves a loadable checkpoint, and either way `--resume` ends with the
//! weights of a run never stopped. A checkpoint that cannot be written is an error that
//! leaves the previous one; memory stays flat over epochs.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use asl_app::{ModelKind, Quiet, TrainConfig};
use common::config;
use kiln::Device;
use kiln_wgsl::testing::context_or_skip;

fn error_of(config: &TrainConfig) -> String {
    asl_app::train(config, &Device::Cpu, &mut Quiet).unwrap_err().to_string()
}

/// The binary with a run's options (the MLP), on the CPU.
fn asl_app(config: &TrainConfig) -> Command {
    asl_app_on(config, "cpu")
}

fn asl_app_on(config: &TrainConfig, device: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_asl-app"));
    let limit = config.limit.expect("tests run on slices").to_string();
    let epochs = config.epochs.to_string();
    command
        .args(["train", "--model", "mlp", "--device", device, "--seed", "7", "--limit", &limit, "--epochs", &epochs]);
    command.arg("--out").arg(&config.out).stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// Every file of a directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(p).unwrap())).collect()
}

fn model_bytes(config: &TrainConfig) -> Vec<u8> {
    std::fs::read(config.out.join(asl_app::MODEL)).unwrap()
}

/// A waited-for child's output; its stderr as text.
fn finish(child: Child) -> (Output, String) {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn nothing_trains_on_nothing() {
    let base = config("nothing", ModelKind::Mlp, 1, 64);
    for (change, what) in [
        (TrainConfig { epochs: 0, ..base.clone() }, "--epochs 0"),
        (TrainConfig { limit: Some(0), ..base.clone() }, "--limit 0"),
        (TrainConfig { batch_size: 0, ..base.clone() }, "--batch-size 0"),
        (TrainConfig { weight_decay: -1.0, ..base.clone() }, "--weight-decay -1"),
        (TrainConfig { lr: 0.0, ..base.clone() }, "--lr 0"),
    ] {
        let message = error_of(&change);
        assert!(message.contains(what), "{message}");
        assert!(!base.out.join(asl_app::CHECKPOINT).exists() && !base.out.join(asl_app::PREDICTIONS).exists());
    }
    // Kaggle's two CSVs with headers and no rows.
    let empty = std::env::temp_dir().join(format!("asl-app-empty-data-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let header = format!("label,{}\n", (1..=784).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(","));
    for name in ["sign_mnist_train.csv", "sign_mnist_test.csv"] {
        std::fs::write(empty.join(name), &header).unwrap();
    }
    let message = error_of(&TrainConfig { data: empty, ..base.clone() });
    assert!(message.contains("sign_mnist_train.csv") && message.contains("no rows after the header"), "{message}");
    // A finished run resumed with no epochs left.
    asl_app::train(&base, &Device::Cpu, &mut Quiet).unwrap();
    let message = error_of(&TrainConfig { resume: true, ..base.clone() });
    assert!(message.contains("holds a run of 1 epochs already: --epochs 1 leaves nothing to train"), "{message}");
}

#[test]
fn the_examples_refuse_to_train_on_nothing() {
    // cargo builds the examples for the tests, beside the test binaries' directory.
    let examples = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples");
    let mnist = examples.join(format!("mnist_mlp{}", std::env::consts::EXE_SUFFIX));
    let refusals = [
        ("--epochs", "0", "--epochs 0"),
        ("--limit", "0", "--limit 0"),
        ("--lr", "0", "--lr 0: expected a number > 0"),
        ("--weight-decay", "-1", "--weight-decay -1: expected a finite number ≥ 0"),
        ("--scheduler", "fast", "--scheduler: \"fast\" is not a schedule"),
        ("--init", "glorot", "--init: \"glorot\" is not an initialisation"),
    ];
    for (option, value, said) in refusals {
        let run = Command::new(&mnist).args(["--data", "/unused", option, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains(said), "{stderr}");
    }
}

#[test]
fn a_run_directory_holds_one_run() {
    let first = config("one-run", ModelKind::Mlp, 1, 128);
    asl_app::train(&first, &Device::Cpu, &mut Quiet).unwrap();
    std::fs::write(first.out.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&first.out);

    let message = error_of(&TrainConfig { seed: 8, ..first.clone() });
    assert!(message.contains("holds another run (checkpoint.safetensors, model.safetensors"), "{message}");
    assert!(message.contains("--resume") && message.contains("--overwrite"), "{message}");
    assert_eq!(snapshot(&first.out), before, "a refused run changed nothing");
    let message = error_of(&TrainConfig { resume: true, overwrite: true, ..first.clone() });
    assert!(message.contains("pass one"), "{message}");

    let replacing = TrainConfig { seed: 8, overwrite: true, ..first.clone() };
    asl_app::train(&replacing, &Device::Cpu, &mut Quiet).unwrap();
    let after = snapshot(&first.out);
    let checkpoint = first.out.join(asl_app::CHECKPOINT);
    assert_ne!(after[&checkpoint], before[&checkpoint], "the new run's checkpoint");
    assert_eq!(after[&first.out.join("notes.txt")], b"mine", "files not of a run stay");
}

#[test]
fn a_second_process_is_locked_out_and_a_killed_runs_lock_is_taken_over() {
    let run = config("locked", ModelKind::Mlp, 1, 64);
    std::fs::create_dir_all(&run.out).unwrap();
    let lock_path = run.out.join(asl_app::LOCK);
    let mut held = OpenOptions::new().create(true).truncate(true).write(true).open(&lock_path).unwrap();
    held.try_lock().unwrap();
    writeln!(held, "4242").unwrap();
    let message = error_of(&run);
    assert!(message.contains("another asl-app (process 4242) is training into this directory"), "{message}");
    drop(held);
    // The file a killed run leaves names a process that no longer holds it.
    std::fs::write(&lock_path, "99999\n").unwrap();
    asl_app::train(&run, &Device::Cpu, &mut Quiet).unwrap();
}

#[test]
fn eval_and_predict_never_write_into_the_run() {
    let run = config("read-only", ModelKind::Mlp, 1, 128);
    asl_app::train(&run, &Device::Cpu, &mut Quiet).unwrap();
    let image = std::env::temp_dir().join(format!("asl-app-read-only-{}.png", std::process::id()));
    image::GrayImage::from_pixel(28, 28, image::Luma([120])).save(&image).unwrap();
    let before = snapshot(&run.out);
    let binary = env!("CARGO_BIN_EXE_asl-app");
    for args in [
        vec![
            "eval".into(),
            "--device".into(),
            "cpu".into(),
            "--limit".into(),
            "64".into(),
            "--checkpoint".into(),
            run.out.clone().into_os_string(),
        ],
        vec![
            "predict".into(),
            "--device".into(),
            "cpu".into(),
            "--checkpoint".into(),
            run.out.clone().into_os_string(),
            image.clone().into_os_string(),
        ],
    ] {
        let output = Command::new(binary).args(&args).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(snapshot(&run.out), before);
}

/// Waits until `path` exists (or panics after a minute).
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(unix)]
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_the_batch_it_finished_and_resume_goes_on_exactly() {
    let straight = config("ctrl-c-straight", ModelKind::Mlp, 3, 2048);
    asl_app::train(&straight, &Device::Cpu, &mut Quiet).unwrap();

    let stopped = config("ctrl-c", ModelKind::Mlp, 3, 2048);
    let child = asl_app(&stopped).spawn().unwrap();
    // Into the second epoch: the first one's metrics are written.
    wait_for(&stopped.out.join(asl_app::METRICS));
    std::thread::sleep(Duration::from_millis(15));
    signal(&child, libc::SIGINT);
    let (output, stderr) = finish(child);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted in epoch") && stderr.contains("--resume to go on"), "{stderr}");
    // The checkpoint holds the part of an epoch that was done.
    let state = kiln::nn::load_state_dict(&stopped.out.join(asl_app::CHECKPOINT)).unwrap();
    assert!(state.contains_key("progress.batches"), "stopped inside an epoch");

    let (output, stderr) = finish(asl_app(&stopped).arg("--resume").spawn().unwrap());
    assert!(output.status.success(), "{stderr}");
    assert!(model_bytes(&stopped) == model_bytes(&straight), "resumed weights differ from the uninterrupted run's");
}

#[cfg(unix)]
#[test]
fn killed_at_any_moment_the_run_resumes_to_the_same_weights() {
    let (epochs, limit) = (60, 512);
    let straight = config("killed-straight", ModelKind::Mlp, epochs, limit);
    asl_app::train(&straight, &Device::Cpu, &mut Quiet).unwrap();

    let killed = config("killed", ModelKind::Mlp, epochs, limit);
    let checkpoint = killed.out.join(asl_app::CHECKPOINT);
    let half_written = |dir: &Path| {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries.into_iter().any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
    };
    let (mut kills, mut during_writes, mut loaded) = (0, 0, 0);
    let mut delay = 150u64;
    while kills < 12 {
        let mut command = asl_app(&killed);
        if checkpoint.exists() {
            command.arg("--resume");
        }
        let mut child = command.spawn().unwrap();
        // The run has loaded its data and taken the directory when its pid is in the lock.
        let lock = killed.out.join(asl_app::LOCK);
        let start = Instant::now();
        while std::fs::read_to_string(&lock).map_or(true, |pid| pid.trim() != child.id().to_string()) {
            assert!(start.elapsed() < Duration::from_secs(60), "the run never took its directory");
            std::thread::sleep(Duration::from_millis(1));
        }
        if kills % 3 == 2 && checkpoint.exists() {
            // Killed the moment a checkpoint's replacement begins to be written.
            let start = Instant::now();
            while !half_written(&killed.out) && start.elapsed() < Duration::from_secs(20) {}
        } else {
            // A moment drawn from a fixed sequence, 50 to 550 ms into training.
            delay = (delay * 7919 + 104_729) % 500 + 50;
            std::thread::sleep(Duration::from_millis(delay));
        }
        child.kill().unwrap();
        let (output, stderr) = finish(child);
        assert!(!output.status.success(), "the run ended before its kill: {stderr}");
        kills += 1;
        during_writes += half_written(&killed.out) as usize;
        if checkpoint.exists() {
            kiln::nn::load_state_dict(&checkpoint).unwrap_or_else(|e| panic!("after kill {kills}: {e}"));
            loaded += 1;
        }
    }
    assert!(loaded >= 8, "only {loaded} of {kills} kills left a checkpoint: the run hardly moved");
    assert!(during_writes >= 1, "no kill landed in a checkpoint write");
    let (output, stderr) = finish(asl_app(&killed).arg("--resume").spawn().unwrap());
    assert!(output.status.success(), "{stderr}");
    assert!(!half_written(&killed.out), "the resumed run swept the half-written files");
    assert!(
        model_bytes(&killed) == model_bytes(&straight),
        "weights after {kills} kills differ from a run never killed"
    );
}

#[cfg(unix)]
#[test]
fn a_checkpoint_that_cannot_be_written_is_an_error_and_keeps_the_previous_one() {
    use std::os::unix::process::CommandExt;
    let run = config("disk-full", ModelKind::Mlp, 1, 128);
    asl_app::train(&run, &Device::Cpu, &mut Quiet).unwrap();
    let saved = std::fs::read(run.out.join(asl_app::CHECKPOINT)).unwrap();
    let mut resumed = asl_app(&TrainConfig { epochs: 2, ..run.clone() });
    resumed.arg("--resume");
    // Files may grow to 64 KiB (as on a full disk), and writing past that is an error
    // rather than a SIGXFSZ.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        resumed.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (output, stderr) = finish(resumed.spawn().unwrap());
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(asl_app::CHECKPOINT) && stderr.contains("File too large"), "{stderr}");
    assert!(std::fs::read(run.out.join(asl_app::CHECKPOINT)).unwrap() == saved, "the previous checkpoint changed");
}

/// In a process of its own (a test binary's other tests share its memory): metrics.csv's
/// peak resident and device memory, after the first epoch, grow by less than a small bound.
#[test]
fn long_runs_stay_flat() {
    let mut devices = vec!["cpu"];
    devices.extend(context_or_skip("long_runs_stay_flat").map(|_| "gpu"));
    for device in devices {
        let run = config(&format!("flat-{device}"), ModelKind::Mlp, 8, 512);
        let (output, stderr) = finish(asl_app_on(&run, device).spawn().unwrap());
        assert!(output.status.success(), "{stderr}");
        let csv = std::fs::read_to_string(run.out.join(asl_app::METRICS)).unwrap();
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().ends_with("peak_resident_mib,peak_device_mib"), "{csv}");
        let memory: Vec<(f64, f64)> = lines
            .map(|line| {
                let fields: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
                (fields[7], fields[8])
            })
            .collect();
        assert_eq!(memory.len(), 8, "one row per epoch: {csv}");
        let (first, last) = (memory[0], memory[7]);
        assert!(first.0 > 0.0 && last.0 - first.0 < 16.0, "{device}: resident MiB {first:?} -> {last:?}");
        assert!(last.1 - first.1 < 1.0, "{device}: device MiB {first:?} -> {last:?}");
        if device == "gpu" {
            assert!(first.1 > 0.0, "device memory recorded");
        }
    }
}
