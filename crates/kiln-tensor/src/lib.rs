//! Kiln's one user-facing `Tensor`: f32 values (and i32 labels and indices) with a shape, on
//! a runtime [`Device`]. The CPU runs ndarray code; the GPU records kiln-wgsl kernels that
//! are submitted in batches, so nothing waits for the GPU until values are read back with
//! [`Tensor::to_vec`].
//!
//! ```
//! use kiln_tensor::{Device, Tensor};
//! # fn main() -> kiln_tensor::Result<()> {
//! let device = Device::Cpu; // or Device::best() for the GPU when there is one
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], &device)?;
//! let y = x.matmul(&x.t()?)?.relu()?.sum(-1, false)?;
//! assert_eq!(y.to_vec()?, vec![5.0 + 11.0, 11.0 + 25.0]);
//! # Ok(())
//! # }
//! ```

mod device;
mod error;
mod ops;
pub mod profile;
pub mod random;
pub mod shape;
pub mod subnormals;
mod tensor;
pub mod threads;

pub use device::Device;
pub use error::{Result, TensorError};
pub use ops::{
    AdamConfig, AdamParameter, BatchNormConfig, BatchNormGrads, BatchNormReluPool, BatchNormSaved, Conv2d, Conv2dGrads,
    ConvReluPool, LinearGrads, Pool2d, Reduction, SgdConfig, SgdParameter, adam_steps, sgd_steps,
};
pub use tensor::{DType, Tensor};
