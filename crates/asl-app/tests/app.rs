//! The trainer end to end on small slices of the bundled data: the loss falls and accuracy
//! ends well above chance on the CPU and on the GPU, an interrupted run resumes to exactly
//! the weights of an uninterrupted one, a saved model evaluates and reads image files as
//! training saw them, and bad input is a clear error.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;

use asl_app::{ModelKind, Quiet, ScheduleKind, TrainConfig};
use common::config;
use kiln::Device;
use kiln::nn::Module;
use kiln_wgsl::testing::context_or_skip;

fn learns(config: &TrainConfig, device: &Device) {
    let history = asl_app::train(config, device, &mut Quiet).unwrap();
    let (first, last) = (&history.train[0], history.train.last().unwrap());
    assert!(last.loss < first.loss * 0.95, "loss {} -> {} on {device}", first.loss, last.loss);
    let accuracy = history.valid.last().unwrap().accuracy;
    assert!(accuracy > 2.0 / 24.0, "validation accuracy {accuracy} (chance: 1/24) on {device}");
    for file in [asl_app::CHECKPOINT, asl_app::MODEL, asl_app::METRICS] {
        assert!(config.out.join(file).is_file(), "{file}");
    }
    for (file, size) in [(asl_app::CURVES, (1000, 430)), (asl_app::CONFUSION, (906, 906))] {
        let figure = image::open(config.out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((figure.width(), figure.height()), size, "{file}");
    }
    assert!(image::open(config.out.join(asl_app::PREDICTIONS)).is_ok());
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

/// Stops a run (through its stop flag, as Ctrl-C does) once it is `after` samples into its
/// second epoch.
struct StopInSecondEpoch {
    flag: Arc<AtomicBool>,
    epoch: usize,
    after: usize,
}

impl asl_app::Observer for StopInSecondEpoch {
    fn epoch_started(&mut self, epoch: usize, _samples: usize) {
        self.epoch = epoch;
    }

    fn progress(&mut self, done: usize) {
        if self.epoch == 1 && done >= self.after {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_scheduled_run_resumes_on_its_schedule() {
    let plain = TrainConfig { weight_decay: 1e-4, ..config("unscheduled", ModelKind::Mlp, 3, 512) };
    asl_app::train(&plain, &Device::Cpu, &mut Quiet).unwrap();
    let weights = |c: &TrainConfig| std::fs::read(c.out.join(asl_app::MODEL)).unwrap();
    for kind in [ScheduleKind::Step, ScheduleKind::Cosine, ScheduleKind::OneCycle, ScheduleKind::Plateau] {
        let name = format!("{kind:?}");
        let out = config(&name, ModelKind::Mlp, 3, 512).out;
        let straight = TrainConfig { scheduler: Some(kind), out, ..plain.clone() };
        asl_app::train(&straight, &Device::Cpu, &mut Quiet).unwrap();
        // Stopped halfway through the second epoch (a per-batch schedule's middle), resumed.
        let flag = Arc::new(AtomicBool::new(false));
        let out = config(&format!("{name}-stopped"), ModelKind::Mlp, 3, 512).out;
        let stopped = TrainConfig { stop: Some(flag.clone()), out, ..straight.clone() };
        let mut observer = StopInSecondEpoch { flag, epoch: 0, after: 256 };
        let error = asl_app::train(&stopped, &Device::Cpu, &mut observer).unwrap_err();
        assert!(error.to_string().contains("interrupted in epoch 2"), "{name}: {error}");
        let resumed = TrainConfig { stop: None, resume: true, ..stopped };
        asl_app::train(&resumed, &Device::Cpu, &mut Quiet).unwrap();
        assert!(weights(&resumed) == weights(&straight), "{name}: resumed weights differ from the uninterrupted run's");
        // Three epochs are too few for a plateau of two epochs to cut the rate.
        if kind != ScheduleKind::Plateau {
            assert!(weights(&straight) != weights(&plain), "{name}: the schedule changed nothing");
        }
    }
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

/// A trained MLP's directory, shared by the eval/predict tests.
fn trained_mlp(name: &str) -> TrainConfig {
    let config = config(name, ModelKind::Mlp, 2, 2048);
    asl_app::train(&config, &Device::Cpu, &mut Quiet).unwrap();
    config
}

#[test]
fn a_saved_model_evaluates_as_its_last_epoch_did() {
    let config = trained_mlp("eval");
    let (last_epoch, _) = {
        let csv = std::fs::read_to_string(config.out.join(asl_app::METRICS)).unwrap();
        let row: Vec<f32> = csv.lines().last().unwrap().split(',').map(|f| f.parse().unwrap()).collect();
        (row[4], row)
    };
    for path in [config.out.clone(), config.out.join(asl_app::MODEL), config.out.join(asl_app::CHECKPOINT)] {
        let (model, kind) = asl_app::load_model(&path, &Device::Cpu).unwrap();
        assert_eq!((kind, model.len()), (ModelKind::Mlp, 6));
        let (matrix, valid) = asl_app::evaluate_checkpoint(&path, &config.data, &Device::Cpu, Some(2048)).unwrap();
        assert_eq!((matrix.total(), valid.len()), (2048, 2048));
        assert!((matrix.accuracy() as f32 - last_epoch).abs() < 2e-6, "{} vs {last_epoch}", matrix.accuracy());
    }
}

#[test]
fn the_best_epochs_model_is_kept() {
    // At this rate the short run's validation accuracy peaks before the last epoch (0.024,
    // 0.095, 0.087 on this build). The trajectory depends on the CPU's order of addition:
    // when a change of it makes the run peak last, pick another rate that peaks earlier.
    let mut config = config("best", ModelKind::Mlp, 3, 1024);
    config.lr = 5e-3;
    let history = asl_app::train(&config, &Device::Cpu, &mut Quiet).unwrap();
    let accuracies: Vec<f32> = history.valid.iter().map(|m| m.accuracy).collect();
    let best = accuracies.iter().copied().fold(f32::MIN, f32::max);
    assert!(best > *accuracies.last().unwrap(), "the run must peak before its end to test this: {accuracies:?}");
    let path = config.out.join(asl_app::BEST_MODEL);
    let (matrix, _) = asl_app::evaluate_checkpoint(&path, &config.data, &Device::Cpu, Some(1024)).unwrap();
    assert!((matrix.accuracy() as f32 - best).abs() < 2e-6, "{} vs the epochs' {accuracies:?}", matrix.accuracy());
}

#[test]
fn predict_reads_image_files_as_the_dataset_holds_them() {
    let config = trained_mlp("predict");
    let (_, valid) = asl_app::load_data(&config.data, Some(6)).unwrap();
    let mut paths = Vec::new();
    for i in 0..6 {
        let grey = image::GrayImage::from_raw(28, 28, valid.image(i).to_vec()).unwrap();
        let path = config.out.join(format!("sample{i}.png"));
        if i % 2 == 0 {
            grey.save(&path).unwrap();
        } else {
            image::DynamicImage::ImageLuma8(grey).to_rgb8().save(&path).unwrap(); // colour PNG of a grey image
        }
        assert_eq!(asl_app::read_image(&path).unwrap(), valid.image(i), "sample {i}");
        paths.push(path);
    }
    let big = config.out.join("big.jpg");
    image::RgbImage::from_pixel(300, 200, image::Rgb([90, 120, 200])).save(&big).unwrap();
    assert_eq!(asl_app::read_image(&big).unwrap().len(), 784, "resized to 28×28");

    let (mut model, _) = asl_app::load_model(&config.out, &Device::Cpu).unwrap();
    let predicted = asl_app::predict_images(&mut model, &paths, &Device::Cpu).unwrap();
    let loader = kiln::data::DataLoader::new(valid.clone(), 6).transform(kiln::data::Transform::to_float());
    let expected = kiln::training::predict(&mut model, loader.epoch(0).unwrap()).unwrap().predicted;
    for (p, e) in predicted.iter().zip(expected) {
        assert_eq!(p.letter, kiln::data::presets::ASL_LETTERS[e as usize]);
        assert!(p.probability >= p.runner_up.1 && p.probability <= 1.0);
    }
}

fn load_error(path: &std::path::Path) -> String {
    match asl_app::load_model(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_models_and_images_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("asl-app-bad-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let message = asl_app::read_image(&text).unwrap_err().to_string();
    assert!(message.contains("notes.png"), "{message}");
    let message = load_error(&text);
    assert!(message.contains("notes.png"), "{message}");

    // A safetensors file of some other model: named, with what it lacks.
    let mut other = kiln::nn::StateDict::new();
    other.insert("1.weight".into(), kiln::Tensor::zeros(&[10, 784], &Device::Cpu).unwrap());
    let other_path = dir.join("other.safetensors");
    kiln::nn::save_state_dict(&other, &other_path).unwrap();
    let message = load_error(&other_path);
    assert!(message.contains("other.safetensors") && message.contains("1.bias"), "{message}");
    let mut conv = kiln::nn::StateDict::new();
    conv.insert("weight".into(), kiln::Tensor::zeros(&[3], &Device::Cpu).unwrap());
    kiln::nn::save_state_dict(&conv, &other_path).unwrap();
    let message = load_error(&other_path);
    assert!(message.contains("not a checkpoint of the ASL CNN or MLP"), "{message}");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let good = config("diverging", ModelKind::Mlp, 1, 512);
    asl_app::train(&good, &Device::Cpu, &mut Quiet).unwrap();
    // Resumed at a rate that diverges at once: the checkpoint's own rate, raised.
    let path = good.out.join(asl_app::CHECKPOINT);
    let mut state = kiln::nn::load_state_dict(&path).unwrap();
    state.insert("optimizer.lr".into(), kiln::Tensor::scalar(1e30, &Device::Cpu).unwrap());
    kiln::nn::save_state_dict(&state, &path).unwrap();
    let saved = std::fs::read(&path).unwrap();
    let diverging = TrainConfig { epochs: 2, resume: true, ..good.clone() };
    let message = asl_app::train(&diverging, &Device::Cpu, &mut Quiet).unwrap_err().to_string();
    assert!(message.contains("the training loss became") && message.contains("learning rate"), "{message}");
    assert!(std::fs::read(&path).unwrap() == saved, "the good checkpoint was replaced");
}

/// On a machine without a desktop (no XDG_RUNTIME_DIR), starting Vulkan printed two
/// `error: XDG_RUNTIME_DIR is invalid …` lines from Mesa's device-selection layer before the
/// first line of asl-app's own; a short GPU run now starts quietly.
#[test]
fn a_headless_start_is_quiet() {
    if context_or_skip("asl-app quiet start").is_none() {
        return;
    }
    let out = std::env::temp_dir().join(format!("asl-app-quiet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_asl-app"))
        .args(["train", "--model", "mlp", "--epochs", "1", "--limit", "64", "--device", "gpu", "--out"])
        .arg(&out)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "asl-app failed: {stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "a noisy start: {stderr}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The facade tests' helpers: `python_has` (ONNX Runtime or TensorBoard present, or required in
/// CI) and `TensorBoardLog`.
#[path = "../../../tests/common/mod.rs"]
mod facade;

#[test]
fn an_exported_model_gives_its_logits_in_onnx_runtime() {
    const TEST: &str = "an_exported_model_gives_its_logits_in_onnx_runtime";
    if !facade::python_has(TEST, &["onnx", "onnxruntime", "numpy"]) {
        return;
    }
    let (_, valid) = asl_app::load_data(&asl_app::bundled_data(), Some(16)).unwrap();
    let pixels: Vec<f32> = valid.images().iter().map(|&p| p as f32 / 255.0).collect();
    for (name, model) in [("export-mlp", ModelKind::Mlp), ("export-cnn", ModelKind::Cnn)] {
        let run = config(name, model, 1, 256);
        asl_app::train(&run, &Device::Cpu, &mut Quiet).unwrap();
        let file = run.out.with_extension("onnx");
        let export = std::process::Command::new(env!("CARGO_BIN_EXE_asl-app"))
            .args(["export", "--checkpoint"])
            .arg(&run.out)
            .arg(&file)
            .output()
            .unwrap();
        assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));

        let (mut loaded, _) = asl_app::load_model(&run.out, &Device::Cpu).unwrap();
        let images = kiln::Tensor::from_vec(pixels.clone(), &[16, 1, 28, 28], &Device::Cpu).unwrap();
        let logits = kiln::autograd::no_grad(|| loaded.forward(&kiln::autograd::Var::constant(images)));
        let kiln = logits.unwrap().value().to_vec().unwrap();
        let (input, output) = (run.out.with_extension("in.f32"), run.out.with_extension("out.f32"));
        std::fs::write(&input, pixels.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/onnx_check.py");
        let check = std::process::Command::new("python3")
            .arg(script)
            .arg(&file)
            .arg(&input)
            .arg("16,1,28,28")
            .arg(&output)
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        let runtime: Vec<f32> =
            std::fs::read(&output).unwrap().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(runtime.len(), 16 * 24);
        for (k, r) in kiln.iter().zip(&runtime) {
            assert!((k - r).abs() <= 1e-4 * k.abs().max(1.0), "{name}: Kiln {k}, ONNX Runtime {r}");
        }
    }
}

#[test]
fn a_tensorboard_log_holds_the_run_through_its_resumptions() {
    const TEST: &str = "a_tensorboard_log_holds_the_run_through_its_resumptions";
    if !facade::python_has(TEST, &["tensorboard"]) {
        return;
    }
    // 700 images in batches of 32: 22 batches an epoch, a training-loss point every 20.
    let mut run = config("tensorboard", ModelKind::Mlp, 1, 700);
    let dir = run.out.with_extension("tb");
    let _ = std::fs::remove_dir_all(&dir);
    run.tensorboard = Some(dir.clone());
    let first = asl_app::train(&run, &Device::Cpu, &mut Quiet).unwrap();
    // What a run killed in its second epoch would have logged past its checkpoint.
    let mut killed = kiln::tensorboard::SummaryWriter::new(&dir).unwrap();
    killed.add_scalar("loss/train_step", 99.0, 40).unwrap();
    drop(killed);
    run.epochs = 2;
    run.resume = true;
    let history = asl_app::train(&run, &Device::Cpu, &mut Quiet).unwrap();
    let kept = |h: &kiln::training::History| (h.train[0].loss, h.valid[0].loss, h.valid[0].accuracy);
    assert_eq!(kept(&history), kept(&first), "the resumed run keeps the first epoch");

    let log = facade::TensorBoardLog::read(&dir);
    let per_epoch = |metrics: &[kiln::training::EpochMetrics], value: fn(&kiln::training::EpochMetrics) -> f32| {
        metrics.iter().enumerate().map(|(i, m)| (i as u64 + 1, value(m))).collect::<Vec<_>>()
    };
    assert_eq!(log.scalar("loss/train"), per_epoch(&history.train, |m| m.loss));
    assert_eq!(log.scalar("accuracy/train"), per_epoch(&history.train, |m| m.accuracy));
    assert_eq!(log.scalar("loss/valid"), per_epoch(&history.valid, |m| m.loss));
    assert_eq!(log.scalar("accuracy/valid"), per_epoch(&history.valid, |m| m.accuracy));
    assert_eq!(log.scalar("learning_rate"), [(1, 1e-3), (2, 1e-3)]);
    let steps = log.scalar("loss/train_step");
    assert_eq!(steps.iter().map(|p| p.0).collect::<Vec<_>>(), [20, 40], "{steps:?}");
    assert!(steps.iter().all(|&(_, loss)| loss > 0.0 && loss < 10.0), "the killed run's point is gone: {steps:?}");
    // The figures as the run directory has them: the curves after each epoch, the
    // predictions and the confusion matrix at the end of each of the two runs.
    let size = |file: &str| {
        let (width, height) = image::image_dimensions(run.out.join(file)).unwrap();
        [width, height]
    };
    assert_eq!(log.images["figures/curves"], [(1, size(asl_app::CURVES)), (2, size(asl_app::CURVES))]);
    for (tag, file) in [("figures/predictions", asl_app::PREDICTIONS), ("figures/confusion", asl_app::CONFUSION)] {
        assert_eq!(log.images[tag], [(1, size(file)), (2, size(file))], "{tag}");
    }

    // The command line's --tensorboard, for a third epoch.
    let third = std::process::Command::new(env!("CARGO_BIN_EXE_asl-app"))
        .args(["train", "--model", "mlp", "--device", "cpu", "--seed", "7", "--limit", "700", "--epochs", "3"])
        .arg("--resume")
        .arg("--out")
        .arg(&run.out)
        .arg("--tensorboard")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    let log = facade::TensorBoardLog::read(&dir);
    let losses = log.scalar("loss/train");
    assert_eq!(losses[..2], per_epoch(&history.train, |m| m.loss)[..]);
    let csv = std::fs::read_to_string(run.out.join(asl_app::METRICS)).unwrap();
    let third_loss: f32 = csv.lines().nth(3).unwrap().split(',').nth(1).unwrap().parse().unwrap();
    assert_eq!(losses.len(), 3);
    assert!((losses[2].1 - third_loss).abs() < 1e-6, "{losses:?} against metrics.csv's {third_loss}");
    assert_eq!(log.scalar("loss/train_step").iter().map(|p| p.0).collect::<Vec<_>>(), [20, 40, 60]);
    let _ = std::fs::remove_dir_all(&dir);
}
