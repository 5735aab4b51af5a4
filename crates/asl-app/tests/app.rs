//! The trainer end to end on small slices of the bundled data: the loss falls and accuracy
//! ends well above chance on the CPU and on the GPU, an interrupted run resumes to exactly
//! the weights of an uninterrupted one, and bad input is a clear error.

use std::path::PathBuf;

use asl_app::{DeviceChoice, ModelKind, Quiet, TrainConfig};
use kiln::Device;
use kiln_wgsl::testing::context_or_skip;

fn config(name: &str, model: ModelKind, epochs: usize, limit: usize) -> TrainConfig {
    let out = std::env::temp_dir().join(format!("asl-app-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    TrainConfig {
        model,
        epochs,
        batch_size: 32,
        lr: 1e-3,
        seed: 7,
        device: DeviceChoice::Cpu,
        augment: false,
        data: asl_app::bundled_data(),
        out,
        resume: false,
        limit: Some(limit),
    }
}

fn learns(config: &TrainConfig, device: &Device) {
    let history = asl_app::train(config, device, &mut Quiet).unwrap();
    let (first, last) = (&history.train[0], history.train.last().unwrap());
    assert!(last.loss < first.loss * 0.95, "loss {} -> {} on {device}", first.loss, last.loss);
    let accuracy = history.valid.last().unwrap().accuracy;
    assert!(accuracy > 2.0 / 24.0, "validation accuracy {accuracy} (chance: 1/24) on {device}");
    for file in [asl_app::CHECKPOINT, asl_app::MODEL, asl_app::METRICS] {
        assert!(config.out.join(file).is_file(), "{file}");
    }
    let csv = std::fs::read_to_string(config.out.join(asl_app::METRICS)).unwrap();
    assert_eq!(csv.lines().count(), history.epochs() + 1, "a header and one row per epoch");
}

#[test]
fn both_models_learn_on_the_cpu() {
    learns(&config("mlp-cpu", ModelKind::Mlp, 3, 4096), &Device::Cpu);
    learns(&config("cnn-cpu", ModelKind::Cnn, 3, 512), &Device::Cpu);
}

#[test]
fn both_models_learn_on_the_gpu() {
    let Some(ctx) = context_or_skip("both_models_learn_on_the_gpu") else { return };
    let gpu = Device::Gpu(ctx);
    learns(&config("mlp-gpu", ModelKind::Mlp, 4, 2048), &gpu);
    // Three epochs: batch norm's running statistics need two to settle for evaluation.
    learns(&config("cnn-gpu", ModelKind::Cnn, 3, 512), &gpu);
}

#[test]
fn a_resumed_run_ends_with_the_uninterrupted_weights() {
    // The CNN, so dropout's mask streams must resume too.
    let straight = config("straight", ModelKind::Cnn, 2, 256);
    asl_app::train(&straight, &Device::Cpu, &mut Quiet).unwrap();
    let mut interrupted = config("interrupted", ModelKind::Cnn, 1, 256);
    asl_app::train(&interrupted, &Device::Cpu, &mut Quiet).unwrap();
    interrupted.epochs = 2;
    interrupted.resume = true;
    let history = asl_app::train(&interrupted, &Device::Cpu, &mut Quiet).unwrap();
    assert_eq!(history.epochs(), 2);
    let weights = |c: &TrainConfig| std::fs::read(c.out.join(asl_app::MODEL)).unwrap();
    assert!(weights(&straight) == weights(&interrupted), "resumed weights differ from the uninterrupted run's");
}

#[test]
fn bad_input_is_a_clear_error() {
    let mut missing = config("missing", ModelKind::Mlp, 1, 64);
    missing.data = PathBuf::from("/nonexistent/asl");
    let err = asl_app::train(&missing, &Device::Cpu, &mut Quiet).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("/nonexistent/asl") && message.contains("sign_mnist_train.csv"), "{message}");
    let mut resume = config("no-checkpoint", ModelKind::Mlp, 1, 64);
    resume.resume = true;
    assert!(asl_app::train(&resume, &Device::Cpu, &mut Quiet).unwrap_err().to_string().contains("no checkpoint"));
}

#[test]
fn augmentation_trains_on_changed_images() {
    let plain = config("plain", ModelKind::Mlp, 1, 256);
    let mut augmented = config("augmented", ModelKind::Mlp, 1, 256);
    augmented.augment = true;
    let (a, b) = (
        asl_app::train(&plain, &Device::Cpu, &mut Quiet).unwrap(),
        asl_app::train(&augmented, &Device::Cpu, &mut Quiet).unwrap(),
    );
    assert!(b.train[0].loss.is_finite());
    assert_ne!(a.train[0].loss, b.train[0].loss, "augmentation changed nothing");
}
