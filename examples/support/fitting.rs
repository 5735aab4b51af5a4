//! The examples' epoch loop: train, test, print a line per epoch as the tutorials do, step
//! the learning-rate schedule, and, when asked, log the run for TensorBoard; at the end,
//! save the model and its figures and print the per-class report. Shared by the examples
//! (through `support`) and by tests that include the files using it.

use std::path::Path;

use kiln::data::{DataLoader, ImageDataset};
use kiln::distributed::World;
use kiln::figures;
use kiln::nn::{CrossEntropyLoss, Module};
use kiln::optim::Optimizer;
use kiln::schedules::Schedule;
use kiln::tensorboard::RunLog;
use kiln::training::{self, History};

/// Batches between the training-loss points of a TensorBoard log (as asl-app's).
pub const LOG_EVERY: usize = 20;

/// What a run trains and tests on, for how long, and where it is logged and saved.
pub struct Run<'a> {
    pub train: &'a DataLoader,
    pub test: &'a DataLoader,
    /// The images `test` loads, which the figures show.
    pub test_set: &'a ImageDataset,
    pub epochs: usize,
    /// Printed before each epoch's line ("" for none).
    pub label: &'a str,
    /// Log the run for TensorBoard here.
    pub tensorboard: Option<&'a Path>,
    /// Save the model (`model.safetensors`, PyTorch's keys), `curves.png`, `predictions.png`
    /// and `confusion.png` here at the end, and print the per-class report.
    pub out: Option<&'a Path>,
    /// The processes of a data-parallel run (`--distributed`), whose shares `train` and
    /// `test` load: every step averages their gradients, the figures are theirs together,
    /// and rank 0 alone prints, logs and saves.
    pub world: Option<&'a World>,
}

/// The files a run writes in [`Run::out`].
pub const MODEL: &str = "model.safetensors";
pub const FIGURES: [&str; 3] = ["curves.png", "predictions.png", "confusion.png"];

/// Trains for `run.epochs`, testing after each, and prints a line per epoch; `schedule`,
/// if any, steps after each batch or epoch as its kind does. In a data-parallel run
/// ([`Run::world`]) every process calls it.
pub fn fit(
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
    mut schedule: Option<&mut Schedule>,
    run: &Run,
) -> Result<History, Box<dyn std::error::Error>> {
    let loss_fn = CrossEntropyLoss::new();
    let mut history = History::default();
    let reports = run.world.is_none_or(|world| world.rank() == 0);
    let tensorboard = run.tensorboard.filter(|_| reports);
    let mut log = tensorboard.map(|dir| RunLog::new(dir, LOG_EVERY, run.train.len(), 0)).transpose()?;
    let epochs = run.epochs;
    for epoch in 0..epochs {
        let lr = optimizer.lr();
        let batches = run.train.epoch(epoch as u64)?;
        let logged = |step: &training::Step| {
            if let Some(log) = log.as_mut() {
                log.step(epoch, step);
            }
        };
        let t = {
            let mut averaged;
            let stepped: &mut dyn Optimizer = match run.world {
                Some(world) => {
                    averaged = world.data_parallel(optimizer);
                    &mut averaged
                }
                None => optimizer,
            };
            match schedule.as_deref_mut() {
                Some(schedule) => {
                    training::train_epoch(model, &mut schedule.per_batch(stepped), &loss_fn, batches, logged)?
                }
                None => training::train_epoch(model, stepped, &loss_fn, batches, logged)?,
            }
        };
        let v = training::evaluate(model, &loss_fn, run.test.epoch(0)?)?;
        let (t, v) = match run.world {
            Some(world) => (world.global(&t), world.global(&v)),
            None => (t, v),
        };
        if let Some(schedule) = schedule.as_deref_mut() {
            schedule.after_epoch(optimizer, v.loss);
        }
        history.train.push(t);
        history.valid.push(v);
        if !reports {
            continue;
        }
        let rate = if schedule.is_some() { format!("  lr {lr:.3e}") } else { String::new() };
        println!(
            "{}epoch {:>2}/{epochs}  loss {:.4}  accuracy {:.4}  test loss {:.4}  test accuracy {:.4}  {:.1} s ({:.0} samples/s){rate}",
            run.label,
            epoch + 1,
            t.loss,
            t.accuracy,
            v.loss,
            v.accuracy,
            t.seconds,
            t.samples_per_second()
        );
        if let Some(log) = log.as_mut() {
            log.epoch(&history, lr)?;
        }
    }
    if !reports {
        return Ok(history);
    }
    // The whole test set, where each process tested on its share.
    let test = run.test.unsharded();
    if let Some(log) = log.as_mut() {
        let predictions = training::predict(model, test.epoch(0)?)?;
        log.predictions(run.test_set, &predictions, epochs)?;
        println!("TensorBoard log: {}", log.path().display());
    }
    if let Some(out) = run.out {
        save_and_report(model, &history, &test, run.test_set, out)?;
    }
    Ok(history)
}

/// Prints the per-class report on `test` (which loads `test_set`) and saves the model
/// (PyTorch's keys), its curves, captioned predictions and confusion matrix in `out`.
pub fn save_and_report(
    model: &mut dyn Module,
    history: &History,
    test: &DataLoader,
    test_set: &ImageDataset,
    out: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let predictions = training::predict(model, test.epoch(0)?)?;
    let names = test_set.class_names();
    let matrix = predictions.confusion_matrix(names.len())?;
    println!("{}", matrix.report(names));
    std::fs::create_dir_all(out)?;
    kiln::nn::save(model, &out.join(MODEL))?;
    let [curves, grid, confusion] = FIGURES.map(|name| out.join(name));
    figures::curves(history).save(&curves)?;
    figures::prediction_grid(test_set, &predictions.predicted).save(&grid)?;
    figures::confusion(&matrix, names).save(&confusion)?;
    println!("saved the model and its figures in {}", out.display());
    Ok(())
}
