//! PyTorch's "Training a classifier" tutorial on CIFAR-10: LeNet (5×5 convolutions with 6
//! and 16 channels, 120 → 84 → 10), SGD lr 1e-3 with momentum 0.9, batch 4, 2 epochs,
//! then the accuracy on the test set overall and per class, printed as the tutorial does.
//!
//! `cargo run --release --example cifar10_lenet -- --data DIR` (see `--help`). DIR holds
//! the binary batches (`data_batch_*.bin`, `test_batch.bin`, plain or gzipped) or the
//! official `cifar-10-binary.tar.gz`; the training batches present are all used.

mod support;

use kiln::training;
use kiln::tutorials::Tutorial;
use support::{Error, Options};

fn main() -> Result<(), Error> {
    let tutorial = Tutorial::Cifar10Lenet;
    Options::from_args(tutorial)?.run(|options| {
        let mut job = support::setup(tutorial, options)?;
        job.fit(options)?;
        if !options.reports() {
            return Ok(());
        }
        let predictions = training::predict(&mut job.model, job.data.test.unsharded().epoch(0)?)?;
        let classes = kiln::data::CIFAR10_CLASSES;
        let matrix = predictions.confusion_matrix(classes.len())?;
        println!("Accuracy of the network on the {} test images: {:.0} %", matrix.total(), 100.0 * matrix.accuracy());
        for (class, name) in classes.iter().enumerate() {
            println!("Accuracy for class: {name:5} is {:.1} %", 100.0 * matrix.recall(class));
        }
        Ok(())
    })
}
