//! Modules in the shape of `torch.nn`: a [`Module`] trait (forward, named parameters and
//! buffers, train/eval, moving to a device), [`Sequential`], the layers the tutorial models
//! use, [`CrossEntropyLoss`], and PyTorch's default initialisation, seeded.
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

mod checkpoint;
mod init;
mod layers;
mod loss;
pub mod models;
mod module;
mod seeds;

pub use checkpoint::{
    LoadReport, StateDict, load, load_into, load_into_non_strict, load_state_dict, save, save_state_dict, state_dict,
};
pub use init::{kaiming_uniform, uniform};
pub use layers::{BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Softmax};
pub use loss::CrossEntropyLoss;
pub use module::{Module, Sequential};
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
