//! 2-D max pooling and its backward pass, NCHW.

use kiln_wgsl::kernels::pool::{PoolShape, max_pool2d, max_pool2d_backward};
use rayon::prelude::*;

use super::rows_per_task;
use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

/// Window, stride and zero-padding of a 2-D pooling, each as [height, width].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2d {
    /// A square window whose stride is its size, as PyTorch's default.
    pub fn new(kernel: usize) -> Self {
        Self { kernel: [kernel; 2], stride: [kernel; 2], padding: [0; 2] }
    }

    pub fn stride(self, stride: usize) -> Self {
        Self { stride: [stride; 2], ..self }
    }

    pub fn padding(self, padding: usize) -> Self {
        Self { padding: [padding; 2], ..self }
    }

    /// The kernel-level problem for input `[N, C, H, W]`, after checking it is well formed.
    pub(super) fn shape(&self, op: &'static str, input: &[usize]) -> Result<PoolShape> {
        let invalid = |why: String| TensorError::InvalidArgument { op, why };
        let &[n, c, height, width] = input else {
            return Err(invalid(format!("needs an [N, C, H, W] input, got {input:?}")));
        };
        for d in 0..2 {
            let (k, s, p) = (self.kernel[d], self.stride[d], self.padding[d]);
            if k == 0 || s == 0 {
                return Err(invalid(format!("kernel {:?} and stride {:?} must be positive", self.kernel, self.stride)));
            }
            if p > k / 2 {
                return Err(invalid(format!("padding {:?} exceeds half the kernel {:?}", self.padding, self.kernel)));
            }
            if [height, width][d] + 2 * p < k {
                return Err(invalid(format!(
                    "a {:?} window does not fit input {input:?} padded by {:?}",
                    self.kernel, self.padding
                )));
            }
        }
        Ok(PoolShape { planes: n * c, height, width, kernel: self.kernel, stride: self.stride, padding: self.padding })
    }
}

/// The CPU reference: per output, the first maximum of its window and where it is. Planes
/// are independent, so they are pooled in parallel.
fn cpu_forward(x: &[f32], s: &PoolShape) -> (Vec<f32>, Vec<i32>) {
    let [oh_n, ow_n] = s.output();
    let plane_out = oh_n * ow_n;
    let (mut y, mut at) = (vec![0.0f32; s.planes * plane_out], vec![0i32; s.planes * plane_out]);
    y.par_chunks_mut(plane_out.max(1))
        .zip(at.par_chunks_mut(plane_out.max(1)))
        .zip(x.par_chunks(s.height * s.width))
        .with_min_len(rows_per_task(plane_out, 1024))
        .for_each(|((y, at), plane)| pool_plane(plane, s, y, at));
    (y, at)
}

/// The tutorials' pooling (2×2, stride 2, no padding) of one plane `width` wide: each output
/// row from two input rows, without the general window's bounds checks, and with selects
/// in place of branches so that outputs are computed a vector at a time.
#[inline(always)]
fn pool_plane_2x2(plane: &[f32], width: usize, ow_n: usize, y: &mut [f32], at: &mut [i32]) {
    let rows = plane.chunks_exact(2 * width).zip(y.chunks_exact_mut(ow_n).zip(at.chunks_exact_mut(ow_n)));
    for (oh, (pair, (y, at))) in rows.enumerate() {
        let (upper, lower) = pair.split_at(width);
        let windows = upper.chunks_exact(2).zip(lower.chunks_exact(2));
        for (ow, ((y, at), (u, l))) in y.iter_mut().zip(at.iter_mut()).zip(windows).enumerate() {
            // First maximum in row-major order: a later element wins only when greater.
            let top = (2 * oh * width + 2 * ow) as i32;
            let (mut best, mut index) = (u[0], top);
            for (v, i) in [(u[1], top + 1), (l[0], top + width as i32), (l[1], top + width as i32 + 1)] {
                let greater = v > best;
                best = if greater { v } else { best };
                index = if greater { i } else { index };
            }
            *y = best;
            *at = index;
        }
    }
}

/// One plane pooled into `y`, with each maximum's position (h·W + w) in `at`.
pub(super) fn pool_plane(plane: &[f32], s: &PoolShape, y: &mut [f32], at: &mut [i32]) {
    let [oh_n, ow_n] = s.output();
    if s.kernel == [2, 2] && s.stride == [2, 2] && s.padding == [0, 0] {
        widest_simd!(pool_plane_2x2(plane, s.width, ow_n, y, at));
        return;
    }
    for oh in 0..oh_n {
        for ow in 0..ow_n {
            let mut best: Option<(f32, usize)> = None;
            for kh in 0..s.kernel[0] {
                let Some(h) = (oh * s.stride[0] + kh).checked_sub(s.padding[0]).filter(|&h| h < s.height) else {
                    continue;
                };
                for kw in 0..s.kernel[1] {
                    let Some(w) = (ow * s.stride[1] + kw).checked_sub(s.padding[1]).filter(|&w| w < s.width) else {
                        continue;
                    };
                    let v = plane[h * s.width + w];
                    if best.is_none_or(|(b, _)| v > b) {
                        best = Some((v, h * s.width + w));
                    }
                }
            }
            let (v, i) = best.expect("padding ≤ kernel/2 leaves a real element in every window");
            y[oh * ow_n + ow] = v;
            at[oh * ow_n + ow] = i as i32;
        }
    }
}

impl Tensor {
    /// Max pooling of `[N, C, H, W]`: the output and the i32 position (h·W + w within its
    /// plane) of each output's maximum, which the backward pass needs. Ties go to the first
    /// element of the window in row-major order, on every device.
    pub fn max_pool2d(&self, pool: &Pool2d) -> Result<(Tensor, Tensor)> {
        let _op = profile::enter("max_pool2d");
        self.expect_dtype("max_pool2d", DType::F32)?;
        let shape = pool.shape("max_pool2d", &self.shape)?;
        let [oh, ow] = shape.output();
        let out_shape = vec![self.shape[0], self.shape[1], oh, ow];
        match &self.device() {
            Device::Cpu => {
                let (y, at) = cpu_forward(self.cpu_values(), &shape);
                Ok((Tensor::cpu_f32(y, out_shape.clone()), Tensor::cpu_i32(at, out_shape)))
            }
            Device::Gpu(ctx) => {
                let (y, at) = max_pool2d(ctx, self.gpu_buffer(), &shape)?;
                Ok((Tensor::gpu(y, out_shape.clone(), DType::F32), Tensor::gpu(at, out_shape, DType::I32)))
            }
        }
    }

    /// The gradient of max pooling with respect to its input `[N, C, H, W]` (`input_shape`),
    /// from this output gradient and the positions `max_pool2d` returned.
    pub fn max_pool2d_backward(&self, indices: &Tensor, input_shape: &[usize], pool: &Pool2d) -> Result<Tensor> {
        let _op = profile::enter("max_pool2d_backward");
        const OP: &str = "max_pool2d_backward";
        self.expect_dtype(OP, DType::F32)?;
        indices.expect_dtype(OP, DType::I32)?;
        self.expect_same_device(OP, indices)?;
        let shape = pool.shape(OP, input_shape)?;
        let [oh, ow] = shape.output();
        let expected = [input_shape[0], input_shape[1], oh, ow];
        if self.shape != expected || indices.shape != expected {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: indices.shape.clone(),
                why: "gradient and positions must have the pooled output's shape",
            });
        }
        match &self.device() {
            Device::Cpu => {
                let at = indices.host_i32(OP)?;
                let (plane_in, plane_out) = (shape.height * shape.width, oh * ow);
                let mut grad = vec![0.0f32; shape.planes * plane_in];
                grad.par_chunks_mut(plane_in.max(1))
                    .zip(self.cpu_values().par_chunks(plane_out.max(1)).zip(at.par_chunks(plane_out.max(1))))
                    .with_min_len(rows_per_task(plane_out, 1024))
                    .for_each(|(grad, (g, at))| {
                        for (&g, &i) in g.iter().zip(at) {
                            grad[i as usize] += g;
                        }
                    });
                Ok(Tensor::cpu_f32(grad, input_shape.to_vec()))
            }
            Device::Gpu(ctx) => {
                let grad = max_pool2d_backward(ctx, self.gpu_buffer(), indices.gpu_buffer(), &shape)?;
                Ok(Tensor::gpu(grad, input_shape.to_vec(), DType::F32))
            }
        }
    }
}
