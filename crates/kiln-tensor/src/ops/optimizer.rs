//! In-place optimizer steps: the updates kiln-optim's SGD and Adam apply to parameters. On
//! the GPU a step over many parameters is a few launches (a group of tensors each, see
//! kiln-wgsl's optimizer kernels); the CPU loops mirror sgd.wgsl and adam.wgsl operation
//! for operation.

pub use kiln_wgsl::kernels::optimizer::{AdamConfig, SgdConfig};
use kiln_wgsl::kernels::optimizer::{AdamTensor, SgdTensor, adam, sgd};

use rayon::prelude::*;

use super::PARALLEL_MIN_ELEMENTS;
use crate::profile;
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
    let _op = profile::enter("sgd_steps");
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
            cpu_sgd(parameters, config);
            Ok(())
        }
    }
}

/// Elements per piece of work: big enough that a task's hand-off is cheap against it,
/// small enough that a model's few large tensors still spread over the cores.
const CHUNK: usize = 1 << 14;

/// Runs `update` over every piece, in parallel when the step is large enough. The update of
/// an element never depends on another, so the split changes no result.
fn for_each_piece<T: Send>(pieces: Vec<T>, elements: usize, update: impl Fn(T) + Send + Sync) {
    if elements >= PARALLEL_MIN_ELEMENTS {
        pieces.into_par_iter().for_each(update);
    } else {
        pieces.into_iter().for_each(update);
    }
}

/// A piece of one parameter's SGD update.
struct SgdPiece<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    momentum_buffer: Option<&'a mut [f32]>,
    first_step: bool,
}

fn cpu_sgd(parameters: &mut [SgdParameter], config: &SgdConfig) {
    let elements = parameters.iter().map(|p| p.param.len()).sum();
    let mut pieces = Vec::new();
    for p in parameters.iter_mut() {
        let grads = p.grad.cpu_values().chunks(CHUNK);
        let mut buffers = p.momentum_buffer.as_deref_mut().map(|b| b.cpu_values_mut().chunks_mut(CHUNK));
        for (param, grad) in p.param.cpu_values_mut().chunks_mut(CHUNK).zip(grads) {
            let momentum_buffer = buffers.as_mut().and_then(Iterator::next);
            pieces.push(SgdPiece { param, grad, momentum_buffer, first_step: p.first_step });
        }
    }
    for_each_piece(pieces, elements, |piece| widest_simd!(sgd_piece(piece, config)));
}

/// Mirrors sgd.wgsl's element update, operation for operation.
#[inline(always)]
fn sgd_piece(piece: SgdPiece, config: &SgdConfig) {
    let SgdConfig { lr, momentum, dampening, weight_decay, nesterov } = *config;
    let decayed = |w: f32, g: f32| if weight_decay != 0.0 { g + weight_decay * w } else { g };
    match piece.momentum_buffer {
        Some(buffer) if momentum != 0.0 => {
            for ((w, &g), state) in piece.param.iter_mut().zip(piece.grad).zip(buffer) {
                let mut g = decayed(*w, g);
                let b = if piece.first_step { g } else { momentum * *state + (1.0 - dampening) * g };
                *state = b;
                g = if nesterov { g + momentum * b } else { b };
                *w -= lr * g;
            }
        }
        _ => {
            for (w, &g) in piece.param.iter_mut().zip(piece.grad) {
                *w -= lr * decayed(*w, g);
            }
        }
    }
}

/// Adam (AdamW when `config.decoupled`) steps on every parameter and its moment estimates,
/// in place; all on one device.
pub fn adam_steps(parameters: &mut [AdamParameter], config: &AdamConfig) -> Result<()> {
    let _op = profile::enter("adam_steps");
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
            cpu_adam(parameters, config);
            Ok(())
        }
    }
}

/// A piece of one parameter's Adam update, with that parameter's bias corrections.
struct AdamPiece<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    exp_avg: &'a mut [f32],
    exp_avg_sq: &'a mut [f32],
    step_size: f32,
    bias_correction2_sqrt: f32,
}

fn cpu_adam(parameters: &mut [AdamParameter], config: &AdamConfig) {
    let elements = parameters.iter().map(|p| p.param.len()).sum();
    let mut pieces = Vec::new();
    for p in parameters.iter_mut() {
        let (step_size, bias_correction2_sqrt) = config.bias_corrections(p.step);
        let state = p.exp_avg.cpu_values_mut().chunks_mut(CHUNK).zip(p.exp_avg_sq.cpu_values_mut().chunks_mut(CHUNK));
        let values = p.param.cpu_values_mut().chunks_mut(CHUNK).zip(p.grad.cpu_values().chunks(CHUNK));
        for ((param, grad), (exp_avg, exp_avg_sq)) in values.zip(state) {
            pieces.push(AdamPiece { param, grad, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt });
        }
    }
    for_each_piece(pieces, elements, |piece| widest_simd!(adam_piece(piece, config)));
}

/// Mirrors adam.wgsl's element update, operation for operation.
#[inline(always)]
fn adam_piece(piece: AdamPiece, config: &AdamConfig) {
    let AdamConfig { lr, beta1, beta2, eps, weight_decay, decoupled } = *config;
    let AdamPiece { param, grad, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt } = piece;
    let state = exp_avg.iter_mut().zip(exp_avg_sq.iter_mut());
    for ((param, &g), (m, v)) in param.iter_mut().zip(grad).zip(state) {
        let (mut g, mut w) = (g, *param);
        if weight_decay != 0.0 {
            if decoupled {
                w *= 1.0 - lr * weight_decay;
            } else {
                g += weight_decay * w;
            }
        }
        *m += (1.0 - beta1) * (g - *m);
        *v = *v * beta2 + (1.0 - beta2) * g * g;
        let denom = v.sqrt() / bias_correction2_sqrt + eps;
        *param = w - step_size * (*m / denom);
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
        let _op = profile::enter("sgd_step");
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
        let _op = profile::enter("adam_step");
        adam_steps(&mut [AdamParameter { param: self, grad, exp_avg, exp_avg_sq, step }], config)
    }
}
