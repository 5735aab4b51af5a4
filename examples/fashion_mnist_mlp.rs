//! PyTorch's quickstart on Fashion-MNIST: an MLP 784 → 512 → 512 → 10 trained by plain SGD
//! (lr 1e-3), batch 64, 5 epochs (about 65% test accuracy).
//!
//! `cargo run --release --example fashion_mnist_mlp -- --data DIR` (see `--help`).

mod support;

use kiln::tutorials::Tutorial;
use support::{Error, Options};

fn main() -> Result<(), Error> {
    let tutorial = Tutorial::FashionMnistMlp;
    Options::from_args(tutorial)?.run(|options| {
        let history = support::setup(tutorial, options)?.fit(options)?;
        if let (Some(last), true) = (history.valid.last(), options.reports()) {
            println!("final test accuracy {:.4}", last.accuracy);
        }
        Ok(())
    })
}
