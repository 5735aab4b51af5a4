//! The ASL alphabet trainer behind the `asl-app` binary: reading the data, building the
//! model, the epoch loop with checkpoints and resumption. The binary only parses arguments
//! and draws progress; everything here is callable (and tested) as a library.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln::autograd::{Var, no_grad};
use kiln::data::presets::{ASL_LETTERS, sign_language_mnist_dir};
use kiln::data::{DataLoader, ImageDataset};
use kiln::figures;
use kiln::metrics::ConfusionMatrix;
use kiln::nn::{CrossEntropyLoss, Module, Sequential};
use kiln::optim::Adam;
use kiln::optim::Optimizer;
use kiln::schedules::Schedule;
pub use kiln::schedules::ScheduleKind;
use kiln::tensorboard::RunLog;
use kiln::training::{self, EpochEnd, EpochMetrics, EpochProgress, History, MemoryUse, TrainError};
use kiln::tutorials::Tutorial;
use kiln::{Device, Tensor};

/// Which of the DLI notebooks' models to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Mlp,
    Cnn,
}

/// The processes of a data-parallel run ([`train_distributed`]): kiln's, which a build
/// without the `distributed` feature cannot make.
pub use kiln::distributed::World;

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
    /// Adam's weight decay (an L2 term, as torch.optim.Adam's `weight_decay`).
    pub weight_decay: f32,
    /// The learning-rate schedule, if any; a resumed run goes on with it where it was.
    pub scheduler: Option<ScheduleKind>,
    pub seed: u64,
    pub device: DeviceChoice,
    pub augment: bool,
    /// A directory holding `sign_mnist_train.csv[.gz]` and `sign_mnist_test.csv[.gz]`
    /// (Kaggle's labels) or `sign_mnist_valid.csv[.gz]` (DLI's, already contiguous).
    pub data: PathBuf,
    pub out: PathBuf,
    /// Continue the run whose checkpoint is in `out`.
    pub resume: bool,
    /// Clear another run's files from `out` first, rather than refuse it.
    pub overwrite: bool,
    /// Train and validate on the first this many samples only (quick runs, tests).
    pub limit: Option<usize>,
    /// Set (by a Ctrl-C handler, say) to stop after the current batch, with a checkpoint
    /// that `resume` goes on from.
    pub stop: Option<Arc<AtomicBool>>,
    /// Also log the run for TensorBoard in this directory (`kiln::tensorboard::RunLog`).
    pub tensorboard: Option<PathBuf>,
}

/// Batches between the training-loss points a TensorBoard log gets.
pub const LOG_EVERY: usize = 20;

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

    #[error(
        "interrupted in epoch {epoch} after batch {batches}; its checkpoint is in {}: \
         run the same command with --resume to go on",
        out.display()
    )]
    Interrupted { out: PathBuf, epoch: usize, batches: usize },
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
/// Held (an OS file lock) by the process training into the directory.
pub const LOCK: &str = "run.lock";
pub const MODEL: &str = "model.safetensors";
/// The model of the epoch with the best validation accuracy so far (Keras's
/// `ModelCheckpoint(save_best_only=True)`): the CNN's accuracy swings from epoch to epoch.
pub const BEST_MODEL: &str = "best_model.safetensors";
pub const METRICS: &str = "metrics.csv";
pub const CURVES: &str = "curves.png";
pub const PREDICTIONS: &str = "predictions.png";
pub const CONFUSION: &str = "confusion.png";
/// Every file of a run's, which a new run refuses to mix with its own.
pub const RUN_FILES: [&str; 7] = [CHECKPOINT, MODEL, BEST_MODEL, METRICS, CURVES, PREDICTIONS, CONFUSION];

/// A run directory held for one run: its lock, taken while this lives. The OS releases a
/// file lock when its process ends, however it ends, so the lock of a killed run is
/// simply taken over.
struct RunDir {
    _lock: File,
}

impl RunDir {
    /// Takes `config.out` for this run: refuses it while another process trains into it,
    /// and refuses another run's files there unless told to resume or overwrite them.
    fn take(config: &TrainConfig) -> Result<Self, AppError> {
        let out = &config.out;
        let setup = |what: &dyn std::fmt::Display| AppError::Setup(format!("{}: {what}", out.display()));
        std::fs::create_dir_all(out).map_err(|e| setup(&e))?;
        let lock_path = out.join(LOCK);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| setup(&e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                return Err(setup(&format!(
                    "another asl-app (process {}) is training into this directory; wait for it, or choose another --out",
                    holder.trim()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(setup(&e)),
        }
        // Ours now: say whose, for the message another process would give.
        lock.set_len(0).and_then(|_| writeln!(lock, "{}", std::process::id())).map_err(|e| setup(&e))?;
        // Half-written files of a run that was killed mid-write (`.NAME.tmp-PID`): no one
        // else writes here while we hold the lock.
        for entry in std::fs::read_dir(out).map_err(|e| setup(&e))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.')
                && entry.file_name().to_string_lossy().contains(".tmp-")
            {
                std::fs::remove_file(entry.path()).map_err(|e| setup(&e))?;
            }
        }

        if config.resume && config.overwrite {
            return Err(AppError::Setup("--resume continues a run and --overwrite replaces it: pass one".into()));
        }
        let present: Vec<&str> = RUN_FILES.iter().copied().filter(|file| out.join(file).exists()).collect();
        if !config.resume && !present.is_empty() {
            if !config.overwrite {
                return Err(setup(&format!(
                    "holds another run ({}): pass --resume to continue it, --overwrite to replace it, \
                     or choose another --out",
                    present.join(", ")
                )));
            }
            for file in present {
                std::fs::remove_file(out.join(file)).map_err(|e| setup(&e))?;
            }
        }
        Ok(Self { _lock: lock })
    }
}

/// Refuses settings that would train on nothing, naming the option; `processes` share
/// each batch.
fn check_settings(config: &TrainConfig, processes: usize) -> Result<(), AppError> {
    let refuse = |why: &str| Err(AppError::Setup(why.into()));
    if config.epochs == 0 {
        return refuse("--epochs 0: a run needs at least one epoch");
    }
    if config.batch_size == 0 {
        return refuse("--batch-size 0: a batch needs at least one sample");
    }
    if !config.batch_size.is_multiple_of(processes) {
        return refuse(&format!(
            "--batch-size {}: the {processes} processes of a distributed run share each batch equally, \
             so it must be a multiple of {processes}",
            config.batch_size
        ));
    }
    if config.limit == Some(0) {
        return refuse("--limit 0: no samples to train on");
    }
    if !(config.lr > 0.0 && config.lr.is_finite()) {
        return refuse(&format!("--lr {}: expected a number > 0", config.lr));
    }
    if !(config.weight_decay >= 0.0 && config.weight_decay.is_finite()) {
        return refuse(&format!("--weight-decay {}: expected a finite number ≥ 0", config.weight_decay));
    }
    Ok(())
}

/// Trains, writing after every epoch (each atomically) the resumable checkpoint, the model
/// alone (loadable in PyTorch), the best epoch's model when this one is the best so far,
/// the metrics and their curves; at the end, the figures of
/// the validation predictions. With `resume`, continues from the checkpoint in `out` and
/// ends with the weights an uninterrupted run would have.
pub fn train(config: &TrainConfig, device: &Device, observer: &mut dyn Observer) -> Result<History, AppError> {
    let history = run(config, device, observer, None);
    // The run's model, optimizer and loaders are gone: their pooled GPU memory goes back.
    device.release_idle_memory();
    history
}

/// [`train`] as one process of a data-parallel run (`mpirun … asl-app train
/// --distributed`): `--batch-size` is the global batch, shared equally among the processes;
/// every process starts from rank 0's model (and, resuming, from rank 0's checkpoint), takes
/// its share of each epoch, and steps with the gradients averaged over all of them, batch
/// norm and dropout computing over the global batch — the steps one process takes at that
/// batch. Only rank 0 writes the run's files. The history is the global one on every
/// process.
pub fn train_distributed(
    world: &World,
    config: &TrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<History, AppError> {
    if config.stop.is_some() {
        return Err(AppError::Setup(
            "a distributed run cannot stop after a batch with a checkpoint: its processes would have to agree \
             on the batch (stop it outright; --resume goes on from the last epoch's checkpoint)"
                .into(),
        ));
    }
    let history = run(config, device, observer, Some(world));
    device.release_idle_memory();
    history
}

fn run(
    config: &TrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
    world: Option<&World>,
) -> Result<History, AppError> {
    let (rank, processes) = world.map_or((0, 1), |world| (world.rank(), world.size()));
    check_settings(config, processes)?;
    let (train_set, valid_set) = load_data(&config.data, config.limit)?;
    // Rank 0 alone writes the run's files: it alone holds the directory.
    let _run_dir = if rank == 0 { Some(RunDir::take(config)?) } else { None };
    let mut model = build_model(config.model, config.seed)?;
    model.to_device(device)?;
    if let Some(world) = world {
        world.replicate(&mut model)?;
    }
    let tutorial = config.model.tutorial();
    let transform = if config.augment { tutorial.augmented_transform() } else { tutorial.transform() };
    let per_process = config.batch_size / processes;
    let mut train_loader =
        DataLoader::on_device(&train_set, per_process, device, transform)?.shuffle(true).seed(config.seed);
    let mut valid_loader = DataLoader::on_device(&valid_set, per_process, device, tutorial.transform())?;
    if world.is_some() {
        train_loader = train_loader.shard(rank, processes)?;
        valid_loader = valid_loader.shard_unpadded(rank, processes)?;
    }

    let parameters = model.parameters().into_iter().map(|(_, p)| p).collect();
    let mut optimizer = Adam::new(parameters, config.lr).weight_decay(config.weight_decay);
    // Made from the run's first rate, before a checkpoint sets the optimizer's current one.
    let mut schedule =
        config.scheduler.map(|kind| Schedule::new(kind, &mut optimizer, config.epochs, train_loader.len()));
    let checkpoint = config.out.join(CHECKPOINT);
    let mut history = if config.resume {
        let read = || -> Result<Vec<u8>, AppError> {
            if !checkpoint.is_file() {
                return Err(AppError::Setup(format!("--resume: no checkpoint at {}", checkpoint.display())));
            }
            std::fs::read(&checkpoint).map_err(|e| AppError::Setup(format!("{}: {e}", checkpoint.display())))
        };
        // Every process goes on from rank 0's checkpoint, which only rank 0 may be able to read.
        let bytes = match world {
            Some(world) => world.broadcast_bytes(if rank == 0 { Some(read()?) } else { None }),
            None => read()?,
        };
        let mut history = training::load_checkpoint_bytes(&bytes, &checkpoint, &mut model, &mut optimizer)?;
        if rank != 0 {
            // An interrupted epoch's figures so far are counted once, by rank 0.
            history.partial = history.partial.map(|p| EpochProgress { batches: p.batches, ..Default::default() });
        }
        history
    } else {
        History::default()
    };
    if history.epochs() >= config.epochs {
        return Err(AppError::Setup(format!(
            "{} holds a run of {} epochs already: --epochs {} leaves nothing to train (raise it to go on)",
            config.out.display(),
            history.epochs(),
            config.epochs
        )));
    }
    if let Some(schedule) = schedule.as_mut() {
        schedule.replay(&mut optimizer, &history, train_loader.len());
    }

    let loss_fn = CrossEntropyLoss::new();
    let log_error = |dir: &Path, e: std::io::Error| AppError::Setup(format!("--tensorboard {}: {e}", dir.display()));
    let mut log = match &config.tensorboard {
        Some(dir) if rank == 0 => {
            let done = history.epochs() * train_loader.len() + history.partial.map_or(0, |p| p.batches);
            Some(RunLog::new(dir, LOG_EVERY, train_loader.len(), done).map_err(|e| log_error(dir, e))?)
        }
        _ => None,
    };
    let stop = || config.stop.as_ref().is_some_and(|flag| flag.load(Ordering::SeqCst));
    for epoch in history.epochs()..config.epochs {
        observer.epoch_started(epoch, train_loader.num_samples());
        // An epoch a Ctrl-C stopped goes on from its next batch.
        let from = history.partial.take();
        let batches = train_loader.epoch_from(epoch as u64, from.map_or(0, |p| p.batches))?;
        let lr = optimizer.lr();
        let progress = |step: &training::Step| {
            observer.progress(step.samples);
            if let Some(log) = log.as_mut() {
                log.step(epoch, step);
            }
        };
        let ended = {
            let mut averaged;
            let stepped: &mut dyn Optimizer = match world {
                Some(world) => {
                    averaged = world.data_parallel(&mut optimizer);
                    &mut averaged
                }
                None => &mut optimizer,
            };
            match schedule.as_mut() {
                Some(schedule) => {
                    let mut scheduled = schedule.per_batch(stepped);
                    training::train_epoch_from(&mut model, &mut scheduled, &loss_fn, batches, progress, from, stop)?
                }
                None => training::train_epoch_from(&mut model, stepped, &loss_fn, batches, progress, from, stop)?,
            }
        };
        let train = match ended {
            EpochEnd::Finished(train) => world.map_or(train, |world| world.global(&train)),
            EpochEnd::Stopped(progress) => {
                history.partial = Some(progress);
                training::save_checkpoint(&checkpoint, &model, &optimizer, &history)?;
                return Err(AppError::Interrupted {
                    out: config.out.clone(),
                    epoch: epoch + 1,
                    batches: progress.batches,
                });
            }
        };
        let valid = training::evaluate(&mut model, &loss_fn, valid_loader.epoch(0)?)?;
        let valid = world.map_or(valid, |world| world.global(&valid));
        if let Some(schedule) = schedule.as_mut() {
            schedule.after_epoch(&mut optimizer, valid.loss);
        }
        let best_so_far = history.valid.iter().all(|earlier| valid.accuracy > earlier.accuracy);
        history.train.push(train);
        history.valid.push(valid);
        // In step with the epochs even after a checkpoint that recorded no memory.
        history.memory.resize(history.epochs() - 1, MemoryUse::default());
        history.memory.push(MemoryUse::now(device));
        if rank != 0 {
            observer.epoch_finished(epoch, &train, &valid);
            continue;
        }
        training::save_checkpoint(&checkpoint, &model, &optimizer, &history)?;
        kiln::nn::save(&model, &config.out.join(MODEL))?;
        if best_so_far {
            kiln::nn::save(&model, &config.out.join(BEST_MODEL))?;
        }
        write_text(&config.out.join(METRICS), &history.to_csv())?;
        save_figure(&figures::curves(&history), &config.out.join(CURVES))?;
        if let (Some(log), Some(dir)) = (log.as_mut(), &config.tensorboard) {
            log.epoch(&history, lr).map_err(|e| log_error(dir, e))?;
        }
        observer.epoch_finished(epoch, &train, &valid);
    }
    if rank != 0 {
        return Ok(history);
    }
    let whole_valid = DataLoader::on_device(&valid_set, per_process, device, tutorial.transform())?;
    let predictions = training::predict(&mut model, whole_valid.epoch(0)?)?;
    let matrix = predictions.confusion_matrix(valid_set.num_classes())?;
    save_figure(&figures::prediction_grid(&valid_set, &predictions.predicted), &config.out.join(PREDICTIONS))?;
    save_figure(&figures::confusion(&matrix, valid_set.class_names()), &config.out.join(CONFUSION))?;
    if let (Some(log), Some(dir)) = (log.as_mut(), &config.tensorboard) {
        log.predictions(&valid_set, &predictions, config.epochs).map_err(|e| log_error(dir, e))?;
    }
    Ok(history)
}

/// Writes a figure of the run as a PNG (the path is in the error).
pub fn save_figure(figure: &figures::Figure, path: &Path) -> Result<(), AppError> {
    figure.save(path).map_err(|e| AppError::Setup(e.to_string()))
}

/// A trained ASL model read from a file written by [`train`]: the model alone
/// (`model.safetensors`, or a PyTorch `state_dict` of the same model saved with
/// safetensors), the resumable checkpoint, or a run's output directory. Which model it
/// is (CNN or MLP) is read from its tensors.
pub fn load_model(path: &Path, device: &Device) -> Result<(Sequential, ModelKind), AppError> {
    let file = if path.is_dir() { path.join(MODEL) } else { path.to_path_buf() };
    let state = training::read_weights(&file)?;
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

/// Writes a saved model (see [`load_model`]) as an ONNX file for ONNX Runtime and other
/// runtimes: input "input" `[batch, 1, 28, 28]` (pixels scaled to [0, 1]), output "output",
/// the 24 letters' logits. Returns which model it was.
pub fn export_onnx(checkpoint: &Path, out: &Path) -> Result<ModelKind, AppError> {
    let (mut model, kind) = load_model(checkpoint, &Device::Cpu)?;
    kiln::onnx::export(&mut model, &[1, 28, 28], out).map_err(|e| AppError::Setup(e.to_string()))?;
    Ok(kind)
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
