//! The ASL alphabet trainer behind the `asl-app` binary: reading the data, building the
//! model, the epoch loop with checkpoints and resumption. The binary only parses arguments
//! and draws progress; everything here is callable (and tested) as a library.

pub mod plots;

use std::path::{Path, PathBuf};

use kiln::autograd::{Var, no_grad};
use kiln::data::presets::{ASL_LETTERS, sign_language_mnist_dir};
use kiln::data::{DataLoader, ImageDataset};
use kiln::metrics::ConfusionMatrix;
use kiln::nn::{CrossEntropyLoss, Module, Sequential};
use kiln::optim::Adam;
use kiln::training::{self, EpochMetrics, History, TrainError};
use kiln::tutorials::Tutorial;
use kiln::{Device, Tensor};

/// Which of the DLI notebooks' models to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Mlp,
    Cnn,
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when there is one, else the CPU (with a notice).
    Auto,
    Cpu,
    Gpu,
}

/// Everything a training run is made of.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub seed: u64,
    pub device: DeviceChoice,
    pub augment: bool,
    /// A directory holding `sign_mnist_train.csv[.gz]` and `sign_mnist_test.csv[.gz]`
    /// (Kaggle's labels) or `sign_mnist_valid.csv[.gz]` (DLI's, already contiguous).
    pub data: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    /// Train and validate on the first this many samples only (quick runs, tests).
    pub limit: Option<usize>,
}

/// The data bundled with the app.
pub fn bundled_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Train(#[from] TrainError),

    #[error("{0}")]
    Setup(String),
}

impl From<kiln::data::DataError> for AppError {
    fn from(e: kiln::data::DataError) -> Self {
        AppError::Train(e.into())
    }
}

impl From<kiln::nn::NnError> for AppError {
    fn from(e: kiln::nn::NnError) -> Self {
        AppError::Train(e.into())
    }
}

impl From<kiln::TensorError> for AppError {
    fn from(e: kiln::TensorError) -> Self {
        AppError::Train(e.into())
    }
}

/// The training and validation sets from `dir`, Kaggle's or DLI's copies.
pub fn load_data(dir: &Path, limit: Option<usize>) -> Result<(ImageDataset, ImageDataset), AppError> {
    let (train, valid) = sign_language_mnist_dir(dir)?;
    Ok(match limit {
        Some(n) => (train.take(n), valid.take(n)),
        None => (train, valid),
    })
}

pub fn pick_device(choice: DeviceChoice) -> Result<Device, AppError> {
    match choice {
        DeviceChoice::Auto => Ok(Device::best()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Gpu => Device::gpu().map_err(|e| AppError::Setup(format!("--device gpu: {e}"))),
    }
}

impl ModelKind {
    /// The tutorial recipe this model belongs to.
    pub fn tutorial(self) -> Tutorial {
        match self {
            ModelKind::Mlp => Tutorial::AslMlp,
            ModelKind::Cnn => Tutorial::AslCnn,
        }
    }
}

/// The model as the notebook builds it, from the run's seed.
pub fn build_model(kind: ModelKind, seed: u64) -> Result<Sequential, AppError> {
    Ok(kind.tutorial().model(seed)?)
}

/// What a run reports as it goes.
pub trait Observer {
    /// A new epoch starts (0-based) with this many training samples.
    fn epoch_started(&mut self, _epoch: usize, _samples: usize) {}
    /// Training samples done so far in this epoch.
    fn progress(&mut self, _done: usize) {}
    /// An epoch ended (0-based), its train and validation metrics.
    fn epoch_finished(&mut self, _epoch: usize, _train: &EpochMetrics, _valid: &EpochMetrics) {}
}

/// Reports nothing.
pub struct Quiet;

impl Observer for Quiet {}

/// Files a run writes in its output directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const MODEL: &str = "model.safetensors";
/// The model of the epoch with the best validation accuracy so far (Keras's
/// `ModelCheckpoint(save_best_only=True)`): the CNN's accuracy swings from epoch to epoch.
pub const BEST_MODEL: &str = "best_model.safetensors";
pub const METRICS: &str = "metrics.csv";
pub const CURVES: &str = "curves.png";
pub const PREDICTIONS: &str = "predictions.png";
pub const CONFUSION: &str = "confusion.png";

/// Trains, writing after every epoch (each atomically) the resumable checkpoint, the model
/// alone (loadable in PyTorch), the best epoch's model when this one is the best so far,
/// the metrics and their curves; at the end, the figures of
/// the validation predictions. With `resume`, continues from the checkpoint in `out` and
/// ends with the weights an uninterrupted run would have.
pub fn train(config: &TrainConfig, device: &Device, observer: &mut dyn Observer) -> Result<History, AppError> {
    let history = run(config, device, observer);
    // The run's model, optimizer and loaders are gone: their pooled GPU memory goes back.
    device.release_idle_memory();
    history
}

fn run(config: &TrainConfig, device: &Device, observer: &mut dyn Observer) -> Result<History, AppError> {
    let (train_set, valid_set) = load_data(&config.data, config.limit)?;
    std::fs::create_dir_all(&config.out).map_err(|e| AppError::Setup(format!("{}: {e}", config.out.display())))?;
    let mut model = build_model(config.model, config.seed)?;
    model.to_device(device)?;
    let parameters = model.parameters().into_iter().map(|(_, p)| p).collect();
    let mut optimizer = Adam::new(parameters, config.lr);
    let checkpoint = config.out.join(CHECKPOINT);
    let mut history = if config.resume {
        if !checkpoint.is_file() {
            return Err(AppError::Setup(format!("--resume: no checkpoint at {}", checkpoint.display())));
        }
        training::load_checkpoint(&checkpoint, &mut model, &mut optimizer)?
    } else {
        History::default()
    };

    let tutorial = config.model.tutorial();
    let transform = if config.augment { tutorial.augmented_transform() } else { tutorial.transform() };
    let train_loader =
        DataLoader::on_device(&train_set, config.batch_size, device, transform)?.shuffle(true).seed(config.seed);
    let valid_loader = DataLoader::on_device(&valid_set, config.batch_size, device, tutorial.transform())?;

    let loss_fn = CrossEntropyLoss::new();
    for epoch in history.epochs()..config.epochs {
        observer.epoch_started(epoch, train_loader.num_samples());
        let train =
            training::train_epoch(&mut model, &mut optimizer, &loss_fn, train_loader.epoch(epoch as u64)?, |done| {
                observer.progress(done)
            })?;
        let valid = training::evaluate(&mut model, &loss_fn, valid_loader.epoch(0)?)?;
        let best_so_far = history.valid.iter().all(|earlier| valid.accuracy > earlier.accuracy);
        history.train.push(train);
        history.valid.push(valid);
        training::save_checkpoint(&checkpoint, &model, &optimizer, &history)?;
        kiln::nn::save(&model, &config.out.join(MODEL))?;
        if best_so_far {
            kiln::nn::save(&model, &config.out.join(BEST_MODEL))?;
        }
        write_text(&config.out.join(METRICS), &history.to_csv())?;
        plots::curves(&history, &config.out.join(CURVES)).map_err(AppError::Setup)?;
        observer.epoch_finished(epoch, &train, &valid);
    }
    let predictions = training::predict(&mut model, valid_loader.epoch(0)?)?;
    let matrix = predictions.confusion_matrix(valid_set.num_classes())?;
    plots::prediction_grid(&valid_set, &predictions.predicted, &config.out.join(PREDICTIONS))
        .map_err(AppError::Setup)?;
    plots::confusion(&matrix, valid_set.class_names(), &config.out.join(CONFUSION)).map_err(AppError::Setup)?;
    Ok(history)
}

/// A trained ASL model read from a file written by [`train`]: the model alone
/// (`model.safetensors`, or a PyTorch `state_dict` of the same model saved with
/// safetensors), the resumable checkpoint, or a run's output directory. Which model it
/// is (CNN or MLP) is read from its tensors.
pub fn load_model(path: &Path, device: &Device) -> Result<(Sequential, ModelKind), AppError> {
    let file = if path.is_dir() { path.join(MODEL) } else { path.to_path_buf() };
    let mut state = kiln::nn::load_state_dict(&file)?;
    if state.keys().any(|k| k.starts_with("model.")) {
        state = state.into_iter().filter_map(|(k, v)| Some((k.strip_prefix("model.")?.to_string(), v))).collect();
    }
    let kind = match (state.get("0.weight"), state.get("1.weight")) {
        (Some(w), _) if w.rank() == 4 => ModelKind::Cnn,
        (_, Some(w)) if w.rank() == 2 => ModelKind::Mlp,
        _ => {
            return Err(AppError::Setup(format!(
                "{} is not a checkpoint of the ASL CNN or MLP: it has neither a convolution weight \
                 \"0.weight\" nor a linear weight \"1.weight\"",
                file.display()
            )));
        }
    };
    let mut model = build_model(kind, 0)?;
    kiln::nn::load_into(&mut model, &state).map_err(|e| AppError::Setup(format!("{}: {e}", file.display())))?;
    model.to_device(device)?;
    model.eval();
    Ok((model, kind))
}

/// The validation set's predictions by a saved model, as a confusion matrix over the
/// letters (see [`load_model`] for `checkpoint` and [`load_data`] for `data`).
pub fn evaluate_checkpoint(
    checkpoint: &Path,
    data: &Path,
    device: &Device,
    limit: Option<usize>,
) -> Result<(ConfusionMatrix, ImageDataset), AppError> {
    let (mut model, kind) = load_model(checkpoint, device)?;
    let (_, valid) = load_data(data, limit)?;
    let loader = DataLoader::on_device(&valid, 64, device, kind.tutorial().transform())?;
    let predictions = training::predict(&mut model, loader.epoch(0)?)?;
    Ok((predictions.confusion_matrix(valid.num_classes())?, valid))
}

/// The model's letter for one image, its probability and the runner-up's.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePrediction {
    pub letter: &'static str,
    pub probability: f32,
    pub runner_up: (&'static str, f32),
}

/// An image file (PNG or JPEG, any size or colour) as the 28×28 greyscale pixels the
/// models read: converted to grey, then resized when it is not 28×28 already.
pub fn read_image(path: &Path) -> Result<Vec<u8>, AppError> {
    let image = image::open(path).map_err(|e| AppError::Setup(format!("{}: {e}", path.display())))?.to_luma8();
    let image = if image.dimensions() == (28, 28) {
        image
    } else {
        image::imageops::resize(&image, 28, 28, image::imageops::FilterType::Triangle)
    };
    Ok(image.into_raw())
}

/// The letter `model` sees in each image file.
pub fn predict_images(
    model: &mut Sequential,
    paths: &[PathBuf],
    device: &Device,
) -> Result<Vec<ImagePrediction>, AppError> {
    let mut pixels = Vec::with_capacity(paths.len() * 784);
    for path in paths {
        pixels.extend(read_image(path)?.into_iter().map(|p| p as f32 / 255.0));
    }
    let images = Tensor::from_vec(pixels, &[paths.len(), 1, 28, 28], device)?;
    model.eval();
    let logits = no_grad(|| model.forward(&Var::constant(images)))?;
    let probabilities = logits.value().softmax(1)?.to_vec()?;
    Ok(probabilities
        .chunks(ASL_LETTERS.len())
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            ImagePrediction {
                letter: ASL_LETTERS[order[0]],
                probability: row[order[0]],
                runner_up: (ASL_LETTERS[order[1]], row[order[1]]),
            }
        })
        .collect())
}

/// Replaces `path` with `text` through a temporary file, so it is never half-written.
fn write_text(path: &Path, text: &str) -> Result<(), AppError> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)
        .and_then(|_| std::fs::rename(&temporary, path))
        .map_err(|e| AppError::Setup(format!("{}: {e}", path.display())))
}
