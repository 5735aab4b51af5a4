//! Optimizers in the shape of `torch.optim`: [`Sgd`] (momentum, dampening, Nesterov,
//! weight decay) and [`Adam`] / AdamW, with PyTorch's defaults. Each step updates every
//! parameter that has a gradient in place, with one fused kernel per parameter on the GPU.
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_optim::{Adam, Optimizer};
//! use kiln_tensor::{Device, Tensor};
//! # fn main() -> kiln_autograd::Result<()> {
//! let w = Var::parameter(Tensor::ones(&[3], &Device::Cpu)?);
//! let mut optimizer = Adam::new(vec![w.clone()], 0.1);
//! optimizer.zero_grad();
//! w.mul(&w)?.sum_all()?.backward()?;
//! optimizer.step()?;
//! assert!(w.value().to_vec()?.iter().all(|&v| (v - 0.9).abs() < 1e-5));
//! # Ok(())
//! # }
//! ```

mod adam;
mod scheduler;
mod sgd;

pub use adam::Adam;
pub use kiln_tensor::{AdamConfig, SgdConfig};
pub use scheduler::{CosineAnnealingLr, LrScheduler, OneCycleLr, ReduceLrOnPlateau, StepLr};
pub use sgd::Sgd;

use kiln_autograd::{Result, Var};

/// What every optimizer does, as `torch.optim.Optimizer`.
pub trait Optimizer {
    /// Updates every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;

    /// The parameters this optimizer updates.
    fn parameters(&self) -> &[Var];

    /// Forgets every parameter's gradient, before the next backward pass.
    fn zero_grad(&mut self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }

    /// The learning rate of the next step.
    fn lr(&self) -> f32;

    /// Sets the learning rate of the next steps (what schedulers do).
    fn set_lr(&mut self, lr: f32);

    /// Sets the momentum (SGD's momentum, Adam's β1), as OneCycleLR cycles it.
    fn set_momentum(&mut self, momentum: f32);
}
