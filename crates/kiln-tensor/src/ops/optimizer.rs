//! In-place optimizer steps: the updates kiln-optim's SGD and Adam apply to parameters. On
//! the GPU a step over many parameters is a few launches (a group of tensors each, see
//! kiln-wgsl's optimizer kernels); the CPU loops mirror sgd.wgsl and adam.wgsl operation
//! for operation.

pub use kiln_wgsl::kernels::optimizer::{AdamConfig, SgdConfig};
use kiln_wgsl::kernels::optimizer::{AdamTensor, SgdTensor, adam, sgd};

use crate::{DType, Device, Result, Tensor, TensorError};

fn check_state(op: &'static str, param: &Tensor, other: &Tensor) -> Result<()> {
    other.expect_dtype(op, DType::F32)?;
    param.expect_same_device(op, other)?;
    if other.shape != param.shape {
        return Err(TensorError::ShapeMismatch {
            op,
            lhs: param.shape.clone(),
            rhs: other.shape.clone(),
            why: "optimizer state must match the parameter",
        });
    }
    Ok(())
}

/// The one device every parameter of a step is on, or a mismatch.
fn common_device<'a>(op: &'static str, mut params: impl Iterator<Item = &'a Tensor>) -> Result<Option<Device>> {
    let Some(first) = params.next() else { return Ok(None) };
    for other in params {
        first.expect_same_device(op, other)?;
    }
    Ok(Some(first.device()))
}

/// One parameter of an SGD step: its gradient, its momentum buffer (required when momentum
/// ≠ 0; on the `first_step` it is set to the gradient, as PyTorch initialises it).
pub struct SgdParameter<'a> {
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    pub momentum_buffer: Option<&'a mut Tensor>,
    pub first_step: bool,
}

/// One parameter of an Adam step: its gradient, moment estimates and the number of this
/// step for it (counting from 1).
pub struct AdamParameter<'a> {
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    pub exp_avg: &'a mut Tensor,
    pub exp_avg_sq: &'a mut Tensor,
    pub step: u64,
}

/// SGD steps on every parameter, in place; all on one device.
pub fn sgd_steps(parameters: &mut [SgdParameter], config: &SgdConfig) -> Result<()> {
    const OP: &str = "sgd_step";
    for p in parameters.iter_mut() {
        p.param.expect_dtype(OP, DType::F32)?;
        check_state(OP, p.param, p.grad)?;
        if config.momentum != 0.0 && p.momentum_buffer.is_none() {
            return Err(TensorError::InvalidArgument { op: OP, why: "momentum needs a momentum buffer".into() });
        }
        if let Some(buffer) = p.momentum_buffer.as_deref_mut() {
            check_state(OP, p.param, buffer)?;
            buffer.unshare()?;
        }
        p.param.unshare()?;
    }
    match common_device(OP, parameters.iter().map(|p| &*p.param))? {
        Some(Device::Gpu(ctx)) => {
            let tensors: Vec<SgdTensor> = parameters
                .iter()
                .map(|p| SgdTensor {
                    param: p.param.gpu_buffer(),
                    grad: p.grad.gpu_buffer(),
                    momentum_buffer: p.momentum_buffer.as_deref().map(Tensor::gpu_buffer),
                    len: p.param.len(),
                    first_step: p.first_step,
                })
                .collect();
            Ok(sgd(&ctx, &tensors, config)?)
        }
        _ => {
            parameters.iter_mut().for_each(|p| cpu_sgd(p, config));
            Ok(())
        }
    }
}

fn cpu_sgd(p: &mut SgdParameter, config: &SgdConfig) {
    let grad = p.grad.cpu_values();
    let mut buffer = p.momentum_buffer.as_deref_mut().map(Tensor::cpu_values_mut);
    for (i, w) in p.param.cpu_values_mut().iter_mut().enumerate() {
        let mut g = grad[i];
        if config.weight_decay != 0.0 {
            g += config.weight_decay * *w;
        }
        if config.momentum != 0.0 {
            let state = &mut buffer.as_deref_mut().expect("checked by sgd_steps")[i];
            let b = if p.first_step { g } else { config.momentum * *state + (1.0 - config.dampening) * g };
            *state = b;
            if config.nesterov {
                g += config.momentum * b;
            } else {
                g = b;
            }
        }
        *w -= config.lr * g;
    }
}

/// Adam (AdamW when `config.decoupled`) steps on every parameter and its moment estimates,
/// in place; all on one device.
pub fn adam_steps(parameters: &mut [AdamParameter], config: &AdamConfig) -> Result<()> {
    const OP: &str = "adam_step";
    for p in parameters.iter_mut() {
        p.param.expect_dtype(OP, DType::F32)?;
        for other in [p.grad, &*p.exp_avg, &*p.exp_avg_sq] {
            check_state(OP, p.param, other)?;
        }
        if p.step == 0 {
            return Err(TensorError::InvalidArgument { op: OP, why: "steps count from 1".into() });
        }
        p.param.unshare()?;
        p.exp_avg.unshare()?;
        p.exp_avg_sq.unshare()?;
    }
    match common_device(OP, parameters.iter().map(|p| &*p.param))? {
        Some(Device::Gpu(ctx)) => {
            let tensors: Vec<AdamTensor> = parameters
                .iter()
                .map(|p| AdamTensor {
                    param: p.param.gpu_buffer(),
                    grad: p.grad.gpu_buffer(),
                    exp_avg: p.exp_avg.gpu_buffer(),
                    exp_avg_sq: p.exp_avg_sq.gpu_buffer(),
                    len: p.param.len(),
                    step: p.step,
                })
                .collect();
            Ok(adam(&ctx, &tensors, config)?)
        }
        _ => {
            parameters.iter_mut().for_each(|p| cpu_adam(p, config));
            Ok(())
        }
    }
}

fn cpu_adam(p: &mut AdamParameter, config: &AdamConfig) {
    let (step_size, bias_correction2_sqrt) = config.bias_corrections(p.step);
    let grad = p.grad.cpu_values();
    let (m, v) = (p.exp_avg.cpu_values_mut(), p.exp_avg_sq.cpu_values_mut());
    for (i, param) in p.param.cpu_values_mut().iter_mut().enumerate() {
        let (mut g, mut w) = (grad[i], *param);
        if config.weight_decay != 0.0 {
            if config.decoupled {
                w *= 1.0 - config.lr * config.weight_decay;
            } else {
                g += config.weight_decay * w;
            }
        }
        m[i] += (1.0 - config.beta1) * (g - m[i]);
        v[i] = v[i] * config.beta2 + (1.0 - config.beta2) * g * g;
        let denom = v[i].sqrt() / bias_correction2_sqrt + config.eps;
        *param = w - step_size * (m[i] / denom);
    }
}

impl Tensor {
    /// One SGD step on this parameter, in place (see [`sgd_steps`] for many at once).
    /// `momentum_buffer` (shaped like the parameter) is required when momentum ≠ 0; on the
    /// `first_step` it is set to the gradient, as PyTorch initialises it.
    pub fn sgd_step(
        &mut self,
        grad: &Tensor,
        momentum_buffer: Option<&mut Tensor>,
        config: &SgdConfig,
        first_step: bool,
    ) -> Result<()> {
        sgd_steps(&mut [SgdParameter { param: self, grad, momentum_buffer, first_step }], config)
    }

    /// One Adam (AdamW when `config.decoupled`) step `step` (counting from 1) on this
    /// parameter and its moment estimates, in place (see [`adam_steps`] for many at once).
    pub fn adam_step(
        &mut self,
        grad: &Tensor,
        exp_avg: &mut Tensor,
        exp_avg_sq: &mut Tensor,
        config: &AdamConfig,
        step: u64,
    ) -> Result<()> {
        adam_steps(&mut [AdamParameter { param: self, grad, exp_avg, exp_avg_sq, step }], config)
    }
}
