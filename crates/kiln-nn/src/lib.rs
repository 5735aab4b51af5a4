//! Modules in the shape of `torch.nn`: a [`Module`] trait (forward, named parameters and
//! buffers, train/eval, moving to a device, printing, all walked through each module's
//! children), [`Sequential`], the layers the tutorial models use, [`CrossEntropyLoss`], and
//! PyTorch's default initialisation, seeded.
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_nn::{Flatten, Linear, Module, ReLU, Seeds, Sequential};
//! use kiln_tensor::{Device, Tensor};
//! # fn main() -> kiln_nn::Result<()> {
//! let mut seeds = Seeds::new(0); // one seed drives every initialisation and dropout mask
//! let mut model = Sequential::new()
//!     .add(Flatten::new())
//!     .add(Linear::new(784, 512, &mut seeds)?)
//!     .add(ReLU)
//!     .add(Linear::new(512, 24, &mut seeds)?);
//! let logits = model.forward(&Var::constant(Tensor::zeros(&[32, 1, 28, 28], &Device::Cpu)?))?;
//! assert_eq!(logits.value().shape(), &[32, 24]);
//! assert_eq!(model.parameters()[0].0, "1.weight"); // PyTorch's state-dict names
//! # Ok(())
//! # }
//! ```
//!
//! A module of your own declares its children once, with [`children!`]; its parameters and
//! buffers under PyTorch's dotted names, train/eval, moving to a device (buffers included),
//! random streams, loading and printing all follow from that. A residual block
//! ([`models::BasicBlock`] is the fuller one, with a projection shortcut):
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_nn::{BatchNorm2d, Conv2d, Module, Result, Seeds};
//!
//! /// relu(bn(conv(x)) + x)
//! struct Residual {
//!     conv: Conv2d,
//!     bn: BatchNorm2d,
//! }
//!
//! impl Module for Residual {
//!     kiln_nn::children!(conv, bn);
//!
//!     fn forward(&mut self, x: &Var) -> Result<Var> {
//!         let y = self.bn.forward(&self.conv.forward(x)?)?;
//!         Ok(y.add(x)?.relu()?)
//!     }
//! }
//! # fn main() -> Result<()> {
//! let seeds = &mut Seeds::new(0);
//! let mut block = Residual { conv: Conv2d::new(8, 8, 3, seeds)?.padding(1), bn: BatchNorm2d::new(8)? };
//! let names: Vec<String> = block.parameters().into_iter().map(|(name, _)| name).collect();
//! assert_eq!(names, ["conv.weight", "conv.bias", "bn.weight", "bn.bias"]);
//! block.eval(); // the batch norm inside now uses its running statistics
//! assert!(block.describe().starts_with("Residual(\n  (conv): Conv2d(8, 8, kernel_size=(3, 3)"));
//! # Ok(())
//! # }
//! ```

mod checkpoint;
pub mod export;
mod init;
mod layers;
mod loss;
pub mod models;
mod module;
mod replicas;
mod seeds;

pub use checkpoint::{
    LoadReport, StateDict, load, load_into, load_into_non_strict, load_state_dict, save, save_state_dict, state_dict,
    state_dict_from_bytes, write_atomically,
};
pub use init::{Init, fans, glorot_uniform, kaiming_uniform, uniform};
pub use layers::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, GELU, Identity, LeakyReLU,
    Linear, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh,
};
pub use loss::CrossEntropyLoss;
pub use module::{Module, Sequential};
pub use replicas::Replicas;
pub use seeds::Seeds;

/// What building or running a module can refuse.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Autograd(#[from] kiln_autograd::AutogradError),

    #[error(transparent)]
    Tensor(#[from] kiln_tensor::TensorError),

    #[error("{0}")]
    Invalid(String),

    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// A setting as Python's `repr` of a float prints it, for printing modules as PyTorch does:
/// `0.1`, `1.0`, `1e-05` (scientific below 1e-4, with at least two exponent digits).
fn python_float(value: f32) -> String {
    if value != 0.0 && value.abs() < 1e-4 {
        let scientific = format!("{value:e}");
        let (mantissa, exponent) = scientific.split_once('e').expect("{:e} writes an exponent");
        let (sign, digits) = exponent.strip_prefix('-').map_or(("+", exponent), |d| ("-", d));
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let plain = value.to_string();
    if plain.contains('.') { plain } else { format!("{plain}.0") }
}
