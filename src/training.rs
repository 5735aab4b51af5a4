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

    /// Weights that do not fit the model they were loaded into.
    #[error("{}: {source}", path.display())]
    Weights { path: std::path::PathBuf, source: kiln_nn::NnError },

    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),

    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error("distributed run: {0}")]
    Distributed(String),

    /// A training loop used in a way it cannot serve, said why.
    #[error("{0}")]
    Misuse(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// The mean loss and the accuracy of one pass over a dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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

/// How far an interrupted training epoch got: what a checkpoint keeps so that the epoch
/// goes on where it stopped ([`train_epoch_from`]) and ends with the figures, and the
/// weights, of an uninterrupted one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochProgress {
    /// Batches finished.
    pub batches: usize,
    /// The running sums exactly as the device held them: Σ loss × rows, and the correct
    /// predictions.
    pub loss_sum: f32,
    pub correct: f32,
    pub samples: usize,
    pub seconds: f64,
}

/// A batch done, as a training epoch reports it: the samples and batches so far in the
/// epoch, and the batch's mean loss (a rank-0 tensor on the model's device: reading it
/// waits for the device, so a caller reads it only when it logs it).
pub struct Step<'a> {
    pub samples: usize,
    pub batches: usize,
    pub loss: &'a Tensor,
}

/// How a training epoch ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EpochEnd {
    Finished(EpochMetrics),
    /// Asked to stop after a batch: where it got.
    Stopped(EpochProgress),
}

/// Sums kept on the device until the pass ends.
struct Totals {
    loss: Option<Tensor>,
    correct: Option<Tensor>,
    samples: usize,
    started: Instant,
    /// Seconds spent before an interruption.
    carried_seconds: f64,
}

impl Totals {
    fn new() -> Self {
        Self { loss: None, correct: None, samples: 0, started: Instant::now(), carried_seconds: 0.0 }
    }

    /// Totals that go on from `progress`, held on `device` as they were before.
    fn resumed(progress: &EpochProgress, device: &Device) -> Result<Self> {
        Ok(Self {
            loss: Some(Tensor::scalar(progress.loss_sum, device)?),
            correct: Some(Tensor::scalar(progress.correct, device)?),
            samples: progress.samples,
            started: Instant::now(),
            carried_seconds: progress.seconds,
        })
    }

    /// Where the pass has got, after `batches` batches (reads the sums back).
    fn progress(&self, batches: usize) -> Result<EpochProgress> {
        let read =
            |t: &Option<Tensor>| -> Result<f32> { Ok(t.as_ref().map(|t| t.to_scalar()).transpose()?.unwrap_or(0.0)) };
        Ok(EpochProgress {
            batches,
            loss_sum: read(&self.loss)?,
            correct: read(&self.correct)?,
            samples: self.samples,
            seconds: self.carried_seconds + self.started.elapsed().as_secs_f64(),
        })
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
            seconds: self.carried_seconds + self.started.elapsed().as_secs_f64(),
        })
    }
}

/// One epoch of training in training mode. `progress` hears of each batch done ([`Step`]).
/// A loss that is not finite at the end of the epoch stops the run.
pub fn train_epoch(
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
    loss_fn: &CrossEntropyLoss,
    batches: impl Iterator<Item = kiln_data::Result<Batch>>,
    progress: impl FnMut(&Step),
) -> Result<EpochMetrics> {
    match train_epoch_from(model, optimizer, loss_fn, batches, progress, None, || false)? {
        EpochEnd::Finished(metrics) => Ok(metrics),
        EpochEnd::Stopped(_) => unreachable!("never asked to stop"),
    }
}

/// [`train_epoch`] going on from `from`, where an interrupted epoch got (`batches` then
/// being its remaining batches: `DataLoader::epoch_from`), and stopping after any batch
/// once `stop` says so, with the progress a checkpoint needs to go on from there.
pub fn train_epoch_from(
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
    loss_fn: &CrossEntropyLoss,
    batches: impl Iterator<Item = kiln_data::Result<Batch>>,
    mut progress: impl FnMut(&Step),
    from: Option<EpochProgress>,
    stop: impl Fn() -> bool,
) -> Result<EpochEnd> {
    model.train();
    let device = model.parameters().first().map_or(Device::Cpu, |(_, p)| p.value().device());
    let mut totals = match &from {
        Some(progress) => Totals::resumed(progress, &device)?,
        None => Totals::new(),
    };
    let mut done = from.map_or(0, |p| p.batches);
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
        let batch_loss = loss.value();
        totals.add(&batch_loss, &logits.value(), &batch.labels)?;
        done += 1;
        progress(&Step { samples: totals.samples, batches: done, loss: &batch_loss });
        if stop() {
            return Ok(EpochEnd::Stopped(totals.progress(done)?));
        }
        profile::set_phase("data");
    }
    profile::set_phase("metrics");
    let metrics = totals.finish()?;
    if !metrics.loss.is_finite() {
        return Err(TrainError::NonFinite(metrics.loss));
    }
    Ok(EpochEnd::Finished(metrics))
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

/// Memory held at the end of an epoch, to see that a long run stays flat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// The process's peak resident set so far (Linux's VmHWM; 0 where it cannot be read).
    pub peak_resident_bytes: u64,
    /// On a GPU, the most device memory its pooled buffers have held so far; 0 on the CPU.
    pub peak_device_bytes: u64,
}

impl MemoryUse {
    /// What `device` and this process hold now.
    pub fn now(device: &Device) -> Self {
        let peak_device_bytes = match device {
            Device::Gpu(ctx) => ctx.stats().peak_buffer_bytes,
            Device::Cpu => 0,
        };
        Self { peak_resident_bytes: peak_resident_bytes().unwrap_or(0), peak_device_bytes }
    }
}

/// The process's peak resident set in bytes, where the system tells it (Linux).
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Per-epoch metrics of a run so far, and how far an interrupted epoch after them got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub train: Vec<EpochMetrics>,
    pub valid: Vec<EpochMetrics>,
    /// Memory at the end of each epoch, where the run recorded it (one per epoch, or none).
    pub memory: Vec<MemoryUse>,
    /// The epoch in progress (number `epochs()`) when the run was interrupted inside it.
    pub partial: Option<EpochProgress>,
}

impl History {
    pub fn epochs(&self) -> usize {
        self.train.len()
    }

    /// The metrics as CSV, one row per epoch; with the memory in MiB where it was recorded.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from(
            "epoch,train_loss,train_accuracy,valid_loss,valid_accuracy,seconds,samples_per_second,\
             peak_resident_mib,peak_device_mib\n",
        );
        let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1 << 20) as f64);
        for (i, (t, v)) in self.train.iter().zip(&self.valid).enumerate() {
            let memory = self
                .memory
                .get(i)
                .map_or(",".to_string(), |m| format!("{},{}", mib(m.peak_resident_bytes), mib(m.peak_device_bytes)));
            csv.push_str(&format!(
                "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.1},{memory}\n",
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
/// streams ("random."), the metrics so far ("history.") and an interrupted epoch's progress
/// ("progress.").
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
    // KiB as i32: exact up to 2 TiB, where f32 would round past 16 MiB.
    let kib = |bytes: u64| i32::try_from(bytes / 1024).unwrap_or(i32::MAX);
    let memory = &history.memory;
    let resident = memory.iter().map(|m| kib(m.peak_resident_bytes)).collect();
    let device = memory.iter().map(|m| kib(m.peak_device_bytes)).collect();
    for (field, values) in [("peak_resident_kib", resident), ("peak_device_kib", device)] {
        state.insert(format!("history.{field}"), Tensor::from_vec_i32(values, &[memory.len()], &Device::Cpu)?);
    }
    if let Some(p) = &history.partial {
        let count = |name: &str, n: usize| -> Result<i32> {
            i32::try_from(n).map_err(|_| TrainError::Checkpoint(format!("progress.{name} {n} too large")))
        };
        let ints = [("batches", count("batches", p.batches)?), ("samples", count("samples", p.samples)?)];
        for (name, value) in ints {
            state.insert(format!("progress.{name}"), Tensor::from_vec_i32(vec![value], &[], &Device::Cpu)?);
        }
        for (name, value) in [("loss_sum", p.loss_sum), ("correct", p.correct), ("seconds", p.seconds as f32)] {
            state.insert(format!("progress.{name}"), Tensor::scalar(value, &Device::Cpu)?);
        }
    }
    Ok(kiln_nn::save_state_dict(&state, path)?)
}

/// A model's weights, by PyTorch's names, from a file: a model saved with `kiln::nn::save`
/// (or a PyTorch `state_dict` saved with safetensors), or the model part of a
/// [`save_checkpoint`] file.
pub fn read_weights(path: &Path) -> Result<StateDict> {
    let bytes = std::fs::read(path).map_err(|e| kiln_nn::NnError::Checkpoint(format!("{}: {e}", path.display())))?;
    weights_from_bytes(&bytes, path)
}

/// [`read_weights`] of a file's `bytes`, read already (by rank 0 of a data-parallel run,
/// which sends them to every process); `path` names it in errors.
pub fn weights_from_bytes(bytes: &[u8], path: &Path) -> Result<StateDict> {
    let state = kiln_nn::state_dict_from_bytes(bytes, path)?;
    if !state.keys().any(|k| k.starts_with("model.")) {
        return Ok(state);
    }
    Ok(state.into_iter().filter_map(|(k, v)| Some((k.strip_prefix("model.")?.to_string(), v))).collect())
}

/// Loads [`read_weights`] into `model`, which must have the same parameters and buffers.
pub fn load_weights(path: &Path, model: &mut dyn Module) -> Result<()> {
    let state = read_weights(path)?;
    kiln_nn::load_into(model, &state).map_err(|source| TrainError::Weights { path: path.to_path_buf(), source })
}

/// Restores a checkpoint from [`save_checkpoint`] into `model` and `optimizer` (built the
/// same way) and returns the metrics so far; the run continues at epoch `history.epochs()`.
pub fn load_checkpoint(path: &Path, model: &mut dyn Module, optimizer: &mut dyn Optimizer) -> Result<History> {
    load_checkpoint_bytes(
        &std::fs::read(path).map_err(|e| kiln_nn::NnError::Checkpoint(format!("{}: {e}", path.display())))?,
        path,
        model,
        optimizer,
    )
}

/// [`load_checkpoint`] of a checkpoint's `bytes`, read already (by rank 0 of a data-parallel
/// run, which sends them to every process); `path` names it in errors.
pub fn load_checkpoint_bytes(
    bytes: &[u8],
    path: &Path,
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
) -> Result<History> {
    let state = kiln_nn::state_dict_from_bytes(bytes, path)?;
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
    // Checkpoints from before memory was recorded have none.
    let kib = |field: &str| -> Result<Vec<u64>> {
        history
            .get(field)
            .map_or(Ok(Vec::new()), |t| Ok(t.to_vec_i32()?.into_iter().map(|k| k.max(0) as u64 * 1024).collect()))
    };
    let memory = kib("peak_resident_kib")?
        .into_iter()
        .zip(kib("peak_device_kib")?)
        .map(|(peak_resident_bytes, peak_device_bytes)| MemoryUse { peak_resident_bytes, peak_device_bytes })
        .collect();
    let progress = part("progress.");
    let partial = if progress.is_empty() {
        None
    } else {
        let value = |name: &str| -> Result<&Tensor> {
            progress.get(name).ok_or_else(|| TrainError::Checkpoint(format!("{}: no progress.{name}", path.display())))
        };
        let count = |name: &str| -> Result<usize> { Ok(value(name)?.to_vec_i32()?[0].max(0) as usize) };
        Some(EpochProgress {
            batches: count("batches")?,
            samples: count("samples")?,
            loss_sum: value("loss_sum")?.to_scalar()?,
            correct: value("correct")?.to_scalar()?,
            seconds: value("seconds")?.to_scalar()? as f64,
        })
    };
    Ok(History { train: rebuild(tl?, ta?, ts?, tt?), valid: rebuild(vl?, va?, vs?, vt?), memory, partial })
}
