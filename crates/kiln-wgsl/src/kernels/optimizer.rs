//! In-place optimizer updates (sgd.wgsl, adam.wgsl): one fused kernel per step and tensor.

use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

static SGD: KernelFamily = KernelFamily { name: "sgd", source: include_str!("sgd.wgsl") };
static ADAM: KernelFamily = KernelFamily { name: "adam", source: include_str!("adam.wgsl") };

/// torch.optim.SGD's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// torch.optim.Adam's hyperparameters; `decoupled` weight decay makes it AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
}

impl AdamConfig {
    /// lr / (1 − β1ᵗ) and √(1 − β2ᵗ) for step `t` (from 1), in double precision as PyTorch.
    pub fn bias_corrections(&self, step: u64) -> (f32, f32) {
        let t = step as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t);
        ((self.lr as f64 / bc1) as f32, bc2.sqrt() as f32)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    len: u32,
    first_step: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    len: u32,
    decoupled: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    _pad: [u32; 3],
}

/// One SGD step on `param` in place. `momentum_buffer` is needed when momentum ≠ 0; on the
/// `first_step` it is overwritten with the gradient, as PyTorch initialises it.
pub fn sgd(
    ctx: &GpuContext,
    param: &GpuBuffer,
    grad: &GpuBuffer,
    momentum_buffer: Option<&GpuBuffer>,
    len: usize,
    config: &SgdConfig,
    first_step: bool,
) -> Result<()> {
    super::check_indexable("sgd", len, 1)?;
    if config.momentum != 0.0 && momentum_buffer.is_none() {
        return Err(crate::GpuError::InvalidLaunch {
            kernel: "sgd",
            reason: "momentum needs a momentum buffer".into(),
        });
    }
    let placeholder;
    let buffer = match momentum_buffer {
        Some(buffer) => buffer,
        None => {
            placeholder = ctx.alloc(4)?;
            &placeholder
        }
    };
    let spec =
        KernelSpec::new(&SGD, "sgd", &[Slot(1, Access::ReadWrite), Slot(2, Access::Read), Slot(3, Access::ReadWrite)]);
    let params = SgdParams {
        len: len as u32,
        first_step: first_step as u32,
        nesterov: config.nesterov as u32,
        lr: config.lr,
        momentum: config.momentum,
        dampening: config.dampening,
        weight_decay: config.weight_decay,
        _pad: 0,
    };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[param, grad, buffer], ctx.linear_grid(len, 256)?)
}

/// One Adam (or AdamW) step `step` (from 1) on `param` and its `(exp_avg, exp_avg_sq)`
/// moments, in place.
pub fn adam(
    ctx: &GpuContext,
    param: &GpuBuffer,
    grad: &GpuBuffer,
    (exp_avg, exp_avg_sq): (&GpuBuffer, &GpuBuffer),
    len: usize,
    config: &AdamConfig,
    step: u64,
) -> Result<()> {
    super::check_indexable("adam", len, 1)?;
    let (step_size, bias_correction2_sqrt) = config.bias_corrections(step);
    let spec = KernelSpec::new(
        &ADAM,
        "adam",
        &[Slot(1, Access::ReadWrite), Slot(2, Access::Read), Slot(3, Access::ReadWrite), Slot(4, Access::ReadWrite)],
    );
    let params = AdamParams {
        len: len as u32,
        decoupled: config.decoupled as u32,
        lr: config.lr,
        beta1: config.beta1,
        beta2: config.beta2,
        eps: config.eps,
        weight_decay: config.weight_decay,
        step_size,
        bias_correction2_sqrt,
        _pad: [0; 3],
    };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[param, grad, exp_avg, exp_avg_sq], ctx.linear_grid(len, 256)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context_or_skip;

    #[test]
    fn one_adam_step_from_zero_state_moves_by_lr() {
        // With m = v = 0, step 1 gives m̂ = g and v̂ = g², so each weight moves by lr·sign(g).
        let Some(ctx) = context_or_skip("optimizer::one_adam_step_from_zero_state_moves_by_lr") else { return };
        let param = ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        let grad = ctx.upload(&[0.5f32, -4.0, 1e-3]).unwrap();
        let (m, v) = (ctx.upload(&[0.0f32; 3]).unwrap(), ctx.upload(&[0.0f32; 3]).unwrap());
        let config = AdamConfig { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
        adam(&ctx, &param, &grad, (&m, &v), 3, &config, 1).unwrap();
        let got = ctx.read::<f32>(&param, 3).unwrap();
        for (g, w) in got.iter().zip([0.9f32, 2.1, 2.9]) {
            assert!((g - w).abs() < 1e-4, "{got:?}");
        }
    }

    #[test]
    fn plain_sgd_subtracts_lr_times_grad() {
        let Some(ctx) = context_or_skip("optimizer::plain_sgd_subtracts_lr_times_grad") else { return };
        let param = ctx.upload(&[1.0f32, 2.0]).unwrap();
        let grad = ctx.upload(&[10.0f32, -10.0]).unwrap();
        let config = SgdConfig { lr: 0.01, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false };
        sgd(&ctx, &param, &grad, None, 2, &config, true).unwrap();
        assert_eq!(ctx.read::<f32>(&param, 2).unwrap(), vec![0.9, 2.1]);
        let with_momentum = SgdConfig { momentum: 0.9, ..config };
        assert!(sgd(&ctx, &param, &grad, None, 2, &with_momentum, true).is_err());
    }
}
