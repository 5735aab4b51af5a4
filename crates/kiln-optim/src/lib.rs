//! Optimizers in the shape of `torch.optim`: [`Sgd`] (momentum, dampening, Nesterov,
//! weight decay) and [`Adam`] / AdamW, with PyTorch's defaults. Each step updates every
//! parameter that has a gradient in place, in one multi-tensor update: on the GPU a launch
//! updates a group of up to 8 parameters.
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

use std::collections::BTreeMap;

use kiln_autograd::{AutogradError, Result, Var};
use kiln_tensor::{DType, Device, Tensor, TensorError};

/// An optimizer's state by name ("lr", "0.exp_avg", "3.step", …), for checkpoints: save it
/// beside the model's (kiln_nn::save_state_dict takes any such map) to resume training.
pub type OptimizerState = BTreeMap<String, Tensor>;

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

    /// Everything a later `load_state` needs to continue exactly where this one is.
    fn state(&self) -> Result<OptimizerState>;

    /// Restores a state from `state()` of an optimizer over parameters of the same shapes.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

fn invalid(why: String) -> AutogradError {
    TensorError::InvalidArgument { op: "load_state", why }.into()
}

/// The rank-0 f32 or i32 `name` of `state`, as f32.
fn scalar(state: &OptimizerState, name: &str) -> Result<f32> {
    let t = state.get(name).ok_or_else(|| invalid(format!("the state has no '{name}'")))?;
    Ok(match t.dtype() {
        DType::I32 => t.to_vec_i32()?[0] as f32,
        _ => t.to_scalar()?,
    })
}

/// The tensor `name` of `state`, checked to be shaped like `parameter`, on its device.
fn per_parameter(state: &OptimizerState, name: &str, parameter: &Var) -> Result<Option<Tensor>> {
    let Some(t) = state.get(name) else { return Ok(None) };
    let value = parameter.value();
    if t.shape() != value.shape() {
        return Err(invalid(format!("'{name}' is {:?} but its parameter is {:?}", t.shape(), value.shape())));
    }
    Ok(Some(t.to(&value.device())?))
}

/// Refuses keys no parameter or setting of this optimizer has.
fn check_keys(state: &OptimizerState, known: impl Fn(&str) -> bool) -> Result<()> {
    match state.keys().find(|k| !known(k)) {
        Some(unknown) => Err(invalid(format!("unexpected '{unknown}' in the optimizer state"))),
        None => Ok(()),
    }
}

fn scalar_tensor(value: f32) -> Result<Tensor> {
    Ok(Tensor::scalar(value, &Device::Cpu)?)
}
