//! In-place optimizer steps: the updates kiln-optim's SGD and Adam apply to each parameter.
//! The CPU loops mirror sgd.wgsl and adam.wgsl operation for operation.

pub use kiln_wgsl::kernels::optimizer::{AdamConfig, SgdConfig};
use kiln_wgsl::kernels::optimizer::{adam, sgd};

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

impl Tensor {
    /// One SGD step on this parameter, in place. `momentum_buffer` (shaped like the
    /// parameter) is required when momentum ≠ 0; on the `first_step` it is set to the
    /// gradient, as PyTorch initialises it.
    pub fn sgd_step(
        &mut self,
        grad: &Tensor,
        momentum_buffer: Option<&mut Tensor>,
        config: &SgdConfig,
        first_step: bool,
    ) -> Result<()> {
        const OP: &str = "sgd_step";
        self.expect_dtype(OP, DType::F32)?;
        check_state(OP, self, grad)?;
        if config.momentum != 0.0 && momentum_buffer.is_none() {
            return Err(TensorError::InvalidArgument { op: OP, why: "momentum needs a momentum buffer".into() });
        }
        let mut momentum_buffer = momentum_buffer;
        if let Some(buffer) = momentum_buffer.as_deref_mut() {
            check_state(OP, self, buffer)?;
            buffer.unshare()?;
        }
        self.unshare()?;
        match &self.device {
            Device::Gpu(ctx) => {
                let buffer = momentum_buffer.as_deref().map(Tensor::gpu_buffer);
                Ok(sgd(ctx, self.gpu_buffer(), grad.gpu_buffer(), buffer, self.len(), config, first_step)?)
            }
            Device::Cpu => {
                let grad = grad.cpu_values();
                let mut buffer = momentum_buffer.map(Tensor::cpu_values_mut);
                for (i, w) in self.cpu_values_mut().iter_mut().enumerate() {
                    let mut g = grad[i];
                    if config.weight_decay != 0.0 {
                        g += config.weight_decay * *w;
                    }
                    if config.momentum != 0.0 {
                        let state = &mut buffer.as_deref_mut().expect("checked above")[i];
                        let b = if first_step { g } else { config.momentum * *state + (1.0 - config.dampening) * g };
                        *state = b;
                        if config.nesterov {
                            g += config.momentum * b;
                        } else {
                            g = b;
                        }
                    }
                    *w -= config.lr * g;
                }
                Ok(())
            }
        }
    }

    /// One Adam (AdamW when `config.decoupled`) step `step` (counting from 1) on this
    /// parameter and its moment estimates, in place.
    pub fn adam_step(
        &mut self,
        grad: &Tensor,
        exp_avg: &mut Tensor,
        exp_avg_sq: &mut Tensor,
        config: &AdamConfig,
        step: u64,
    ) -> Result<()> {
        const OP: &str = "adam_step";
        self.expect_dtype(OP, DType::F32)?;
        for other in [grad, &*exp_avg, &*exp_avg_sq] {
            check_state(OP, self, other)?;
        }
        if step == 0 {
            return Err(TensorError::InvalidArgument { op: OP, why: "steps count from 1".into() });
        }
        self.unshare()?;
        exp_avg.unshare()?;
        exp_avg_sq.unshare()?;
        match &self.device {
            Device::Gpu(ctx) => Ok(adam(
                ctx,
                self.gpu_buffer(),
                grad.gpu_buffer(),
                (exp_avg.gpu_buffer(), exp_avg_sq.gpu_buffer()),
                self.len(),
                config,
                step,
            )?),
            Device::Cpu => {
                let (step_size, bias_correction2_sqrt) = config.bias_corrections(step);
                let grad = grad.cpu_values();
                let (m, v) = (exp_avg.cpu_values_mut(), exp_avg_sq.cpu_values_mut());
                for (i, param) in self.cpu_values_mut().iter_mut().enumerate() {
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
                Ok(())
            }
        }
    }
}
