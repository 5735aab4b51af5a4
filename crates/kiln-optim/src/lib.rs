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
mod hooked;
mod scheduler;
mod sgd;

pub use adam::Adam;
pub use hooked::Hooked;
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

    /// The parameters this optimizer updates, every group's, in order.
    fn parameters(&self) -> &[Var];

    /// Forgets every parameter's gradient, before the next backward pass.
    fn zero_grad(&mut self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }

    /// Each parameter group's learning rate for the next step, as
    /// `[g["lr"] for g in optimizer.param_groups]`.
    fn lrs(&self) -> Vec<f32>;

    /// Sets each group's learning rate (what schedulers do); `lrs` must have one per group.
    fn set_lrs(&mut self, lrs: &[f32]) -> Result<()>;

    /// The first group's learning rate (the only one's, without groups).
    fn lr(&self) -> f32 {
        self.lrs()[0]
    }

    /// Sets every group's learning rate to `lr`.
    fn set_lr(&mut self, lr: f32) {
        let groups = self.lrs().len();
        self.set_lrs(&vec![lr; groups]).expect("one rate for each group");
    }

    /// Sets the momentum (SGD's momentum, Adam's β1) of every group, as OneCycleLR cycles it.
    fn set_momentum(&mut self, momentum: f32);

    /// Everything a later `load_state` needs to continue exactly where this one is.
    fn state(&self) -> Result<OptimizerState>;

    /// Restores a state from `state()` of an optimizer over parameters of the same shapes.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Parameters that train with their own learning rate or weight decay, as an entry of
/// PyTorch's `param_groups`: `ParamGroup::new(head).lr(1e-3)`. What a group leaves unset it
/// takes from the optimizer (`Sgd::with_groups(groups, lr).weight_decay(…)`).
pub struct ParamGroup {
    parameters: Vec<Var>,
    lr: Option<f32>,
    weight_decay: Option<f32>,
}

impl ParamGroup {
    pub fn new(parameters: Vec<Var>) -> Self {
        Self { parameters, lr: None, weight_decay: None }
    }

    pub fn lr(mut self, lr: f32) -> Self {
        self.lr = Some(lr);
        self
    }

    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
}

/// An optimizer's parameters, one list in group order (the state's indices count along
/// it, as PyTorch's), and each group's settings.
struct Groups {
    parameters: Vec<Var>,
    settings: Vec<GroupSettings>,
}

struct GroupSettings {
    /// The group's parameters are `parameters[start..end]`.
    start: usize,
    end: usize,
    lr: f32,
    /// `None`: the optimizer's weight decay.
    weight_decay: Option<f32>,
}

impl Groups {
    fn new(groups: Vec<ParamGroup>, lr: f32) -> Self {
        let (mut parameters, mut settings) = (Vec::new(), Vec::new());
        for group in groups {
            let start = parameters.len();
            parameters.extend(group.parameters);
            let (end, lr) = (parameters.len(), group.lr.unwrap_or(lr));
            settings.push(GroupSettings { start, end, lr, weight_decay: group.weight_decay });
        }
        if settings.is_empty() {
            settings.push(GroupSettings { start: 0, end: 0, lr, weight_decay: None });
        }
        Self { parameters, settings }
    }

    fn lrs(&self) -> Vec<f32> {
        self.settings.iter().map(|g| g.lr).collect()
    }

    fn set_lrs(&mut self, lrs: &[f32]) -> Result<()> {
        if lrs.len() != self.settings.len() {
            let why = format!("{} learning rates for {} parameter groups", lrs.len(), self.settings.len());
            return Err(TensorError::InvalidArgument { op: "set_lrs", why }.into());
        }
        self.settings.iter_mut().zip(lrs).for_each(|(g, &lr)| g.lr = lr);
        Ok(())
    }

    /// The rates as the state keeps them under "lr": a rank-0 tensor for one group (as
    /// before groups existed), else one value per group.
    fn lr_state(&self) -> Result<Tensor> {
        match self.settings.as_slice() {
            [only] => scalar_tensor(only.lr),
            _ => Ok(Tensor::from_vec(self.lrs(), &[self.settings.len()], &Device::Cpu)?),
        }
    }

    fn load_lr_state(&mut self, state: &OptimizerState) -> Result<()> {
        let t = state.get("lr").ok_or_else(|| invalid("the state has no 'lr'".into()))?;
        let lrs = t.to_vec()?;
        if lrs.len() != self.settings.len() {
            return Err(invalid(format!("'lr' has {} rates for {} parameter groups", lrs.len(), self.settings.len())));
        }
        self.set_lrs(&lrs)
    }
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
