//! TensorFlow's beginner quickstart on MNIST: 784 → 128, ReLU, dropout 0.2, → 10; Adam,
//! batch 32, 5 epochs (about 97.7% test accuracy).
//!
//! `cargo run --release --example mnist_mlp -- --data DIR` (see `--help`).

mod support;

use kiln::tutorials::Tutorial;
use support::{Error, Options};

fn main() -> Result<(), Error> {
    let tutorial = Tutorial::MnistMlp;
    let options = Options::from_args(tutorial)?;
    let (mut model, mut optimizer, data) = support::setup(tutorial, &options)?;
    let history = support::fit(&mut model, optimizer.as_mut(), None, &data.run(&options))?;
    if let Some(last) = history.valid.last() {
        println!("final test accuracy {:.4}", last.accuracy);
    }
    Ok(())
}
