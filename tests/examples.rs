//! The tutorial examples as a user runs them: a schedule, weight decay, the saved model and
//! figures and the per-class report; a second run started from the saved model with
//! `--load`; a model that does not fit refused by name. (cargo builds the examples for the
//! tests; their refusals of bad options are in asl-app's tests/runs.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::tutorials::Tutorial;

fn example(name: &str) -> PathBuf {
    // Beside the test binaries' directory, as cargo lays them out.
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Runs an example on the CPU on 1,000 images; its stdout, or a panic with its stderr.
fn run(name: &str, root: &Path, args: &[&str]) -> Result<String, String> {
    let data = root.join(name.parse::<Tutorial>().unwrap().dataset_dir());
    let output = Command::new(example(name))
        .args(["--device", "cpu", "--limit", "1000", "--data"])
        .arg(data)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} did not start ({e}): cargo test builds the examples"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() { Ok(stdout) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

/// The first epoch line's test accuracy.
fn first_test_accuracy(stdout: &str) -> f32 {
    let line = stdout.lines().find(|l| l.starts_with("epoch  1/")).expect("an epoch line");
    let after = line.split("test accuracy ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn an_example_schedules_saves_reports_draws_and_reloads() {
    let Some(root) = common::data_root("an_example_schedules_saves_reports_draws_and_reloads") else { return };
    let dir = common::scratch("examples", "reloads");
    let first = dir.join("first");
    let out = first.to_str().unwrap();
    let args = ["--epochs", "2", "--scheduler", "step", "--weight-decay", "1e-4", "--out", out];
    let stdout = run("fashion_mnist_mlp", &root, &args).unwrap();
    // StepLR over 2 epochs: × 0.1 after each epoch.
    assert!(stdout.contains("epoch  1/2") && stdout.contains("lr 1.000e-3"), "{stdout}");
    assert!(stdout.contains("epoch  2/2") && stdout.contains("lr 1.000e-4"), "{stdout}");
    assert!(stdout.contains("precision") && stdout.contains("macro f1"), "the per-class report: {stdout}");
    let curves = image::open(first.join("curves.png")).unwrap();
    assert_eq!((curves.width(), curves.height()), (1000, 430));
    // 10 classes of 34 pixels between the margins, as asl-app's 24 letters.
    let confusion = image::open(first.join("confusion.png")).unwrap();
    assert_eq!(confusion.height(), 70 + 10 * 34 + 20);
    assert!(confusion.width() >= confusion.height(), "room for the garments' names on the left");
    assert!(image::open(first.join("predictions.png")).is_ok());
    // PyTorch's keys, loadable into the tutorial's model.
    let model_file = first.join("model.safetensors");
    let mut model = Tutorial::FashionMnistMlp.model(0).unwrap();
    kiln::training::load_weights(&model_file, &mut model).unwrap();
    let state = kiln::nn::load_state_dict(&model_file).unwrap();
    let keys = ["1.bias", "1.weight", "3.bias", "3.weight", "5.bias", "5.weight"];
    assert_eq!(state.keys().cloned().collect::<Vec<_>>(), keys);

    // Started from the saved model, the first epoch tests better than a fresh start did.
    let model_path = model_file.to_str().unwrap();
    let again = dir.join("again");
    let reloaded =
        run("fashion_mnist_mlp", &root, &["--epochs", "1", "--load", model_path, "--out", again.to_str().unwrap()]);
    let reloaded = reloaded.unwrap();
    assert!(reloaded.contains(&format!("started from {model_path}")), "{reloaded}");
    assert!(first_test_accuracy(&reloaded) > first_test_accuracy(&stdout), "{stdout}\n{reloaded}");

    // Another tutorial's model does not fit: refused, naming the file.
    let error = run("mnist_mlp", &root, &["--epochs", "1", "--load", model_path, "--out", out]).unwrap_err();
    assert!(error.contains("model.safetensors") && error.contains("does not fit"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Keras tutorial as Keras writes it: fit's progress lines, evaluate, the best epoch's
/// checkpoint, the probability model's rows, and the saved model scoring the same reloaded.
#[test]
fn the_keras_tutorial_fits_evaluates_predicts_and_reloads() {
    let Some(root) = common::data_root("the_keras_tutorial_fits_evaluates_predicts_and_reloads") else { return };
    let dir = common::scratch("examples", "keras");
    let stdout = run("mnist_mlp", &root, &["--epochs", "2", "--out", dir.to_str().unwrap()]).unwrap();
    let epochs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("Epoch ")).collect();
    assert_eq!(epochs.len(), 2, "{stdout}");
    assert!(epochs[1].starts_with("Epoch 2/2  32/32 - ") && epochs[1].contains("- val_accuracy: "), "{stdout}");
    let value = |line: &str, key: &str| -> f32 {
        line.split(key).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    let evaluated = stdout.lines().find(|l| l.starts_with("test loss")).expect("evaluate's line");
    assert_eq!(value(evaluated, "test accuracy "), value(epochs[1], "val_accuracy: "), "{stdout}");
    // Five rows of ten probabilities, each summing to 1.
    let rows: Vec<Vec<f32>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("probabilities"))
        .skip(1)
        .take(5)
        .map(|l| l.split(':').nth(1).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    for row in &rows {
        assert_eq!(row.len(), 10);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 0.01, "{row:?}");
    }
    let reloaded = stdout.lines().find(|l| l.starts_with("reloaded from")).expect("the reloaded model's line");
    assert_eq!(value(reloaded, "test accuracy "), value(evaluated, "test accuracy "), "{stdout}");
    for file in ["model.safetensors", "best_model.safetensors", "curves.png", "predictions.png", "confusion.png"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without the `distributed` feature, `--distributed` is refused, saying how to build with it.
#[cfg(not(feature = "distributed"))]
#[test]
fn distributed_is_refused_by_a_build_without_mpi() {
    let Some(root) = common::data_root("distributed_is_refused_by_a_build_without_mpi") else { return };
    let refused = run("fashion_mnist_mlp", &root, &["--distributed"]).unwrap_err();
    assert!(refused.contains("built without MPI") && refused.contains("--features distributed"), "{refused}");
}
