//! Batch normalisation over the channels of NCHW tensors, as PyTorch's BatchNorm2d, with
//! the ReLU that often follows it optionally applied in the same pass.
//!
//! Both devices run it fused: on the GPU the training forward is two launches (per-channel
//! statistics by one workgroup per channel, then the normalisation) and so is the backward
//! (per-channel sums, then the input gradient), reduced in a fixed order; on the CPU a few
//! passes per channel with f64 sums, also deterministic. The CPU version is the reference.

use rayon::prelude::*;

use kiln_wgsl::kernels::batch_norm::{
    Affine, BackwardInputs, ChannelShape, Scale, batch_norm_backward_input, batch_norm_backward_sums,
    batch_norm_normalize, batch_norm_stats,
};

use super::{rows_per_task, sum_in_lanes};
use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

/// Batch statistics a training-mode forward pass saves for its backward pass.
#[derive(Clone, Debug)]
pub struct BatchNormSaved {
    /// Per-channel batch mean, `[C]`.
    pub mean: Tensor,
    /// Per-channel 1/√(biased variance + eps), `[C]`.
    pub invstd: Tensor,
    /// The forward output, when a ReLU was fused into it ([`BatchNormConfig::relu`]): the
    /// backward passes the gradient only where it is positive, as ReLU's backward does.
    pub relu_output: Option<Tensor>,
}

impl BatchNormSaved {
    /// What evaluation mode normalises with: the running mean and 1/√(running var + eps).
    /// No `relu_output`: the caller, who has the output, sets it when the config fuses a ReLU.
    pub fn from_running(running_mean: &Tensor, running_var: &Tensor, config: &BatchNormConfig) -> Result<Self> {
        Ok(Self {
            mean: running_mean.clone(),
            invstd: running_var.add_scalar(config.eps)?.sqrt()?.recip()?,
            relu_output: None,
        })
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

/// Batch norm's momentum (for the running statistics) and eps, PyTorch's defaults; and
/// whether a ReLU follows in the same pass (`BatchNorm2d` then `ReLU`, one kernel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub momentum: f32,
    pub eps: f32,
    pub relu: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self { momentum: 0.1, eps: 1e-5, relu: false }
    }
}

/// The GPU kernels' view of an NCHW tensor.
fn channel_shape(t: &Tensor) -> ChannelShape {
    ChannelShape { batch: t.shape[0], channels: t.shape[1], plane: t.shape[2] * t.shape[3] }
}

fn buffer(t: Option<&Tensor>) -> Option<&kiln_wgsl::GpuBuffer> {
    t.map(Tensor::gpu_buffer)
}

impl Tensor {
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
        let _op = profile::enter("batch_norm2d_train");
        const OP: &str = "batch_norm2d_train";
        self.check_batch_norm(OP, &[weight, bias, Some(running_mean), Some(running_var)])?;
        let count = (self.len() / self.shape[1]) as f32;
        if count < 2.0 {
            return Err(TensorError::InvalidArgument {
                op: OP,
                why: format!("training needs more than one value per channel, got shape {:?}", self.shape),
            });
        }
        let Device::Gpu(ctx) = &self.device() else {
            return Ok(self.cpu_batch_norm_train(weight, bias, running_mean, running_var, config));
        };
        // The running statistics are updated in place: other handles keep their values.
        running_mean.unshare()?;
        running_var.unshare()?;
        let shape = channel_shape(self);
        let running = (running_mean.gpu_buffer(), running_var.gpu_buffer());
        let (mean, invstd) = batch_norm_stats(ctx, self.gpu_buffer(), &shape, running, config.eps, config.momentum)?;
        let affine = Affine { weight: buffer(weight), bias: buffer(bias) };
        let out =
            batch_norm_normalize(ctx, self.gpu_buffer(), &shape, &mean, Scale::Invstd(&invstd), affine, config.relu)?;
        let per_channel = |b| Tensor::gpu(b, vec![shape.channels], DType::F32);
        let output = Tensor::gpu(out, self.shape.clone(), DType::F32);
        let relu_output = config.relu.then(|| output.clone());
        Ok((output, BatchNormSaved { mean: per_channel(mean), invstd: per_channel(invstd), relu_output }))
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
        let _op = profile::enter("batch_norm2d_eval");
        self.check_batch_norm("batch_norm2d_eval", &[weight, bias, Some(running_mean), Some(running_var)])?;
        let Device::Gpu(ctx) = &self.device() else {
            let saved = BatchNormSaved::from_running(running_mean, running_var, config)?;
            return Ok(self.cpu_normalize(&saved, weight, bias, config.relu));
        };
        let scale = Scale::Variance(running_var.gpu_buffer(), config.eps);
        let affine = Affine { weight: buffer(weight), bias: buffer(bias) };
        let shape = channel_shape(self);
        let out = batch_norm_normalize(
            ctx,
            self.gpu_buffer(),
            &shape,
            running_mean.gpu_buffer(),
            scale,
            affine,
            config.relu,
        )?;
        Ok(Tensor::gpu(out, self.shape.clone(), DType::F32))
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
        let _op = profile::enter("batch_norm2d_backward");
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
        if let Some(output) = &saved.relu_output {
            self.expect_same_device(OP, output)?;
            if output.shape != input.shape {
                return Err(TensorError::ShapeMismatch {
                    op: OP,
                    lhs: output.shape.clone(),
                    rhs: input.shape.clone(),
                    why: "the saved ReLU output must have the input's shape",
                });
            }
        }
        let Device::Gpu(ctx) = &self.device() else {
            return self.cpu_batch_norm_backward(input, weight, has_bias, saved, training);
        };
        let shape = channel_shape(input);
        let inputs = BackwardInputs {
            x: input.gpu_buffer(),
            mean: saved.mean.gpu_buffer(),
            invstd: saved.invstd.gpu_buffer(),
            relu_output: buffer(saved.relu_output.as_ref()),
        };
        let (sum_dy, sum_dot) = batch_norm_backward_sums(ctx, self.gpu_buffer(), &inputs, &shape)?;
        let dx = batch_norm_backward_input(
            ctx,
            self.gpu_buffer(),
            &inputs,
            buffer(weight),
            (&sum_dy, &sum_dot),
            &shape,
            training,
        )?;
        let per_channel = |b| Tensor::gpu(b, vec![shape.channels], DType::F32);
        Ok(BatchNormGrads {
            input: Tensor::gpu(dx, input.shape.clone(), DType::F32),
            weight: weight.map(|_| per_channel(sum_dot)),
            bias: has_bias.then(|| per_channel(sum_dy)),
        })
    }
}

/// Channel `c`'s values in an NCHW buffer: one run of H·W per batch item.
fn channel_runs(data: &[f32], channels: usize, plane: usize, c: usize) -> impl Iterator<Item = &[f32]> {
    data.chunks(plane).skip(c).step_by(channels)
}

/// Independent running sums in the statistics' loops (see `sum_in_lanes`).
const STAT_LANES: usize = 8;

/// Σ dy and Σ dy·x̂ (x̂ = (x − mean)·invstd) over one plane, in f64, in lanes as
/// `sum_in_lanes` (two sums at once).
#[inline(always)]
fn sum_and_dot_f64(dy: &[f32], x: &[f32], mean: f32, invstd: f32) -> (f64, f64) {
    let (mut sums, mut dots) = ([0.0f64; STAT_LANES], [0.0f64; STAT_LANES]);
    let (mut dy_chunks, mut x_chunks) = (dy.chunks_exact(STAT_LANES), x.chunks_exact(STAT_LANES));
    for (g, v) in (&mut dy_chunks).zip(&mut x_chunks) {
        for i in 0..STAT_LANES {
            sums[i] += g[i] as f64;
            dots[i] += (g[i] * (v[i] - mean) * invstd) as f64;
        }
    }
    let (mut sum, mut dot) = (sums.iter().sum::<f64>(), dots.iter().sum::<f64>());
    for (&g, &v) in dy_chunks.remainder().iter().zip(x_chunks.remainder()) {
        sum += g as f64;
        dot += (g * (v - mean) * invstd) as f64;
    }
    (sum, dot)
}

/// The per-channel scalar of `t` (a `[C]` tensor on the CPU), or `default` without one.
fn per_channel_values(t: Option<&Tensor>, channels: usize, default: f32) -> Vec<f32> {
    t.map_or_else(|| vec![default; channels], |t| t.cpu_values().to_vec())
}

impl Tensor {
    fn nchw(&self) -> (usize, usize) {
        (self.shape[1], self.shape[2] * self.shape[3])
    }

    /// `(x − center[c])·scale[c] + shift[c]` over every plane, in parallel; then max(·, 0)
    /// when `relu`.
    fn cpu_per_channel_affine(&self, center: &[f32], scale: &[f32], shift: &[f32], relu: bool) -> Tensor {
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
                if relu {
                    out.iter_mut().for_each(|o| *o = o.max(0.0));
                }
            });
        Tensor::cpu_f32(out, self.shape.clone())
    }

    /// (x − mean)·invstd·γ + β with saved statistics, as one pass (and the ReLU, when `relu`).
    fn cpu_normalize(
        &self,
        saved: &BatchNormSaved,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        relu: bool,
    ) -> Tensor {
        let channels = self.shape[1];
        let (gamma, beta) = (per_channel_values(weight, channels, 1.0), per_channel_values(bias, channels, 0.0));
        let (mean, invstd) = (saved.mean.cpu_values(), saved.invstd.cpu_values());
        let scale: Vec<f32> = (0..channels).map(|c| invstd[c] * gamma[c]).collect();
        self.cpu_per_channel_affine(mean, &scale, &beta, relu)
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
                widest_simd!({
                    let sum: f64 = channel_runs(x, channels, plane, c)
                        .map(|run| sum_in_lanes::<f64, STAT_LANES>(run, f64::from))
                        .sum();
                    let mean = sum / count;
                    let squares: f64 = channel_runs(x, channels, plane, c)
                        .map(|run| sum_in_lanes::<f64, STAT_LANES>(run, |v| (f64::from(v) - mean).powi(2)))
                        .sum();
                    (mean as f32, (squares / count) as f32)
                })
            })
            .collect();
        let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
        let var: Vec<f32> = stats.iter().map(|s| s.1).collect();
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + config.eps).sqrt()).collect();
        let mut saved = BatchNormSaved {
            mean: Tensor::cpu_f32(mean.clone(), vec![channels]),
            invstd: Tensor::cpu_f32(invstd, vec![channels]),
            relu_output: None,
        };
        let output = self.cpu_normalize(&saved, weight, bias, config.relu);
        saved.relu_output = config.relu.then(|| output.clone());
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
    ) -> Result<BatchNormGrads> {
        let (channels, plane) = input.nchw();
        // Through a fused ReLU, the gradient passes only where its output was positive.
        let masked = saved.relu_output.as_ref().map(|output| self.relu_backward(output)).transpose()?;
        let grad_tensor = masked.as_ref().unwrap_or(self);
        let (dy, x) = (grad_tensor.cpu_values(), input.cpu_values());
        let (mean, invstd) = (saved.mean.cpu_values(), saved.invstd.cpu_values());
        // Σdy and Σdy·x̂ per channel.
        let sums: Vec<(f32, f32)> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let runs = channel_runs(dy, channels, plane, c).zip(channel_runs(x, channels, plane, c));
                let (sum, dot) = widest_simd!(runs.fold((0.0f64, 0.0f64), |(sum, dot), (g, v)| {
                    let (s, d) = sum_and_dot_f64(g, v, mean[c], invstd[c]);
                    (sum + s, dot + d)
                }));
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
            grad_tensor.cpu_per_channel_affine(&zeros, &scale, &zeros, false)
        };
        let column = |pick: fn(&(f32, f32)) -> f32| Tensor::cpu_f32(sums.iter().map(pick).collect(), vec![channels]);
        Ok(BatchNormGrads {
            input: input_grad,
            weight: weight.map(|_| column(|s| s.1)),
            bias: has_bias.then(|| column(|s| s.0)),
        })
    }
}
