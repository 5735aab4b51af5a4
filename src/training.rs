//! The loops every tutorial runs — an epoch of training, an evaluation pass — and a
//! checkpoint that holds everything a run needs to resume exactly where it stopped.
//!
//! Loss and accuracy are summed on the model's device and read once per epoch, so a GPU
//! never waits for the host in between.

use std::path::Path;
use std::time::Instant;

use kiln_autograd::{Var, no_grad};
use kiln_data::Batch;
use kiln_nn::{CrossEntropyLoss, Module, StateDict};
use kiln_optim::Optimizer;
use kiln_tensor::{DType, Device, Tensor, profile};

use crate::metrics::ConfusionMatrix;

/// Why a training run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),

    #[error(transparent)]
    Nn(#[from] kiln_nn::NnError),

    #[error(transparent)]
    Autograd(#[from] kiln_autograd::AutogradError),

    #[error(transparent)]
    Tensor(#[from] kiln_tensor::TensorError),

    #[error("the training loss became {0}; the learning rate may be too high")]
    NonFinite(f32),

    #[error("checkpoint: {0}")]
    Checkpoint(String),

    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// The mean loss and the accuracy of one pass over a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochMetrics {
    pub loss: f32,
    pub accuracy: f32,
    pub samples: usize,
    pub seconds: f64,
}

impl EpochMetrics {
    pub fn samples_per_second(&self) -> f64 {
        self.samples as f64 / self.seconds.max(1e-9)
    }
}

/// Sums kept on the device until the pass ends.
struct Totals {
    loss: Option<Tensor>,
    correct: Option<Tensor>,
    samples: usize,
    started: Instant,
}

impl Totals {
    fn new() -> Self {
        Self { loss: None, correct: None, samples: 0, started: Instant::now() }
    }

    /// Adds a batch: in place once the sums exist, one launch for each.
    fn add(&mut self, batch_loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let rows = labels.len();
        match &mut self.loss {
            Some(sum) => sum.accumulate(batch_loss, rows as f32)?,
            None => self.loss = Some(batch_loss.mul_scalar(rows as f32)?),
        }
        match &mut self.correct {
            Some(count) => logits.count_correct_into(labels, count)?,
            None => self.correct = Some(logits.count_correct(labels)?),
        }
        self.samples += rows;
        Ok(())
    }

    fn finish(self) -> Result<EpochMetrics> {
        let read = |t: Option<Tensor>| -> Result<f32> { Ok(t.map(|t| t.to_scalar()).transpose()?.unwrap_or(0.0)) };
        let n = self.samples.max(1) as f32;
        Ok(EpochMetrics {
            loss: read(self.loss)? / n,
            accuracy: read(self.correct)? / n,
            samples: self.samples,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// One epoch of training in training mode. `progress` hears the samples done after each
/// batch. A loss that is not finite at the end of the epoch stops the run.
pub fn train_epoch(
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
    loss_fn: &CrossEntropyLoss,
    batches: impl Iterator<Item = kiln_data::Result<Batch>>,
    mut progress: impl FnMut(usize),
) -> Result<EpochMetrics> {
    model.train();
    let mut totals = Totals::new();
    // The phases `cargo xtask bench --train --profile` reports (free when not profiling).
    profile::set_phase("data");
    for batch in batches {
        let batch = batch?;
        profile::set_phase("optimizer");
        optimizer.zero_grad();
        profile::set_phase("forward");
        let logits = model.forward(&Var::constant(batch.images))?;
        let loss = loss_fn.forward(&logits, &batch.labels)?;
        profile::set_phase("backward");
        loss.backward()?;
        profile::set_phase("optimizer");
        optimizer.step()?;
        profile::set_phase("metrics");
        totals.add(&loss.value(), &logits.value(), &batch.labels)?;
        progress(totals.samples);
        profile::set_phase("data");
    }
    profile::set_phase("metrics");
    let metrics = totals.finish()?;
    if !metrics.loss.is_finite() {
        return Err(TrainError::NonFinite(metrics.loss));
    }
    Ok(metrics)
}

/// One pass in evaluation mode without recording gradients.
pub fn evaluate(
    model: &mut dyn Module,
    loss_fn: &CrossEntropyLoss,
    batches: impl Iterator<Item = kiln_data::Result<Batch>>,
) -> Result<EpochMetrics> {
    model.eval();
    no_grad(|| {
        let mut totals = Totals::new();
        for batch in batches {
            let batch = batch?;
            let logits = model.forward(&Var::constant(batch.images))?;
            let loss = loss_fn.forward(&logits, &batch.labels)?;
            totals.add(&loss.value(), &logits.value(), &batch.labels)?;
        }
        totals.finish()
    })
}

/// Each sample's true and predicted class from one evaluation pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Predictions {
    pub labels: Vec<i32>,
    pub predicted: Vec<i32>,
}

impl Predictions {
    pub fn confusion_matrix(&self, classes: usize) -> Result<ConfusionMatrix> {
        Ok(ConfusionMatrix::from_predictions(classes, &self.labels, &self.predicted)?)
    }
}

/// The model's class (the highest logit) for every sample, in evaluation mode without
/// gradients. The per-batch predictions stay on the device until the pass ends.
pub fn predict(model: &mut dyn Module, batches: impl Iterator<Item = kiln_data::Result<Batch>>) -> Result<Predictions> {
    model.eval();
    let pending = no_grad(|| -> Result<Vec<(Tensor, Tensor)>> {
        let mut pending = Vec::new();
        for batch in batches {
            let batch = batch?;
            let logits = model.forward(&Var::constant(batch.images))?;
            pending.push((batch.labels, logits.value().argmax(1, false)?));
        }
        Ok(pending)
    })?;
    let mut predictions = Predictions::default();
    for (labels, predicted) in pending {
        predictions.labels.extend(labels.to_vec_i32()?);
        predictions.predicted.extend(predicted.to_vec_i32()?);
    }
    Ok(predictions)
}

/// Per-epoch metrics of a run so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub train: Vec<EpochMetrics>,
    pub valid: Vec<EpochMetrics>,
}

impl History {
    pub fn epochs(&self) -> usize {
        self.train.len()
    }

    /// The metrics as CSV, one row per epoch.
    pub fn to_csv(&self) -> String {
        let mut csv =
            String::from("epoch,train_loss,train_accuracy,valid_loss,valid_accuracy,seconds,samples_per_second\n");
        for (i, (t, v)) in self.train.iter().zip(&self.valid).enumerate() {
            csv.push_str(&format!(
                "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.1}\n",
                i + 1,
                t.loss,
                t.accuracy,
                v.loss,
                v.accuracy,
                t.seconds,
                t.samples_per_second()
            ));
        }
        csv
    }
}

const HISTORY_FIELDS: [&str; 8] = [
    "train_loss",
    "train_accuracy",
    "train_samples",
    "train_seconds",
    "valid_loss",
    "valid_accuracy",
    "valid_samples",
    "valid_seconds",
];

fn history_columns(history: &History) -> [Vec<f32>; 8] {
    let column = |metrics: &[EpochMetrics], f: fn(&EpochMetrics) -> f32| metrics.iter().map(f).collect::<Vec<_>>();
    let (t, v) = (&history.train, &history.valid);
    [
        column(t, |m| m.loss),
        column(t, |m| m.accuracy),
        column(t, |m| m.samples as f32),
        column(t, |m| m.seconds as f32),
        column(v, |m| m.loss),
        column(v, |m| m.accuracy),
        column(v, |m| m.samples as f32),
        column(v, |m| m.seconds as f32),
    ]
}

/// Saves, in one atomically written safetensors file, the model's state ("model." keys, as
/// PyTorch names them), the optimizer's ("optimizer."), the positions of the model's random
/// streams ("random.") and the metrics so far ("history.").
pub fn save_checkpoint(path: &Path, model: &dyn Module, optimizer: &dyn Optimizer, history: &History) -> Result<()> {
    let mut state = StateDict::new();
    for (name, t) in kiln_nn::state_dict(model)? {
        state.insert(format!("model.{name}"), t);
    }
    for (name, t) in optimizer.state()? {
        state.insert(format!("optimizer.{name}"), t);
    }
    for (name, position) in model.random_state() {
        let position =
            i32::try_from(position).map_err(|_| TrainError::Checkpoint(format!("stream {name} too long")))?;
        state.insert(format!("random.{name}"), Tensor::from_vec_i32(vec![position], &[], &Device::Cpu)?);
    }
    let epochs = history.epochs();
    for (field, values) in HISTORY_FIELDS.iter().zip(history_columns(history)) {
        state.insert(format!("history.{field}"), Tensor::from_vec(values, &[epochs], &Device::Cpu)?);
    }
    Ok(kiln_nn::save_state_dict(&state, path)?)
}

/// Restores a checkpoint from [`save_checkpoint`] into `model` and `optimizer` (built the
/// same way) and returns the metrics so far; the run continues at epoch `history.epochs()`.
pub fn load_checkpoint(path: &Path, model: &mut dyn Module, optimizer: &mut dyn Optimizer) -> Result<History> {
    let state = kiln_nn::load_state_dict(path)?;
    let part = |prefix: &str| -> StateDict {
        state.iter().filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone()))).collect()
    };
    kiln_nn::load_into(model, &part("model."))?;
    optimizer.load_state(&part("optimizer."))?;
    for (name, t) in part("random.") {
        model.set_random_state(&name, t.to_vec_i32()?[0] as u64)?;
    }
    let history = part("history.");
    let column = |field: &str| -> Result<Vec<f32>> {
        let t = history
            .get(field)
            .ok_or_else(|| TrainError::Checkpoint(format!("{}: no history.{field}", path.display())))?;
        if t.dtype() != DType::F32 {
            return Err(TrainError::Checkpoint(format!("{}: history.{field} is not f32", path.display())));
        }
        Ok(t.to_vec()?)
    };
    let [tl, ta, ts, tt, vl, va, vs, vt] = HISTORY_FIELDS.map(column);
    let rebuild = |loss: Vec<f32>, accuracy: Vec<f32>, samples: Vec<f32>, seconds: Vec<f32>| {
        (0..loss.len())
            .map(|i| EpochMetrics {
                loss: loss[i],
                accuracy: accuracy[i],
                samples: samples[i] as usize,
                seconds: seconds[i] as f64,
            })
            .collect()
    };
    Ok(History { train: rebuild(tl?, ta?, ts?, tt?), valid: rebuild(vl?, va?, vs?, vt?) })
}
