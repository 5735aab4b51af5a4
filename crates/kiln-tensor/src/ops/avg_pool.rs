//! 2-D average pooling, NCHW: strided windows (`AvgPool2d`, the padding counted in each
//! divisor as PyTorch's default `count_include_pad`) or adaptive ones (`AdaptiveAvgPool2d`,
//! the input cut into the output's number of nearly equal windows), and their backward
//! passes. On the GPU, kiln-wgsl's pool family.

use kiln_wgsl::kernels::pool::{AvgPoolShape, AvgWindows, avg_pool2d, avg_pool2d_backward};
use rayon::prelude::*;

use super::rows_per_task;
use crate::profile;
use crate::{DType, Device, Pool2d, Result, Tensor, TensorError};

/// Output `o`'s window along an axis of `size` with `count` outputs: the clipped range of
/// input positions it sums and its factor of the divisor (as pool.wgsl's `window`).
fn window(windows: &AvgWindows, axis: usize, o: usize, size: usize, count: usize) -> (std::ops::Range<usize>, usize) {
    match *windows {
        AvgWindows::Adaptive => {
            let (first, end) = (o * size / count, ((o + 1) * size).div_ceil(count));
            (first..end, end - first)
        }
        AvgWindows::Strided { kernel, stride, padding } => {
            let first = (o * stride[axis]) as isize - padding[axis] as isize;
            let end = first + kernel[axis] as isize;
            (first.max(0) as usize..(end.max(0) as usize).min(size), kernel[axis])
        }
    }
}

/// The outputs whose windows contain input position `i` (as pool.wgsl's `covering`).
fn covering(windows: &AvgWindows, axis: usize, i: usize, size: usize, count: usize) -> std::ops::Range<usize> {
    match *windows {
        AvgWindows::Adaptive => i * count / size..((i + 1) * count).div_ceil(size),
        AvgWindows::Strided { kernel, stride, padding } => {
            let at = i + padding[axis];
            let first = if at >= kernel[axis] { (at - kernel[axis]) / stride[axis] + 1 } else { 0 };
            first..(at / stride[axis] + 1).min(count)
        }
    }
}

/// The CPU reference, one plane per task: each output its window's sum in row-major order
/// over its divisor.
fn cpu_forward(x: &[f32], s: &AvgPoolShape) -> Vec<f32> {
    let [oh_n, ow_n] = s.out;
    let mut y = vec![0.0f32; s.planes * oh_n * ow_n];
    y.par_chunks_mut((oh_n * ow_n).max(1))
        .zip(x.par_chunks((s.height * s.width).max(1)))
        .with_min_len(rows_per_task(oh_n * ow_n, 1024))
        .for_each(|(y, plane)| {
            for oh in 0..oh_n {
                let (rows, row_factor) = window(&s.windows, 0, oh, s.height, oh_n);
                for ow in 0..ow_n {
                    let (cols, col_factor) = window(&s.windows, 1, ow, s.width, ow_n);
                    let total: f32 = rows.clone().flat_map(|h| cols.clone().map(move |w| plane[h * s.width + w])).sum();
                    y[oh * ow_n + ow] = total / (row_factor * col_factor) as f32;
                }
            }
        });
    y
}

/// The CPU reference of the backward pass: each input element sums, over the outputs whose
/// windows contain it, their gradients over their divisors.
fn cpu_backward(grad: &[f32], s: &AvgPoolShape) -> Vec<f32> {
    let [oh_n, ow_n] = s.out;
    let mut dx = vec![0.0f32; s.planes * s.height * s.width];
    dx.par_chunks_mut((s.height * s.width).max(1))
        .zip(grad.par_chunks((oh_n * ow_n).max(1)))
        .with_min_len(rows_per_task(s.height * s.width, 1024))
        .for_each(|(dx, g)| {
            for h in 0..s.height {
                for w in 0..s.width {
                    let mut total = 0.0f32;
                    for oh in covering(&s.windows, 0, h, s.height, oh_n) {
                        let row_factor = window(&s.windows, 0, oh, s.height, oh_n).1;
                        for ow in covering(&s.windows, 1, w, s.width, ow_n) {
                            let col_factor = window(&s.windows, 1, ow, s.width, ow_n).1;
                            total += g[oh * ow_n + ow] / (row_factor * col_factor) as f32;
                        }
                    }
                    dx[h * s.width + w] = total;
                }
            }
        });
    dx
}

impl Tensor {
    /// Average pooling of `[N, C, H, W]` over `pool`'s windows, as `torch.nn.AvgPool2d`
    /// (zero-padding counted in each window's divisor, as its `count_include_pad` default).
    pub fn avg_pool2d(&self, pool: &Pool2d) -> Result<Tensor> {
        let _op = profile::enter("avg_pool2d");
        let shape = strided("avg_pool2d", &self.shape, pool)?;
        self.average(&shape)
    }

    /// The gradient of [`Tensor::avg_pool2d`] for an input of `input_shape`.
    pub fn avg_pool2d_backward(&self, input_shape: &[usize], pool: &Pool2d) -> Result<Tensor> {
        let _op = profile::enter("avg_pool2d_backward");
        let shape = strided("avg_pool2d_backward", input_shape, pool)?;
        self.average_backward(&shape, input_shape)
    }

    /// Average pooling of `[N, C, H, W]` into `output` ([height, width]) windows, as
    /// `torch.nn.AdaptiveAvgPool2d`: `[1, 1]` is global average pooling.
    pub fn adaptive_avg_pool2d(&self, output: [usize; 2]) -> Result<Tensor> {
        let _op = profile::enter("adaptive_avg_pool2d");
        let shape = adaptive("adaptive_avg_pool2d", &self.shape, output)?;
        self.average(&shape)
    }

    /// The gradient of [`Tensor::adaptive_avg_pool2d`] (its output size is this gradient's)
    /// for an input of `input_shape`.
    pub fn adaptive_avg_pool2d_backward(&self, input_shape: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("adaptive_avg_pool2d_backward");
        let output = match self.shape.as_slice() {
            &[_, _, h, w] => [h, w],
            other => {
                return Err(TensorError::InvalidArgument {
                    op: "adaptive_avg_pool2d_backward",
                    why: format!("needs an [N, C, H, W] gradient, got {other:?}"),
                });
            }
        };
        let shape = adaptive("adaptive_avg_pool2d_backward", input_shape, output)?;
        self.average_backward(&shape, input_shape)
    }

    fn average(&self, s: &AvgPoolShape) -> Result<Tensor> {
        self.expect_dtype("avg_pool2d", DType::F32)?;
        let out_shape = vec![self.shape[0], self.shape[1], s.out[0], s.out[1]];
        Ok(match &self.device() {
            Device::Cpu => Tensor::cpu_f32(cpu_forward(self.cpu_values(), s), out_shape),
            Device::Gpu(ctx) => Tensor::gpu(avg_pool2d(ctx, self.gpu_buffer(), s)?, out_shape, DType::F32),
        })
    }

    fn average_backward(&self, s: &AvgPoolShape, input_shape: &[usize]) -> Result<Tensor> {
        self.expect_dtype("avg_pool2d_backward", DType::F32)?;
        let want = [input_shape[0], input_shape[1], s.out[0], s.out[1]];
        if self.shape != want {
            return Err(TensorError::ShapeMismatch {
                op: "avg_pool2d_backward",
                lhs: self.shape.clone(),
                rhs: want.to_vec(),
                why: "the gradient must have the pooling's output shape",
            });
        }
        Ok(match &self.device() {
            Device::Cpu => Tensor::cpu_f32(cpu_backward(self.cpu_values(), s), input_shape.to_vec()),
            Device::Gpu(ctx) => {
                Tensor::gpu(avg_pool2d_backward(ctx, self.gpu_buffer(), s)?, input_shape.to_vec(), DType::F32)
            }
        })
    }
}

/// A strided average pooling of `input`, checked as max pooling's windows are.
fn strided(op: &'static str, input: &[usize], pool: &Pool2d) -> Result<AvgPoolShape> {
    let s = pool.shape(op, input)?;
    let windows = AvgWindows::Strided { kernel: s.kernel, stride: s.stride, padding: s.padding };
    Ok(AvgPoolShape { planes: s.planes, height: s.height, width: s.width, out: s.output(), windows })
}

fn adaptive(op: &'static str, input: &[usize], output: [usize; 2]) -> Result<AvgPoolShape> {
    let &[n, c, height, width] = input else {
        return Err(TensorError::InvalidArgument { op, why: format!("needs an [N, C, H, W] input, got {input:?}") });
    };
    if output.contains(&0) || height == 0 || width == 0 {
        return Err(TensorError::InvalidArgument {
            op,
            why: format!("cannot pool a {height}×{width} plane into {}×{}", output[0], output[1]),
        });
    }
    Ok(AvgPoolShape { planes: n * c, height, width, out: output, windows: AvgWindows::Adaptive })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each input position is covered by exactly the outputs whose windows hold it.
    #[test]
    fn covering_outputs_are_the_windows_that_hold_the_position() {
        let strided = |k, s, p| AvgWindows::Strided { kernel: [k; 2], stride: [s; 2], padding: [p; 2] };
        for windows in [AvgWindows::Adaptive, strided(2, 2, 0), strided(3, 1, 1), strided(3, 2, 1), strided(5, 3, 2)] {
            for size in 1..12 {
                let counts: Vec<usize> = match windows {
                    AvgWindows::Adaptive => (1..15).collect(),
                    AvgWindows::Strided { kernel, stride, padding } if size + 2 * padding[0] >= kernel[0] => {
                        vec![(size + 2 * padding[0] - kernel[0]) / stride[0] + 1]
                    }
                    AvgWindows::Strided { .. } => continue,
                };
                for count in counts {
                    for i in 0..size {
                        let holding: Vec<usize> =
                            (0..count).filter(|&o| window(&windows, 0, o, size, count).0.contains(&i)).collect();
                        let covered: Vec<usize> = covering(&windows, 0, i, size, count).collect();
                        assert_eq!(covered, holding, "{windows:?}: position {i} of {size} into {count}");
                    }
                }
            }
        }
    }
}
