//! TensorFlow's beginner quickstart on MNIST: 784 → 128, ReLU, dropout 0.2, → 10, started
//! as Keras starts it; Adam, batch 32, 5 epochs (about 97.7% test accuracy) — written as
//! the tutorial writes it: compile, fit (with a progress bar and a checkpoint of the best
//! epoch), evaluate, a probability model made by appending a Softmax, and the model saved
//! and loaded again. With `--distributed` under mpirun, one process of a data-parallel run
//! (Keras's `MultiWorkerMirroredStrategy`): rank 0 alone prints and writes.
//!
//! `cargo run --release --example mnist_mlp -- --data DIR` (see `--help`).

mod support;

use kiln::keras::{self, Callback, Model, ModelCheckpoint, ProgressBar, TensorBoard};
use kiln::nn::Module;
use kiln::tutorials::Tutorial;
use support::fitting::{LOG_EVERY, MODEL, save_and_report};
use support::{Error, Job, Options};

fn main() -> Result<(), Error> {
    Options::from_args(Tutorial::MnistMlp)?.run(quickstart)
}

fn quickstart(options: &Options) -> Result<(), Error> {
    let tutorial = Tutorial::MnistMlp;
    let Job { model: network, optimizer, schedule, data } = support::setup(tutorial, options)?;

    // model.compile(optimizer='adam', loss=SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'])
    let mut model = Model::compile(network, optimizer);
    if let Some(schedule) = schedule {
        model = model.with_schedule(schedule);
    }
    std::fs::create_dir_all(&options.out)?;
    let mut progress = ProgressBar::new();
    let mut best = ModelCheckpoint::new(options.out.join("best_model.safetensors")).save_best_only();
    let whole_test = data.test.unsharded();
    let mut tensorboard = match &options.tensorboard {
        Some(dir) if options.reports() => {
            Some(TensorBoard::new(dir, LOG_EVERY, data.train.len())?.with_figures(&whole_test, &data.test_set))
        }
        _ => None,
    };
    // Rank 0 alone of a distributed run (--distributed) prints and writes.
    let mut callbacks: Vec<&mut dyn Callback> = if options.reports() { vec![&mut progress, &mut best] } else { vec![] };
    if let Some(tensorboard) = tensorboard.as_mut() {
        callbacks.push(tensorboard);
    }
    // model.fit(x_train, y_train, epochs=5); model.evaluate(x_test, y_test, verbose=2)
    let (history, test) = match &options.world {
        Some(world) => (
            model.fit_distributed(world, &data.train, options.epochs, Some(&data.test), &mut callbacks)?,
            model.evaluate_distributed(world, &data.test)?,
        ),
        None => {
            (model.fit(&data.train, options.epochs, Some(&data.test), &mut callbacks)?, model.evaluate(&data.test)?)
        }
    };
    if !options.reports() {
        return Ok(());
    }
    println!("test loss {:.4} - test accuracy {:.4}", test.loss, test.accuracy);
    save_and_report(model.network_mut(), &history, &whole_test, &data.test_set, &options.out)?;

    // probability_model = tf.keras.Sequential([model, tf.keras.layers.Softmax()]); probability_model(x_test[:5])
    let batch = whole_test.epoch(0)?.next().expect("a test batch")?;
    let five = batch.images.shape()[0].min(5);
    let mut probability_model = model.probability_model();
    let probabilities = keras::predict(&mut probability_model, &batch.images.narrow(0, 0, five)?)?.to_vec()?;
    println!("probabilities of the first {five} test digits (label: 0 … 9):");
    for (row, label) in probabilities.chunks(10).zip(batch.labels.to_vec_i32()?) {
        let cells: Vec<String> = row.iter().map(|p| format!("{p:.3}")).collect();
        println!("  {label}: {}", cells.join(" "));
    }

    // model.save(…); tf.keras.models.load_model(…): the saved model scores the same.
    let mut network = tutorial.model(0)?;
    kiln::training::load_weights(&options.out.join(MODEL), &mut network)?;
    network.to_device(&options.device)?;
    let optimizer = tutorial.optimizer(&network, tutorial.lr());
    let again = Model::compile(network, optimizer).evaluate(&whole_test)?;
    println!("reloaded from {}: test accuracy {:.4}", options.out.join(MODEL).display(), again.accuracy);
    if let Some(last) = history.valid.last() {
        println!("final test accuracy {:.4}", last.accuracy);
    }
    Ok(())
}
