//! A convolution, the ReLU after it and a max pooling as one op, forward and backward: the
//! repeated block of the Fashion-MNIST CNN and LeNet (Conv → ReLU → MaxPool), which
//! `Sequential` runs through this op. On the CPU each image goes through all three while
//! its convolution output is in cache, so the batch's full-size convolution output (4.7 M
//! values for the Fashion-MNIST CNN's first layer at batch 256) is never stored, read back
//! by the pooling, scattered into by the pooling's gradient or masked by the ReLU's: the
//! backward pass masks the pooled gradient (a quarter the size), sums the bias gradient
//! from it and scatters it into one image's buffer at a time. The GPU runs the three ops'
//! kernels in turn.

use kiln_wgsl::kernels::conv::ConvShape;
use kiln_wgsl::kernels::pool::PoolShape;
use rayon::prelude::*;

use super::conv::{check_bias, conv_image, geometry, input_grad_image, scratch_len, weight_grad_image};
use super::matmul::sum_over_batch_writing;
use super::pool::pool_plane;
use crate::profile;
use crate::{Conv2d, DType, Device, Pool2d, Result, Tensor, TensorError};

/// What [`Tensor::conv2d_relu_max_pool2d`] returns: the pooled output, and what its
/// backward pass needs.
#[derive(Clone, Debug)]
pub struct ConvReluPool {
    output: Tensor,
    positions: Tensor,
    /// `[N, O, OH, OW]`, the convolution output's shape that `positions` index into.
    convolved_shape: Vec<usize>,
    /// The GPU's column matrix of the input, kept for the weight gradient.
    columns: Option<Tensor>,
}

impl ConvReluPool {
    /// max_pool2d(max(conv2d(x), 0)), `[N, O, PH, PW]`.
    pub fn output(&self) -> &Tensor {
        &self.output
    }

    /// The i32 position (h·OW + w within its plane of the convolution output) of each
    /// pooled maximum, as [`Tensor::max_pool2d`] gives them.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }
}

/// The CPU forward pass, image by image: the convolution with its bias and ReLU into a
/// buffer the worker reuses, then each of its planes pooled (`pool` for the batch's
/// convolution output).
fn cpu_forward(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    out_channels: usize,
    pool: &PoolShape,
) -> (Vec<f32>, Vec<i32>) {
    let [oh, ow] = s.output().expect("checked");
    let [ph, pw] = pool.output();
    let (spatial, pooled, image_len) = (oh * ow, ph * pw, s.channels * s.height * s.width);
    let (mut y, mut at) = (vec![0.0f32; s.batch * out_channels * pooled], vec![0i32; s.batch * out_channels * pooled]);
    if y.is_empty() {
        return (y, at);
    }
    y.par_chunks_mut(out_channels * pooled)
        .zip(at.par_chunks_mut(out_channels * pooled))
        .zip(x.par_chunks(image_len))
        .for_each_init(
            || (vec![0.0f32; scratch_len(s)], vec![0.0f32; out_channels * spatial]),
            |(cols, convolved), ((y, at), image)| {
                conv_image(image, kernel, bias, true, s, out_channels, cols, convolved);
                let planes =
                    convolved.chunks_exact(spatial).zip(y.chunks_exact_mut(pooled).zip(at.chunks_exact_mut(pooled)));
                for (plane, (y, at)) in planes {
                    pool_plane(plane, pool, y, at);
                }
            },
        );
    (y, at)
}

/// The CPU weight gradient and (with `input_grad`) input gradient from the masked pooled
/// gradient, image by image: scattered back to where each maximum came from, in a buffer
/// the run reuses, then the convolution's two products. The weight gradient is summed in
/// the fixed order of [`sum_over_batch_writing`].
#[allow(clippy::too_many_arguments)]
fn cpu_backward(
    grad: &[f32],
    positions: &[i32],
    x: &[f32],
    kernel: &[f32],
    s: &ConvShape,
    out_channels: usize,
    pooled: usize,
    input_grad: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let [oh, ow] = s.output().expect("checked");
    let (spatial, image_len, grad_len) = (oh * ow, s.channels * s.height * s.width, out_channels * pooled);
    let mut x_grad = vec![0.0f32; if input_grad { s.batch * image_len } else { 0 }];
    let weight = sum_over_batch_writing(
        s.batch,
        out_channels * s.patch_len(),
        &mut x_grad,
        || (vec![0.0f32; scratch_len(s)], vec![0.0f32; out_channels * spatial]),
        |(scratch, convolved_grad), i, partial, first, image_grad| {
            convolved_grad.fill(0.0);
            let (grad, positions) = (&grad[i * grad_len..][..grad_len], &positions[i * grad_len..][..grad_len]);
            let planes = convolved_grad
                .chunks_exact_mut(spatial)
                .zip(grad.chunks_exact(pooled).zip(positions.chunks_exact(pooled)));
            for (plane, (grad, positions)) in planes {
                for (&g, &at) in grad.iter().zip(positions) {
                    plane[at as usize] += g;
                }
            }
            let image = &x[i * image_len..][..image_len];
            weight_grad_image(convolved_grad, image, s, out_channels, scratch, partial, first);
            if input_grad {
                input_grad_image(convolved_grad, kernel, s, out_channels, scratch, image_grad);
            }
        },
    );
    (weight, input_grad.then_some(x_grad))
}

impl Tensor {
    /// max_pool2d(max(conv2d(x, weight, bias), 0)) of `[N, C, H, W]`, as the three ops in
    /// turn give it, with the positions of the maxima for the backward pass.
    pub fn conv2d_relu_max_pool2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        conv: &Conv2d,
        pool: &Pool2d,
    ) -> Result<ConvReluPool> {
        let _op = profile::enter("conv2d_relu_max_pool2d");
        const OP: &str = "conv2d_relu_max_pool2d";
        let s = geometry(OP, self, weight, conv)?;
        check_bias(OP, weight, bias)?;
        let out_channels = weight.shape[0];
        let [oh, ow] = s.output().expect("checked");
        let convolved_shape = vec![s.batch, out_channels, oh, ow];
        let pool_shape = pool.shape(OP, &convolved_shape)?;
        match &self.device() {
            Device::Cpu => {
                let [ph, pw] = pool_shape.output();
                let bias = bias.map(Tensor::cpu_values);
                let (y, at) = cpu_forward(self.cpu_values(), weight.cpu_values(), bias, &s, out_channels, &pool_shape);
                let out_shape = vec![s.batch, out_channels, ph, pw];
                let (output, positions) = (Tensor::cpu_f32(y, out_shape.clone()), Tensor::cpu_i32(at, out_shape));
                Ok(ConvReluPool { output, positions, convolved_shape, columns: None })
            }
            Device::Gpu(_) => {
                let (convolved, columns) = self.conv2d_keeping_columns(weight, bias, conv, true)?;
                let (output, positions) = convolved.max_pool2d(pool)?;
                Ok(ConvReluPool { output, positions, convolved_shape, columns })
            }
        }
    }

    /// The gradients of [`Tensor::conv2d_relu_max_pool2d`] from this gradient of its output:
    /// the input's (when `input_grad`), the weight's and (when `with_bias`) the bias's.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_relu_max_pool2d_backward(
        &self,
        saved: &ConvReluPool,
        input: &Tensor,
        weight: &Tensor,
        conv: &Conv2d,
        pool: &Pool2d,
        with_bias: bool,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let _op = profile::enter("conv2d_relu_max_pool2d_backward");
        const OP: &str = "conv2d_relu_max_pool2d_backward";
        let s = geometry(OP, input, weight, conv)?;
        self.expect_dtype(OP, DType::F32)?;
        self.expect_same_device(OP, input)?;
        let out_channels = weight.shape[0];
        let [oh, ow] = s.output().expect("checked");
        let convolved_shape = [s.batch, out_channels, oh, ow];
        let [ph, pw] = pool.shape(OP, &convolved_shape)?.output();
        let mismatch = |lhs: &[usize], rhs: &[usize], why| TensorError::ShapeMismatch {
            op: OP,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            why,
        };
        if saved.convolved_shape != convolved_shape {
            return Err(mismatch(&saved.convolved_shape, &convolved_shape, "the saved forward pass is another op's"));
        }
        if self.shape != [s.batch, out_channels, ph, pw] || self.shape != saved.output.shape {
            return Err(mismatch(&self.shape, &saved.output.shape, "the gradient must have the pooled output's shape"));
        }
        // Zero where the pooled maximum, so the convolution's output there, is not positive;
        // the bias gradient from the same launch on the GPU.
        let (masked, bias) = if with_bias {
            let (masked, bias) = self.relu_backward_sum_per_channel(&saved.output)?;
            (masked, Some(bias))
        } else {
            (self.relu_backward(&saved.output)?, None)
        };
        let (input_grad, weight_grad) = match &self.device() {
            Device::Cpu => {
                let positions = saved.positions.host_i32(OP)?;
                let (w, x) = cpu_backward(
                    masked.cpu_values(),
                    positions,
                    input.cpu_values(),
                    weight.cpu_values(),
                    &s,
                    out_channels,
                    ph * pw,
                    input_grad,
                );
                (x.map(|x| Tensor::cpu_f32(x, input.shape.clone())), Tensor::cpu_f32(w, weight.shape.clone()))
            }
            Device::Gpu(_) => {
                let convolved_grad = masked.max_pool2d_backward(&saved.positions, &convolved_shape, pool)?;
                let columns = saved.columns.as_ref();
                let (x, w, _) =
                    convolved_grad.conv2d_backward_reusing(input, weight, conv, false, columns, input_grad)?;
                (x, w)
            }
        };
        Ok((input_grad, weight_grad, bias))
    }
}
