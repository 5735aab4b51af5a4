//! The PyTorch Fashion-MNIST tutorial's CNN, an `nn.Module`: two 5×5 convolutions (32 and 64
//! channels) with ReLU and max pooling, dropout 0.3, then 1024 → 512 → 10, starting from
//! PyTorch's default initialisation (`--init keras` for Keras's Glorot-uniform weights and
//! zero biases); Adam 1e-3, batch 256, 20 epochs (~92%).
//!
//! `cargo run --release --example fashion_mnist_cnn -- --data DIR` (see `--help`).

mod support;

use kiln::tutorials::Tutorial;
use support::{Error, Options};

fn main() -> Result<(), Error> {
    let tutorial = Tutorial::FashionMnistCnn;
    Options::from_args(tutorial)?.run(|options| {
        let history = support::setup(tutorial, options)?.fit(options)?;
        if let (Some(last), true) = (history.valid.last(), options.reports()) {
            println!("final test accuracy {:.4}", last.accuracy);
        }
        Ok(())
    })
}
