//! Training shaped as Keras shapes it, for users coming from TensorFlow's quickstart:
//! [`Model::compile`] a network with its optimizer (the loss is sparse categorical
//! cross-entropy on logits, the metric accuracy), then [`Model::fit`] (the history comes
//! back), [`Model::evaluate`] and [`Model::predict`]; callbacks hear of every batch and
//! epoch ([`ProgressBar`], [`ModelCheckpoint`], [`TensorBoard`]); and
//! [`Model::probability_model`] is the trained network with a [`Softmax`] appended.
//!
//! ```no_run
//! # use kiln::keras::{Model, ProgressBar};
//! # use kiln::tutorials::Tutorial;
//! # fn main() -> kiln::training::Result<()> {
//! # let (train, test): (kiln::data::DataLoader, kiln::data::DataLoader) = todo!();
//! let network = Tutorial::MnistMlp.model(0)?;
//! let optimizer = Tutorial::MnistMlp.optimizer(&network, 1e-3);
//! let mut model = Model::compile(network, optimizer);
//! let history = model.fit(&train, 5, Some(&test), &mut [&mut ProgressBar::new()])?;
//! let test_metrics = model.evaluate(&test)?;
//! let probability_model = model.probability_model();
//! # Ok(()) }
//! ```

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_autograd::{Var, no_grad};
use kiln_data::{DataLoader, ImageDataset};
use kiln_nn::{CrossEntropyLoss, Module, Sequential, Softmax};
use kiln_optim::Optimizer;
use kiln_tensor::Tensor;

use crate::distributed::World;
use crate::schedules::Schedule;
use crate::tensorboard::RunLog;
use crate::training::{self, EpochMetrics, History, Result, Step, TrainError};

/// A network compiled with its optimizer, ready to fit.
pub struct Model {
    network: Sequential,
    optimizer: Box<dyn Optimizer>,
    schedule: Option<Schedule>,
    loss: CrossEntropyLoss,
}

/// What a callback hears at the end of an epoch.
pub struct Logs<'a> {
    /// From 0.
    pub epoch: usize,
    pub epochs: usize,
    pub train: &'a EpochMetrics,
    /// The validation data's metrics, when `fit` has validation data.
    pub valid: Option<&'a EpochMetrics>,
    /// The rate the epoch trained with (its first batch's, under a per-batch schedule).
    pub lr: f32,
    pub history: &'a History,
}

/// Something that follows a fit: each hook does nothing unless implemented.
pub trait Callback {
    /// Before epoch `epoch` (from 0) of `epochs`, of `batches` batches.
    fn on_epoch_begin(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}

    /// After each batch. `step.loss` is on the device: reading it waits for the device.
    fn on_batch_end(&mut self, _epoch: usize, _step: &Step) {}

    /// After each epoch and its validation; an error stops the fit.
    fn on_epoch_end(&mut self, _logs: &Logs, _network: &mut Sequential) -> Result<()> {
        Ok(())
    }
}

impl Model {
    /// `network` trained by `optimizer` on sparse categorical cross-entropy from logits
    /// (Keras's `SparseCategoricalCrossentropy(from_logits=True)`), measured by accuracy.
    pub fn compile(network: Sequential, optimizer: Box<dyn Optimizer>) -> Self {
        Self { network, optimizer, schedule: None, loss: CrossEntropyLoss::new() }
    }

    /// Steps `schedule` as it goes (Keras's `LearningRateScheduler` callback, or a
    /// schedule given to the optimizer); a plateau watches the validation loss.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    pub fn network(&self) -> &Sequential {
        &self.network
    }

    pub fn network_mut(&mut self) -> &mut Sequential {
        &mut self.network
    }

    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }

    /// Trains for `epochs` over `train`, evaluating on `validation` (Keras's
    /// `validation_data`) after each, telling `callbacks`; returns the history.
    pub fn fit(
        &mut self,
        train: &DataLoader,
        epochs: usize,
        validation: Option<&DataLoader>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        self.fit_in(None, train, epochs, validation, callbacks)
    }

    /// [`Model::fit`] as one process of a data-parallel run (what Keras does under
    /// `tf.distribute.MultiWorkerMirroredStrategy`): `train` and `validation` load this
    /// process's shares ([`DataLoader::shard`], [`DataLoader::shard_unpadded`]), the network
    /// is a replica ([`World::replicate`]), every step averages the gradients over the
    /// processes, and the history and callbacks get the figures of all of them. Every
    /// process calls it; give callbacks that print or write on rank 0 only.
    pub fn fit_distributed(
        &mut self,
        world: &World,
        train: &DataLoader,
        epochs: usize,
        validation: Option<&DataLoader>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        self.fit_in(Some(world), train, epochs, validation, callbacks)
    }

    fn fit_in(
        &mut self,
        world: Option<&World>,
        train: &DataLoader,
        epochs: usize,
        validation: Option<&DataLoader>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        let mut history = History::default();
        for epoch in 0..epochs {
            for callback in callbacks.iter_mut() {
                callback.on_epoch_begin(epoch, epochs, train.len());
            }
            let lr = self.optimizer.lr();
            let batches = train.epoch(epoch as u64)?;
            let heard = |step: &Step| {
                for callback in callbacks.iter_mut() {
                    callback.on_batch_end(epoch, step);
                }
            };
            let (network, loss) = (&mut self.network, &self.loss);
            let metrics = {
                let mut averaged;
                let stepped: &mut dyn Optimizer = match world {
                    Some(world) => {
                        averaged = world.data_parallel(self.optimizer.as_mut());
                        &mut averaged
                    }
                    None => self.optimizer.as_mut(),
                };
                match self.schedule.as_mut() {
                    Some(schedule) => {
                        let mut scheduled = schedule.per_batch(stepped);
                        training::train_epoch(network, &mut scheduled, loss, batches, heard)?
                    }
                    None => training::train_epoch(network, stepped, loss, batches, heard)?,
                }
            };
            let metrics = world.map_or(metrics, |world| world.global(&metrics));
            let valid = validation.map(|data| self.evaluate_in(world, data)).transpose()?;
            if let Some(schedule) = self.schedule.as_mut() {
                schedule.after_epoch(self.optimizer.as_mut(), valid.unwrap_or(metrics).loss);
            }
            history.train.push(metrics);
            history.valid.extend(valid);
            let logs = Logs { epoch, epochs, train: &metrics, valid: valid.as_ref(), lr, history: &history };
            for callback in callbacks.iter_mut() {
                callback.on_epoch_end(&logs, &mut self.network)?;
            }
        }
        Ok(history)
    }

    /// The loss and accuracy over `data`, in evaluation mode.
    pub fn evaluate(&mut self, data: &DataLoader) -> Result<EpochMetrics> {
        self.evaluate_in(None, data)
    }

    /// [`Model::evaluate`] over every process's share of a data-parallel run's `data`: the
    /// figures of the whole set, on every process.
    pub fn evaluate_distributed(&mut self, world: &World, data: &DataLoader) -> Result<EpochMetrics> {
        self.evaluate_in(Some(world), data)
    }

    fn evaluate_in(&mut self, world: Option<&World>, data: &DataLoader) -> Result<EpochMetrics> {
        let metrics = training::evaluate(&mut self.network, &self.loss, data.epoch(0)?)?;
        Ok(world.map_or(metrics, |world| world.global(&metrics)))
    }

    /// The logits of a batch of images, in evaluation mode, as `model(x)` in Keras.
    pub fn predict(&mut self, images: &Tensor) -> Result<Tensor> {
        predict(&mut self.network, images)
    }

    /// The trained network with a [`Softmax`] after it, whose outputs are probabilities
    /// (Keras's `Sequential([model, Softmax()])`), in evaluation mode.
    pub fn probability_model(self) -> Sequential {
        let mut model = Sequential::new().add(self.network).add(Softmax);
        model.eval();
        model
    }
}

/// `network`'s outputs for a batch of `images`, in evaluation mode and without gradients.
pub fn predict(network: &mut dyn Module, images: &Tensor) -> Result<Tensor> {
    network.eval();
    Ok(no_grad(|| network.forward(&Var::constant(images.clone())))?.value())
}

/// Keras's progress line per epoch: a bar on a terminal while it runs, then
/// `Epoch 1/5  1875/1875 - 2.1s - loss: 0.2946 - accuracy: 0.9140 - val_loss: … - val_accuracy: …`.
pub struct ProgressBar {
    started: Instant,
    batches: usize,
    /// Draws the running bar (on standard error) only on a terminal.
    live: bool,
}

impl ProgressBar {
    pub fn new() -> Self {
        Self { started: Instant::now(), batches: 0, live: std::io::stderr().is_terminal() }
    }
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

impl Callback for ProgressBar {
    fn on_epoch_begin(&mut self, _epoch: usize, _epochs: usize, batches: usize) {
        self.started = Instant::now();
        self.batches = batches;
    }

    fn on_batch_end(&mut self, epoch: usize, step: &Step) {
        // A redraw per 1% of the epoch.
        if self.live && (step.batches * 100 / self.batches.max(1)) != ((step.batches - 1) * 100 / self.batches.max(1)) {
            let filled = 30 * step.batches / self.batches.max(1);
            let bar = format!("{}{}", "=".repeat(filled), ".".repeat(30 - filled));
            eprint!("\rEpoch {} {:>5}/{} [{bar}]", epoch + 1, step.batches, self.batches);
            let _ = std::io::stderr().flush();
        }
    }

    fn on_epoch_end(&mut self, logs: &Logs, _network: &mut Sequential) -> Result<()> {
        if self.live {
            eprint!("\r{:60}\r", "");
        }
        let mut line = format!(
            "Epoch {}/{}  {}/{} - {:.1}s - loss: {:.4} - accuracy: {:.4}",
            logs.epoch + 1,
            logs.epochs,
            self.batches,
            self.batches,
            self.started.elapsed().as_secs_f64(),
            logs.train.loss,
            logs.train.accuracy
        );
        if let Some(valid) = logs.valid {
            line += &format!(" - val_loss: {:.4} - val_accuracy: {:.4}", valid.loss, valid.accuracy);
        }
        println!("{line}");
        Ok(())
    }
}

/// Saves the network after each epoch (atomically, PyTorch's keys), or with
/// [`ModelCheckpoint::save_best_only`] only when the validation accuracy (the training
/// accuracy without validation data) is the best so far, as Keras's `ModelCheckpoint`.
pub struct ModelCheckpoint {
    path: PathBuf,
    best_only: bool,
    best: Option<f32>,
}

impl ModelCheckpoint {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), best_only: false, best: None }
    }

    pub fn save_best_only(mut self) -> Self {
        self.best_only = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, logs: &Logs, network: &mut Sequential) -> Result<()> {
        let accuracy = logs.valid.unwrap_or(logs.train).accuracy;
        if self.best_only && self.best.is_some_and(|best| accuracy <= best) {
            return Ok(());
        }
        self.best = Some(accuracy);
        Ok(kiln_nn::save(network, &self.path)?)
    }
}

/// Logs the fit for TensorBoard ([`RunLog`]): the training loss every `every` batches,
/// each epoch's losses, accuracies, rate and curves; with [`TensorBoard::with_figures`],
/// at the end the captioned validation images and the confusion matrix. Needs `fit`'s
/// validation data.
pub struct TensorBoard<'a> {
    log: RunLog,
    figures: Option<(&'a DataLoader, &'a ImageDataset)>,
}

impl<'a> TensorBoard<'a> {
    /// A log in `dir` of a fit of `batches_per_epoch` batches per epoch.
    pub fn new(dir: &Path, every: usize, batches_per_epoch: usize) -> std::io::Result<Self> {
        Ok(Self { log: RunLog::new(dir, every, batches_per_epoch, 0)?, figures: None })
    }

    /// Also draws the predictions on `dataset` (which `loader` loads) after the last epoch.
    pub fn with_figures(mut self, loader: &'a DataLoader, dataset: &'a ImageDataset) -> Self {
        self.figures = Some((loader, dataset));
        self
    }

    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

impl Callback for TensorBoard<'_> {
    fn on_batch_end(&mut self, epoch: usize, step: &Step) {
        self.log.step(epoch, step);
    }

    fn on_epoch_end(&mut self, logs: &Logs, network: &mut Sequential) -> Result<()> {
        if logs.valid.is_none() {
            return Err(TrainError::Misuse(
                "the TensorBoard callback logs validation metrics: give fit validation data".into(),
            ));
        }
        self.log.epoch(logs.history, logs.lr)?;
        if let (Some((loader, dataset)), true) = (self.figures, logs.epoch + 1 == logs.epochs) {
            let predictions = training::predict(network, loader.epoch(0)?)?;
            self.log.predictions(dataset, &predictions, logs.epochs)?;
        }
        Ok(())
    }
}
