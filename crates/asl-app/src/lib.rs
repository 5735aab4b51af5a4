//! The ASL alphabet trainer behind the `asl-app` binary: reading the data, building the
//! model, the epoch loop with checkpoints and resumption. The binary only parses arguments
//! and draws progress; everything here is callable (and tested) as a library.

use std::path::{Path, PathBuf};

use kiln::Device;
use kiln::data::presets::sign_language_mnist_dir;
use kiln::data::{DataLoader, ImageDataset, Transform};
use kiln::nn::{CrossEntropyLoss, Module, Seeds, Sequential, models};
use kiln::optim::Adam;
use kiln::training::{self, EpochMetrics, History, TrainError};

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

/// The model as the notebook builds it, from the run's seed.
pub fn build_model(kind: ModelKind, seed: u64) -> Result<Sequential, AppError> {
    let mut seeds = Seeds::new(seed);
    Ok(match kind {
        ModelKind::Mlp => models::asl_mlp(&mut seeds)?,
        ModelKind::Cnn => models::asl_cnn(&mut seeds, 1.0)?,
    })
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
pub const METRICS: &str = "metrics.csv";

/// Trains, writing after every epoch (each atomically) the resumable checkpoint, the model
/// alone (loadable in PyTorch) and the metrics. With `resume`, continues from the
/// checkpoint in `out` and ends with the weights an uninterrupted run would have.
pub fn train(config: &TrainConfig, device: &Device, observer: &mut dyn Observer) -> Result<History, AppError> {
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

    let transform = if config.augment {
        Transform::to_float().rotation(10.0).zoom(0.1).shift(0.1).brightness(0.2).contrast(0.5)
    } else {
        Transform::to_float()
    };
    let train_loader = if device.is_gpu() && !config.augment {
        DataLoader::resident(&train_set, config.batch_size, device)?
    } else {
        DataLoader::new(train_set, config.batch_size).to_device(device)
    }
    .shuffle(true)
    .seed(config.seed)
    .transform(transform);
    let valid_loader = if device.is_gpu() {
        DataLoader::resident(&valid_set, config.batch_size, device)?
    } else {
        DataLoader::new(valid_set, config.batch_size).to_device(device)
    }
    .transform(Transform::to_float());

    let loss_fn = CrossEntropyLoss::new();
    for epoch in history.epochs()..config.epochs {
        observer.epoch_started(epoch, train_loader.num_samples());
        let train =
            training::train_epoch(&mut model, &mut optimizer, &loss_fn, train_loader.epoch(epoch as u64)?, |done| {
                observer.progress(done)
            })?;
        let valid = training::evaluate(&mut model, &loss_fn, valid_loader.epoch(0)?)?;
        history.train.push(train);
        history.valid.push(valid);
        training::save_checkpoint(&checkpoint, &model, &optimizer, &history)?;
        kiln::nn::save(&model, &config.out.join(MODEL))?;
        write_text(&config.out.join(METRICS), &history.to_csv())?;
        observer.epoch_finished(epoch, &train, &valid);
    }
    Ok(history)
}

/// Replaces `path` with `text` through a temporary file, so it is never half-written.
fn write_text(path: &Path, text: &str) -> Result<(), AppError> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)
        .and_then(|_| std::fs::rename(&temporary, path))
        .map_err(|e| AppError::Setup(format!("{}: {e}", path.display())))
}
