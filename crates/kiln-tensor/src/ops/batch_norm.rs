//! Batch normalisation over the channels of NCHW tensors, as PyTorch's BatchNorm2d.
//!
//! On the GPU it is composed from the tensor ops, whose reductions are deterministic. On
//! the CPU, where every composed op would be a pass over memory and an allocation, it runs
//! as a few fused passes per channel (statistics summed in f64 in a fixed order, so also
//! deterministic); that fused version is the reference the GPU's is tested against.

use rayon::prelude::*;

use super::rows_per_task;
use crate::{DType, Device, Result, Tensor, TensorError};

/// Batch statistics a training-mode forward pass saves for its backward pass.
#[derive(Clone, Debug)]
pub struct BatchNormSaved {
    /// Per-channel batch mean, `[C]`.
    pub mean: Tensor,
    /// Per-channel 1/√(biased variance + eps), `[C]`.
    pub invstd: Tensor,
}

impl BatchNormSaved {
    /// What evaluation mode normalises with: the running mean and 1/√(running var + eps).
    pub fn from_running(running_mean: &Tensor, running_var: &Tensor, config: &BatchNormConfig) -> Result<Self> {
        Ok(Self { mean: running_mean.clone(), invstd: running_var.add_scalar(config.eps)?.sqrt()?.recip()? })
    }
}

/// The gradients of batch normalisation.
#[derive(Clone, Debug)]
pub struct BatchNormGrads {
    pub input: Tensor,
    /// Present when the forward pass had a scale (gamma).
    pub weight: Option<Tensor>,
    /// Present when the forward pass had a shift (beta).
    pub bias: Option<Tensor>,
}

/// Batch norm's momentum (for the running statistics) and eps, PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub momentum: f32,
    pub eps: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self { momentum: 0.1, eps: 1e-5 }
    }
}

impl Tensor {
    /// A `[C]` tensor as `[1, C, 1, 1]`, to broadcast over NCHW.
    fn per_channel(&self) -> Result<Tensor> {
        self.reshape(&[1, self.len(), 1, 1])
    }

    /// Σ over N, H and W of an NCHW tensor: `[C]`.
    fn sum_per_channel(&self) -> Result<Tensor> {
        let [n, c, h, w] = self.shape[..] else { unreachable!("checked to be NCHW") };
        self.reshape(&[n, c, h * w])?.sum(2, false)?.sum(0, false)
    }

    fn check_batch_norm(&self, op: &'static str, per_channel: &[Option<&Tensor>]) -> Result<usize> {
        self.expect_dtype(op, DType::F32)?;
        let &[_, channels, _, _] = &self.shape[..] else {
            return Err(TensorError::InvalidArgument {
                op,
                why: format!("needs an [N, C, H, W] input, got {:?}", self.shape),
            });
        };
        for t in per_channel.iter().flatten() {
            t.expect_dtype(op, DType::F32)?;
            self.expect_same_device(op, t)?;
            if t.shape != [channels] {
                return Err(TensorError::ShapeMismatch {
                    op,
                    lhs: self.shape.clone(),
                    rhs: t.shape.clone(),
                    why: "per-channel tensors must be [C]",
                });
            }
        }
        Ok(channels)
    }

    /// Training-mode batch norm of `[N, C, H, W]`: normalises with the batch's per-channel
    /// mean and biased variance, applies the optional scale `weight` and shift `bias`, and
    /// moves the running statistics toward the batch's (the variance unbiased), as PyTorch.
    pub fn batch_norm2d_train(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
    ) -> Result<(Tensor, BatchNormSaved)> {
        const OP: &str = "batch_norm2d_train";
        self.check_batch_norm(OP, &[weight, bias, Some(running_mean), Some(running_var)])?;
        let count = (self.len() / self.shape[1]) as f32;
        if count < 2.0 {
            return Err(TensorError::InvalidArgument {
                op: OP,
                why: format!("training needs more than one value per channel, got shape {:?}", self.shape),
            });
        }
        if self.device == Device::Cpu {
            return Ok(self.cpu_batch_norm_train(weight, bias, running_mean, running_var, config));
        }
        let mean = self.sum_per_channel()?.div_scalar(count)?;
        let centered = self.sub(&mean.per_channel()?)?;
        let var = centered.square()?.sum_per_channel()?.div_scalar(count)?;
        let invstd = var.add_scalar(config.eps)?.sqrt()?.recip()?;
        let output = affine(centered.mul(&invstd.per_channel()?)?, weight, bias)?;
        let m = config.momentum;
        *running_mean = running_mean.mul_scalar(1.0 - m)?.add(&mean.mul_scalar(m)?)?;
        let unbiased = var.mul_scalar(count / (count - 1.0))?;
        *running_var = running_var.mul_scalar(1.0 - m)?.add(&unbiased.mul_scalar(m)?)?;
        Ok((output, BatchNormSaved { mean, invstd }))
    }

    /// Evaluation-mode batch norm: normalises with the running statistics.
    pub fn batch_norm2d_eval(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        config: &BatchNormConfig,
    ) -> Result<Tensor> {
        self.check_batch_norm("batch_norm2d_eval", &[weight, bias, Some(running_mean), Some(running_var)])?;
        let saved = BatchNormSaved::from_running(running_mean, running_var, config)?;
        if self.device == Device::Cpu {
            return Ok(self.cpu_normalize(&saved, weight, bias));
        }
        affine(self.sub(&saved.mean.per_channel()?)?.mul(&saved.invstd.per_channel()?)?, weight, bias)
    }

    /// The gradients of a batch norm from this output gradient: `input` is the forward
    /// input, `saved` the statistics it was normalised with — the batch's in training mode,
    /// [`BatchNormSaved::from_running`] in evaluation mode (`training` false).
    pub fn batch_norm2d_backward(
        &self,
        input: &Tensor,
        weight: Option<&Tensor>,
        has_bias: bool,
        saved: &BatchNormSaved,
        training: bool,
    ) -> Result<BatchNormGrads> {
        const OP: &str = "batch_norm2d_backward";
        input.check_batch_norm(OP, &[weight, Some(&saved.mean), Some(&saved.invstd)])?;
        self.expect_dtype(OP, DType::F32)?;
        if self.shape != input.shape {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: input.shape.clone(),
                why: "the gradient must have the input's shape",
            });
        }
        if self.device == Device::Cpu {
            return Ok(self.cpu_batch_norm_backward(input, weight, has_bias, saved, training));
        }
        let count = (input.len() / input.shape[1]) as f32;
        let invstd = saved.invstd.per_channel()?;
        let normalized = input.sub(&saved.mean.per_channel()?)?.mul(&invstd)?;
        let bias_grad = self.sum_per_channel()?;
        let weight_grad = self.mul(&normalized)?.sum_per_channel()?;
        let scale = match weight {
            Some(w) => invstd.mul(&w.per_channel()?)?,
            None => invstd,
        };
        let input_grad = if training {
            // (γ·invstd / m) · (m·dy − Σdy − x̂·Σ(dy·x̂))
            let correction = normalized.mul(&weight_grad.per_channel()?)?.add(&bias_grad.per_channel()?)?;
            self.mul_scalar(count)?.sub(&correction)?.mul(&scale)?.div_scalar(count)?
        } else {
            self.mul(&scale)?
        };
        Ok(BatchNormGrads {
            input: input_grad,
            weight: weight.map(|_| weight_grad),
            bias: has_bias.then_some(bias_grad),
        })
    }
}

fn affine(normalized: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let scaled = match weight {
        Some(w) => normalized.mul(&w.per_channel()?)?,
        None => normalized,
    };
    match bias {
        Some(b) => scaled.add(&b.per_channel()?),
        None => Ok(scaled),
    }
}

/// Channel `c`'s values in an NCHW buffer: one run of H·W per batch item.
fn channel_runs(data: &[f32], channels: usize, plane: usize, c: usize) -> impl Iterator<Item = &[f32]> {
    data.chunks(plane).skip(c).step_by(channels)
}

/// The per-channel scalar of `t` (a `[C]` tensor on the CPU), or `default` without one.
fn per_channel_values(t: Option<&Tensor>, channels: usize, default: f32) -> Vec<f32> {
    t.map_or_else(|| vec![default; channels], |t| t.cpu_values().to_vec())
}

impl Tensor {
    fn nchw(&self) -> (usize, usize) {
        (self.shape[1], self.shape[2] * self.shape[3])
    }

    /// `(x − center[c])·scale[c] + shift[c]` over every plane, in parallel.
    fn cpu_per_channel_affine(&self, center: &[f32], scale: &[f32], shift: &[f32]) -> Tensor {
        let (channels, plane) = self.nchw();
        let mut out = vec![0.0f32; self.len()];
        out.par_chunks_mut(plane)
            .zip(self.cpu_values().par_chunks(plane))
            .enumerate()
            .with_min_len(rows_per_task(plane, 4096))
            .for_each(|(i, (out, x))| {
                let c = i % channels;
                let (center, scale, shift) = (center[c], scale[c], shift[c]);
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = (x - center) * scale + shift;
                }
            });
        Tensor::cpu_f32(out, self.shape.clone())
    }

    /// (x − mean)·invstd·γ + β with saved statistics, as one pass.
    fn cpu_normalize(&self, saved: &BatchNormSaved, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Tensor {
        let channels = self.shape[1];
        let (gamma, beta) = (per_channel_values(weight, channels, 1.0), per_channel_values(bias, channels, 0.0));
        let (mean, invstd) = (saved.mean.cpu_values(), saved.invstd.cpu_values());
        let scale: Vec<f32> = (0..channels).map(|c| invstd[c] * gamma[c]).collect();
        self.cpu_per_channel_affine(mean, &scale, &beta)
    }

    fn cpu_batch_norm_train(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
    ) -> (Tensor, BatchNormSaved) {
        let (channels, plane) = self.nchw();
        let x = self.cpu_values();
        let count = (self.len() / channels) as f64;
        // Two passes per channel (mean, then squared deviations) keep the variance accurate
        // when the mean is large against the spread.
        let stats: Vec<(f32, f32)> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let sum: f64 = channel_runs(x, channels, plane, c).flatten().map(|&v| v as f64).sum();
                let mean = sum / count;
                let squares: f64 =
                    channel_runs(x, channels, plane, c).flatten().map(|&v| (v as f64 - mean).powi(2)).sum();
                (mean as f32, (squares / count) as f32)
            })
            .collect();
        let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
        let var: Vec<f32> = stats.iter().map(|s| s.1).collect();
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + config.eps).sqrt()).collect();
        let saved = BatchNormSaved {
            mean: Tensor::cpu_f32(mean.clone(), vec![channels]),
            invstd: Tensor::cpu_f32(invstd, vec![channels]),
        };
        let output = self.cpu_normalize(&saved, weight, bias);
        let (m, unbias) = (config.momentum, (count / (count - 1.0)) as f32);
        let blend = |running: &Tensor, batch: &[f32]| {
            let values = running.cpu_values().iter().zip(batch).map(|(r, b)| r * (1.0 - m) + b * m).collect();
            Tensor::cpu_f32(values, vec![channels])
        };
        *running_mean = blend(running_mean, &mean);
        *running_var = blend(running_var, &var.iter().map(|v| v * unbias).collect::<Vec<_>>());
        (output, saved)
    }

    fn cpu_batch_norm_backward(
        &self,
        input: &Tensor,
        weight: Option<&Tensor>,
        has_bias: bool,
        saved: &BatchNormSaved,
        training: bool,
    ) -> BatchNormGrads {
        let (channels, plane) = input.nchw();
        let (dy, x) = (self.cpu_values(), input.cpu_values());
        let (mean, invstd) = (saved.mean.cpu_values(), saved.invstd.cpu_values());
        // Σdy and Σdy·x̂ per channel.
        let sums: Vec<(f32, f32)> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let (mut sum, mut dot) = (0.0f64, 0.0f64);
                for (g, v) in channel_runs(dy, channels, plane, c).zip(channel_runs(x, channels, plane, c)) {
                    for (&g, &v) in g.iter().zip(v) {
                        sum += g as f64;
                        dot += (g * (v - mean[c]) * invstd[c]) as f64;
                    }
                }
                (sum as f32, dot as f32)
            })
            .collect();
        let gamma = per_channel_values(weight, channels, 1.0);
        let count = (input.len() / channels) as f32;
        let input_grad = if training {
            // dx = γ·invstd·(dy − Σdy/m − x̂·Σ(dy·x̂)/m), with x̂ = (x − mean)·invstd.
            let mut grad = vec![0.0f32; input.len()];
            grad.par_chunks_mut(plane)
                .zip(dy.par_chunks(plane).zip(x.par_chunks(plane)))
                .enumerate()
                .with_min_len(rows_per_task(plane, 4096))
                .for_each(|(i, (grad, (dy, x)))| {
                    let c = i % channels;
                    let (sum, dot) = sums[c];
                    let scale = gamma[c] * invstd[c];
                    let (mean_dy, mean_dot) = (sum / count, dot / count);
                    for ((g, &d), &v) in grad.iter_mut().zip(dy).zip(x) {
                        let normalized = (v - mean[c]) * invstd[c];
                        *g = scale * (d - mean_dy - normalized * mean_dot);
                    }
                });
            Tensor::cpu_f32(grad, input.shape.clone())
        } else {
            let scale: Vec<f32> = (0..channels).map(|c| gamma[c] * invstd[c]).collect();
            let zeros = vec![0.0; channels];
            self.cpu_per_channel_affine(&zeros, &scale, &zeros)
        };
        let column = |pick: fn(&(f32, f32)) -> f32| Tensor::cpu_f32(sums.iter().map(pick).collect(), vec![channels]);
        BatchNormGrads {
            input: input_grad,
            weight: weight.map(|_| column(|s| s.1)),
            bias: has_bias.then(|| column(|s| s.0)),
        }
    }
}
