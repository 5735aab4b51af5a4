//! Training-mode batch norm, the ReLU after it and a max pooling as one op, forward and
//! backward: the repeated block of the ASL CNN (Conv → BatchNorm → ReLU → MaxPool), which
//! `Sequential` runs through this op in training mode. On the CPU one task per channel
//! takes its statistics, then normalises each plane into a plane-sized buffer and pools it
//! from there, so the batch's full-size normalised output is never stored or read back by
//! the pooling; backward, each plane's pooled gradient, masked where the maximum was not
//! positive, is scattered into a buffer of the channel's own and batch norm's backward runs
//! on it, so the full-size pooling gradient and ReLU output are never read from memory.
//! Every value has the bits the three ops in turn give. The GPU runs their kernels in turn.

use kiln_wgsl::kernels::pool::PoolShape;
use rayon::prelude::*;

use super::batch_norm::{
    ChannelGrad, ChannelStatistics, affine_plane, channel_backward, channel_runs, channel_statistics,
    per_channel_values, planes_by_channel_mut, update_running_statistics,
};
use super::pool::pool_plane;
use crate::profile;
use crate::{BatchNormConfig, BatchNormGrads, BatchNormSaved, DType, Device, Pool2d, Result, Tensor, TensorError};

/// What [`Tensor::batch_norm2d_relu_max_pool2d`] returns: the pooled output, and what its
/// backward pass needs.
#[derive(Clone, Debug)]
pub struct BatchNormReluPool {
    output: Tensor,
    positions: Tensor,
    /// The batch statistics; on the GPU with the full-size ReLU output, which its batch
    /// norm backward reads.
    statistics: BatchNormSaved,
}

impl BatchNormReluPool {
    /// max_pool2d(max(batch_norm2d(x), 0)), `[N, C, PH, PW]`.
    pub fn output(&self) -> &Tensor {
        &self.output
    }

    /// The i32 position (h·W + w within its plane of the input) of each pooled maximum, as
    /// [`Tensor::max_pool2d`] gives them.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }

    /// The batch's per-channel mean and 1/√(var + eps), as [`Tensor::batch_norm2d_train`]
    /// saves them.
    pub fn statistics(&self) -> &BatchNormSaved {
        &self.statistics
    }
}

/// The CPU forward pass, one task per channel: its statistics, then each of its planes
/// normalised (with the ReLU) into a buffer the task reuses and pooled from there.
fn cpu_forward(
    x: &[f32],
    (channels, plane): (usize, usize),
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
    pool: &PoolShape,
) -> (Vec<f32>, Vec<i32>, Vec<ChannelStatistics>) {
    let [ph, pw] = pool.output();
    let pooled_len = x.len() / plane * ph * pw;
    let (mut y, mut at) = (vec![0.0f32; pooled_len], vec![0i32; pooled_len]);
    let by_channel: Vec<_> = planes_by_channel_mut(&mut y, channels, ph * pw)
        .into_iter()
        .zip(planes_by_channel_mut(&mut at, channels, ph * pw))
        .collect();
    let stats = by_channel
        .into_par_iter()
        .enumerate()
        .map(|(c, (mut ys, mut ats))| {
            let stats = widest_simd!(channel_statistics(x, channels, plane, c, eps));
            let affine = (stats.mean, stats.invstd * gamma[c], beta[c]);
            let mut normalized = vec![0.0f32; plane];
            for ((y, at), x) in ys.iter_mut().zip(ats.iter_mut()).zip(channel_runs(x, channels, plane, c)) {
                widest_simd!(affine_plane(&mut normalized, x, affine, true));
                pool_plane(&normalized, pool, y, at);
            }
            stats
        })
        .collect();
    (y, at, stats)
}

/// The CPU backward pass, one task per channel: each plane's pooled gradient, where its
/// maximum was positive, added at the maximum's position in a buffer of the channel's
/// planes (as max_pool2d's backward and then the ReLU's mask give it), then batch norm's
/// backward on that buffer. Returns the input gradient and per channel Σg and Σg·x̂.
fn cpu_backward(
    (grad, output, positions): (&[f32], &[f32], &[i32]),
    x: &[f32],
    (channels, plane, pooled): (usize, usize, usize),
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<(f32, f32)>) {
    let count = (x.len() / channels) as f32;
    let mut x_grad = vec![0.0f32; x.len()];
    let mut grad_planes = planes_by_channel_mut(&mut x_grad, channels, plane);
    let sums = grad_planes
        .par_iter_mut()
        .enumerate()
        .map(|(c, grads)| {
            let mut scattered = vec![0.0f32; grads.len() * plane];
            let pooled_runs = channel_runs(grad, channels, pooled, c)
                .zip(channel_runs(output, channels, pooled, c))
                .zip(channel_runs(positions, channels, pooled, c));
            for (dy, ((g, y), at)) in scattered.chunks_exact_mut(plane).zip(pooled_runs) {
                for ((&g, &y), &i) in g.iter().zip(y).zip(at) {
                    if y > 0.0 {
                        dy[i as usize] += g;
                    }
                }
            }
            // The mask is in the scattered gradient already: the ReLU output is not read.
            let planes = scattered.chunks_exact(plane).zip(channel_runs(x, channels, plane, c)).map(|(d, v)| (d, v, d));
            let channel =
                ChannelGrad { scale: gamma[c] * invstd[c], mean: mean[c], invstd: invstd[c], count, training: true };
            widest_simd!(channel_backward::<false>(grads, planes, channel))
        })
        .collect();
    drop(grad_planes);
    (x_grad, sums)
}

impl Tensor {
    /// max_pool2d(max(batch_norm2d_train(x), 0)) of `[N, C, H, W]`, as the three ops in turn
    /// give it (the running statistics moved as [`Tensor::batch_norm2d_train`] moves them;
    /// `config.relu` is implied), with what the backward pass needs.
    pub fn batch_norm2d_relu_max_pool2d(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
        pool: &Pool2d,
    ) -> Result<BatchNormReluPool> {
        let _op = profile::enter("batch_norm2d_relu_max_pool2d");
        const OP: &str = "batch_norm2d_relu_max_pool2d";
        let channels = self.check_batch_norm_training(OP, &[weight, bias, Some(running_mean), Some(running_var)])?;
        let pool_shape = pool.shape(OP, &self.shape)?;
        let config = BatchNormConfig { relu: true, ..*config };
        let Device::Cpu = self.device() else {
            let (normalized, statistics) = self.batch_norm2d_train(weight, bias, running_mean, running_var, &config)?;
            let (output, positions) = normalized.max_pool2d(pool)?;
            return Ok(BatchNormReluPool { output, positions, statistics });
        };
        let plane = self.shape[2] * self.shape[3];
        let (gamma, beta) = (per_channel_values(weight, channels, 1.0), per_channel_values(bias, channels, 0.0));
        let (y, at, stats) =
            cpu_forward(self.cpu_values(), (channels, plane), (&gamma, &beta), config.eps, &pool_shape);
        let statistics = update_running_statistics(&stats, self.len() / channels, running_mean, running_var, &config);
        let [ph, pw] = pool_shape.output();
        let out_shape = vec![self.shape[0], channels, ph, pw];
        let (output, positions) = (Tensor::cpu_f32(y, out_shape.clone()), Tensor::cpu_i32(at, out_shape));
        Ok(BatchNormReluPool { output, positions, statistics })
    }

    /// The gradients of [`Tensor::batch_norm2d_relu_max_pool2d`] from this gradient of its
    /// output: the input's, the scale's (when `weight` is given) and the shift's (when
    /// `with_bias`), as [`Tensor::batch_norm2d_backward`] gives them in training mode.
    pub fn batch_norm2d_relu_max_pool2d_backward(
        &self,
        saved: &BatchNormReluPool,
        input: &Tensor,
        weight: Option<&Tensor>,
        with_bias: bool,
        pool: &Pool2d,
    ) -> Result<BatchNormGrads> {
        let _op = profile::enter("batch_norm2d_relu_max_pool2d_backward");
        const OP: &str = "batch_norm2d_relu_max_pool2d_backward";
        let channels = input.check_batch_norm(OP, &[weight, Some(&saved.statistics.mean)])?;
        self.expect_dtype(OP, DType::F32)?;
        self.expect_same_device(OP, input)?;
        self.expect_same_device(OP, &saved.output)?;
        let [ph, pw] = pool.shape(OP, &input.shape)?.output();
        let pooled_shape = [input.shape[0], channels, ph, pw];
        if saved.output.shape != pooled_shape {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: saved.output.shape.clone(),
                rhs: pooled_shape.to_vec(),
                why: "the saved forward pass is another op's",
            });
        }
        if self.shape != pooled_shape {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: pooled_shape.to_vec(),
                why: "the gradient must have the pooled output's shape",
            });
        }
        let Device::Cpu = self.device() else {
            let dy = self.max_pool2d_backward(&saved.positions, &input.shape, pool)?;
            return dy.batch_norm2d_backward(input, weight, with_bias, &saved.statistics, true);
        };
        let gamma = per_channel_values(weight, channels, 1.0);
        let (mean, invstd) = (saved.statistics.mean.cpu_values(), saved.statistics.invstd.cpu_values());
        let pooled = (self.cpu_values(), saved.output.cpu_values(), saved.positions.host_i32(OP)?);
        let sizes = (channels, input.shape[2] * input.shape[3], ph * pw);
        let (x_grad, sums) = cpu_backward(pooled, input.cpu_values(), sizes, &gamma, (mean, invstd));
        let column = |pick: fn(&(f32, f32)) -> f32| Tensor::cpu_f32(sums.iter().map(pick).collect(), vec![channels]);
        Ok(BatchNormGrads {
            input: Tensor::cpu_f32(x_grad, input.shape.clone()),
            weight: weight.map(|_| column(|s| s.1)),
            bias: with_bias.then(|| column(|s| s.0)),
        })
    }
}
