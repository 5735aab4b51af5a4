//! The examples' epoch loop: train, test, print a line per epoch as the tutorials do, and,
//! when asked, log the run for TensorBoard. Shared by the examples (through `support`) and
//! by tests that include the files using it.

use std::path::Path;

use kiln::data::{DataLoader, ImageDataset};
use kiln::nn::{CrossEntropyLoss, Module};
use kiln::optim::{LrScheduler, Optimizer};
use kiln::tensorboard::RunLog;
use kiln::training::{self, History};

/// Batches between the training-loss points of a TensorBoard log (as asl-app's).
pub const LOG_EVERY: usize = 20;

/// What a run trains and tests on, for how long, and where it is logged.
pub struct Run<'a> {
    pub train: &'a DataLoader,
    pub test: &'a DataLoader,
    /// The images `test` loads, which the logged figures show.
    pub test_set: &'a ImageDataset,
    pub epochs: usize,
    /// Printed before each epoch's line ("" for none).
    pub label: &'a str,
    /// Log the run for TensorBoard here.
    pub tensorboard: Option<&'a Path>,
}

/// Trains for `run.epochs`, testing after each, and prints a line per epoch; `schedule`,
/// if any, steps once per epoch.
pub fn fit(
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
    mut schedule: Option<&mut dyn LrScheduler>,
    run: &Run,
) -> Result<History, Box<dyn std::error::Error>> {
    let loss_fn = CrossEntropyLoss::new();
    let mut history = History::default();
    let mut log = run.tensorboard.map(|dir| RunLog::new(dir, LOG_EVERY, run.train.len(), 0)).transpose()?;
    let epochs = run.epochs;
    for epoch in 0..epochs {
        let lr = optimizer.lr();
        let t = training::train_epoch(model, optimizer, &loss_fn, run.train.epoch(epoch as u64)?, |step| {
            if let Some(log) = log.as_mut() {
                log.step(epoch, step);
            }
        })?;
        if let Some(schedule) = schedule.as_deref_mut() {
            schedule.step(optimizer);
        }
        let v = training::evaluate(model, &loss_fn, run.test.epoch(0)?)?;
        println!(
            "{}epoch {:>2}/{epochs}  loss {:.4}  accuracy {:.4}  test loss {:.4}  test accuracy {:.4}  {:.1} s ({:.0} samples/s)",
            run.label,
            epoch + 1,
            t.loss,
            t.accuracy,
            v.loss,
            v.accuracy,
            t.seconds,
            t.samples_per_second()
        );
        history.train.push(t);
        history.valid.push(v);
        if let Some(log) = log.as_mut() {
            log.epoch(&history, lr)?;
        }
    }
    if let Some(log) = log.as_mut() {
        let predictions = training::predict(model, run.test.epoch(0)?)?;
        log.predictions(run.test_set, &predictions, epochs)?;
        println!("TensorBoard log: {}", log.path().display());
    }
    Ok(history)
}
