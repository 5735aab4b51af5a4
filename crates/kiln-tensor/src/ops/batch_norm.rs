//! Batch normalisation over the channels of NCHW tensors, as PyTorch's BatchNorm2d, with
//! the ReLU that often follows it optionally applied in the same pass.
//!
//! Both devices run it fused: on the GPU the training forward is two launches (per-channel
//! statistics by one workgroup per channel, then the normalisation) and so is the backward
//! (per-channel sums, then the input gradient), reduced in a fixed order; on the CPU one
//! task per channel makes its passes (f64 sums, then the output or input gradient, the
//! ReLU's mask inline) while that channel's data is in the core's cache, also
//! deterministic. The CPU version is the reference.

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
    pub(super) fn check_batch_norm(&self, op: &'static str, per_channel: &[Option<&Tensor>]) -> Result<usize> {
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

    /// [`Tensor::check_batch_norm`] for training mode, which needs more than one value per
    /// channel for a variance.
    pub(super) fn check_batch_norm_training(&self, op: &'static str, per_channel: &[Option<&Tensor>]) -> Result<usize> {
        let channels = self.check_batch_norm(op, per_channel)?;
        if self.len().checked_div(channels).is_none_or(|count| count < 2) {
            return Err(TensorError::InvalidArgument {
                op,
                why: format!("training needs more than one value per channel, got shape {:?}", self.shape),
            });
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
        self.check_batch_norm_training(OP, &[weight, bias, Some(running_mean), Some(running_var)])?;
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
pub(super) fn channel_runs<T>(
    data: &[T],
    channels: usize,
    plane: usize,
    c: usize,
) -> impl Iterator<Item = &[T]> + Clone {
    data.chunks(plane).skip(c).step_by(channels)
}

/// An NCHW buffer's planes grouped by channel: entry c holds channel c's plane of every
/// batch item, so one task can own a channel from its statistics to its output while that
/// channel's data is still in the core's cache.
pub(super) fn planes_by_channel_mut<T>(data: &mut [T], channels: usize, plane: usize) -> Vec<Vec<&mut [T]>> {
    let mut by_channel: Vec<Vec<&mut [T]>> = (0..channels).map(|_| Vec::new()).collect();
    for (i, run) in data.chunks_mut(plane).enumerate() {
        by_channel[i % channels].push(run);
    }
    by_channel
}

/// Independent running sums in the statistics' loops (see `sum_in_lanes`).
const STAT_LANES: usize = 8;

/// The gradient a fused ReLU lets through: where its output was positive, as ReLU's backward.
#[inline(always)]
fn through_relu<const RELU: bool>(dy: f32, output: f32) -> f32 {
    if !RELU || output > 0.0 { dy } else { 0.0 }
}

/// Σ g and Σ g·x̂ (x̂ = (x − mean)·invstd, g the gradient through the ReLU when `RELU`, else
/// `dy`, and `output` unused) over one plane, in f64, in lanes as `sum_in_lanes` (two sums
/// at once).
#[inline(always)]
fn sum_and_dot_f64<const RELU: bool>(dy: &[f32], x: &[f32], output: &[f32], mean: f32, invstd: f32) -> (f64, f64) {
    let (mut sums, mut dots) = ([0.0f64; STAT_LANES], [0.0f64; STAT_LANES]);
    let chunks = |values| <[f32]>::chunks_exact(values, STAT_LANES);
    let (mut dy_chunks, mut x_chunks, mut out_chunks) = (chunks(dy), chunks(x), chunks(output));
    for ((d, v), o) in (&mut dy_chunks).zip(&mut x_chunks).zip(&mut out_chunks) {
        for i in 0..STAT_LANES {
            let g = through_relu::<RELU>(d[i], o[i]);
            sums[i] += g as f64;
            dots[i] += (g * (v[i] - mean) * invstd) as f64;
        }
    }
    let (mut sum, mut dot) = (sums.iter().sum::<f64>(), dots.iter().sum::<f64>());
    let rest = dy_chunks.remainder().iter().zip(x_chunks.remainder()).zip(out_chunks.remainder());
    for ((&d, &v), &o) in rest {
        let g = through_relu::<RELU>(d, o);
        sum += g as f64;
        dot += (g * (v - mean) * invstd) as f64;
    }
    (sum, dot)
}

/// One plane of the batch-norm input gradient, from its channel's sums: in training mode
/// dx = γ·invstd·(g − Σg/m − x̂·Σ(g·x̂)/m) with x̂ = (x − mean)·invstd (the statistics
/// depend on x), in evaluation mode γ·invstd·g. `g` as in `sum_and_dot_f64`.
#[inline(always)]
fn input_grad_plane<const RELU: bool>(
    grad: &mut [f32],
    (dy, x, output): (&[f32], &[f32], &[f32]),
    channel: &ChannelGrad,
    (mean_sum, mean_dot): (f32, f32),
) {
    let ChannelGrad { scale, mean, invstd, training, .. } = *channel;
    if training {
        for (((g, &d), &v), &o) in grad.iter_mut().zip(dy).zip(x).zip(output) {
            let normalized = (v - mean) * invstd;
            *g = scale * (through_relu::<RELU>(d, o) - mean_sum - normalized * mean_dot);
        }
    } else {
        for ((g, &d), &o) in grad.iter_mut().zip(dy).zip(output) {
            *g = through_relu::<RELU>(d, o) * scale;
        }
    }
}

/// What one channel's backward needs besides its data (see `input_grad_plane`): `scale` is
/// γ·invstd, `count` the values per channel (m).
#[derive(Clone, Copy)]
pub(super) struct ChannelGrad {
    pub(super) scale: f32,
    pub(super) mean: f32,
    pub(super) invstd: f32,
    pub(super) count: f32,
    pub(super) training: bool,
}

/// One channel's backward: Σg and Σg·x̂ over its planes (dy, x, ReLU output), then its
/// input gradient into `grads` while that data is still in cache. Returns the two sums.
#[inline(always)]
pub(super) fn channel_backward<'a, const RELU: bool>(
    grads: &mut [&mut [f32]],
    planes: impl Iterator<Item = (&'a [f32], &'a [f32], &'a [f32])> + Clone,
    channel: ChannelGrad,
) -> (f32, f32) {
    let (mut sum, mut dot) = (0.0f64, 0.0f64);
    for (dy, x, output) in planes.clone() {
        let (s, d) = sum_and_dot_f64::<RELU>(dy, x, output, channel.mean, channel.invstd);
        (sum, dot) = (sum + s, dot + d);
    }
    let (sum, dot) = (sum as f32, dot as f32);
    let (mean_sum, mean_dot) = (sum / channel.count, dot / channel.count);
    for (grad, inputs) in grads.iter_mut().zip(planes) {
        input_grad_plane::<RELU>(grad, inputs, &channel, (mean_sum, mean_dot));
    }
    (sum, dot)
}

/// `(x − center)·scale + shift` over one plane, then max(·, 0) when `relu`.
#[inline(always)]
pub(super) fn affine_plane(out: &mut [f32], x: &[f32], (center, scale, shift): (f32, f32, f32), relu: bool) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = (x - center) * scale + shift;
    }
    if relu {
        out.iter_mut().for_each(|o| *o = o.max(0.0));
    }
}

/// One channel's batch statistics in a training forward pass.
#[derive(Clone, Copy)]
pub(super) struct ChannelStatistics {
    pub(super) mean: f32,
    /// Biased, as the normalisation uses it.
    pub(super) var: f32,
    pub(super) invstd: f32,
}

/// Channel `c`'s mean and variance over its planes in an NCHW buffer, in f64 lanes. Two
/// passes (mean, then squared deviations) keep the variance accurate when the mean is
/// large against the spread.
#[inline(always)]
pub(super) fn channel_statistics(x: &[f32], channels: usize, plane: usize, c: usize, eps: f32) -> ChannelStatistics {
    let count = (x.len() / channels) as f64;
    let mut sum = 0.0;
    for run in channel_runs(x, channels, plane, c) {
        sum += sum_in_lanes::<f64, STAT_LANES>(run, f64::from);
    }
    let mean = sum / count;
    let mut squares = 0.0;
    for run in channel_runs(x, channels, plane, c) {
        squares += sum_in_lanes::<f64, STAT_LANES>(run, |v| (f64::from(v) - mean).powi(2));
    }
    let (mean, var) = (mean as f32, (squares / count) as f32);
    ChannelStatistics { mean, var, invstd: 1.0 / (var + eps).sqrt() }
}

/// Moves the running statistics toward the batch's (`count` values per channel; the
/// variance unbiased), as PyTorch, and returns what the backward pass needs (no ReLU
/// output: the caller sets it).
pub(super) fn update_running_statistics(
    stats: &[ChannelStatistics],
    count: usize,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    config: &BatchNormConfig,
) -> BatchNormSaved {
    let channels = stats.len();
    let column = |pick: fn(&ChannelStatistics) -> f32| stats.iter().map(pick).collect::<Vec<f32>>();
    let (mean, var) = (column(|s| s.mean), column(|s| s.var));
    let (m, unbias) = (config.momentum, (count as f64 / (count as f64 - 1.0)) as f32);
    let blend = |running: &Tensor, batch: &[f32]| {
        let values = running.cpu_values().iter().zip(batch).map(|(r, b)| r * (1.0 - m) + b * m).collect();
        Tensor::cpu_f32(values, vec![channels])
    };
    *running_mean = blend(running_mean, &mean);
    *running_var = blend(running_var, &var.iter().map(|v| v * unbias).collect::<Vec<_>>());
    BatchNormSaved {
        mean: Tensor::cpu_f32(mean, vec![channels]),
        invstd: Tensor::cpu_f32(column(|s| s.invstd), vec![channels]),
        relu_output: None,
    }
}

/// The per-channel scalar of `t` (a `[C]` tensor on the CPU), or `default` without one.
pub(super) fn per_channel_values(t: Option<&Tensor>, channels: usize, default: f32) -> Vec<f32> {
    t.map_or_else(|| vec![default; channels], |t| t.cpu_values().to_vec())
}

impl Tensor {
    /// (channels, values per plane) of an NCHW tensor.
    pub(super) fn nchw(&self) -> (usize, usize) {
        (self.shape[1], self.shape[2] * self.shape[3])
    }

    /// (x − mean)·invstd·γ + β with saved statistics, as one pass (and the ReLU, when `relu`),
    /// in parallel over the planes.
    fn cpu_normalize(
        &self,
        saved: &BatchNormSaved,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        relu: bool,
    ) -> Tensor {
        let (channels, plane) = self.nchw();
        let (gamma, beta) = (per_channel_values(weight, channels, 1.0), per_channel_values(bias, channels, 0.0));
        let (mean, invstd) = (saved.mean.cpu_values(), saved.invstd.cpu_values());
        let mut out = vec![0.0f32; self.len()];
        out.par_chunks_mut(plane)
            .zip(self.cpu_values().par_chunks(plane))
            .enumerate()
            .with_min_len(rows_per_task(plane, 4096))
            .for_each(|(i, (out, x))| {
                let c = i % channels;
                widest_simd!(affine_plane(out, x, (mean[c], invstd[c] * gamma[c], beta[c]), relu))
            });
        Tensor::cpu_f32(out, self.shape.clone())
    }

    /// The training forward, one task per channel: its statistics, then its output while
    /// the channel's input is still in cache.
    fn cpu_batch_norm_train(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
    ) -> (Tensor, BatchNormSaved) {
        let (channels, plane) = self.nchw();
        let (gamma, beta) = (per_channel_values(weight, channels, 1.0), per_channel_values(bias, channels, 0.0));
        let x = self.cpu_values();
        let count = self.len() / channels;
        let mut out = vec![0.0f32; self.len()];
        let mut out_planes = planes_by_channel_mut(&mut out, channels, plane);
        let stats: Vec<ChannelStatistics> = out_planes
            .par_iter_mut()
            .enumerate()
            .map(|(c, outputs)| {
                let stats = widest_simd!(channel_statistics(x, channels, plane, c, config.eps));
                let affine = (stats.mean, stats.invstd * gamma[c], beta[c]);
                widest_simd!(for (out, x) in outputs.iter_mut().zip(channel_runs(x, channels, plane, c)) {
                    affine_plane(out, x, affine, config.relu);
                });
                stats
            })
            .collect();
        drop(out_planes);
        let output = Tensor::cpu_f32(out, self.shape.clone());
        let mut saved = update_running_statistics(&stats, count, running_mean, running_var, config);
        saved.relu_output = config.relu.then(|| output.clone());
        (output, saved)
    }

    /// The backward, one task per channel: Σg and Σg·x̂, then the channel's input gradient
    /// while its data is still in cache, the fused ReLU's mask applied inline.
    fn cpu_batch_norm_backward(
        &self,
        input: &Tensor,
        weight: Option<&Tensor>,
        has_bias: bool,
        saved: &BatchNormSaved,
        training: bool,
    ) -> Result<BatchNormGrads> {
        let (channels, plane) = input.nchw();
        let (dy, x) = (self.cpu_values(), input.cpu_values());
        let (mean, invstd) = (saved.mean.cpu_values(), saved.invstd.cpu_values());
        // Without a ReLU the mask is never read: any plane-shaped data stands in for it.
        let output = saved.relu_output.as_ref().map_or(dy, |o| o.cpu_values());
        let gamma = per_channel_values(weight, channels, 1.0);
        let count = (input.len() / channels) as f32;
        let mut grad = vec![0.0f32; input.len()];
        let mut grad_planes = planes_by_channel_mut(&mut grad, channels, plane);
        let sums: Vec<(f32, f32)> = grad_planes
            .par_iter_mut()
            .enumerate()
            .map(|(c, grads)| {
                let run = |data| channel_runs(data, channels, plane, c);
                let planes = run(dy).zip(run(x)).zip(run(output)).map(|((d, v), o)| (d, v, o));
                let channel =
                    ChannelGrad { scale: gamma[c] * invstd[c], mean: mean[c], invstd: invstd[c], count, training };
                match saved.relu_output {
                    Some(_) => widest_simd!(channel_backward::<true>(grads, planes, channel)),
                    None => widest_simd!(channel_backward::<false>(grads, planes, channel)),
                }
            })
            .collect();
        drop(grad_planes);
        let column = |pick: fn(&(f32, f32)) -> f32| Tensor::cpu_f32(sums.iter().map(pick).collect(), vec![channels]);
        Ok(BatchNormGrads {
            input: Tensor::cpu_f32(grad, input.shape.clone()),
            weight: weight.map(|_| column(|s| s.1)),
            bias: has_bias.then(|| column(|s| s.0)),
        })
    }
}
