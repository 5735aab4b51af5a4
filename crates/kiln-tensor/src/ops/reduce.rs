//! Reductions over one axis, and over everything.

use kiln_wgsl::kernels::channel_sums::{channel_sums, relu_backward_channel_sums};
use kiln_wgsl::kernels::reduce::{ReduceOp, reduce};
use ndarray::{Axis, Ix3};
use rayon::prelude::*;

use super::{PARALLEL_MIN_ELEMENTS, into_row_major, rows_per_task, sum_in_lanes, view};
use crate::profile;
use crate::shape::normalize_axis;
use crate::{DType, Device, Result, Tensor, TensorError};

/// Σ over N and S of `[N, C, S]` values, per channel: each (image, channel) plane summed
/// on its own (spread over the cores), then the images' sums added in image order.
fn cpu_channel_sums(values: &[f32], [_, c, s]: [usize; 3]) -> Vec<f32> {
    let add_rows = |rows: &[f32]| {
        let mut sums = vec![0.0f32; c];
        for row in rows.chunks(c.max(1)) {
            sums.iter_mut().zip(row).for_each(|(sum, &v)| *sum += v);
        }
        sums
    };
    if s == 1 {
        return add_rows(values);
    }
    let mut plane_sums = vec![0.0f32; values.len() / s.max(1)];
    let sum_plane = |(sum, plane): (&mut f32, &[f32])| *sum = sum_in_lanes::<f32, 16>(plane, |v| v);
    if values.len() >= PARALLEL_MIN_ELEMENTS {
        let min_planes = rows_per_task(s, PARALLEL_MIN_ELEMENTS / 2);
        plane_sums.par_iter_mut().zip(values.par_chunks(s.max(1))).with_min_len(min_planes).for_each(sum_plane);
    } else {
        plane_sums.iter_mut().zip(values.chunks(s.max(1))).for_each(sum_plane);
    }
    add_rows(&plane_sums)
}

/// The ReLU's gradient of `[rows, c]` (`grad` where `output` > 0, else 0) and its column
/// sums, in one pass: a linear layer's. The sums add row by row, as `cpu_channel_sums`
/// does, so the bits are those of the two steps apart.
fn cpu_relu_backward_row_sums(grad: &[f32], output: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut masked, mut sums) = (vec![0.0f32; grad.len()], vec![0.0f32; c]);
    let rows = masked.chunks_mut(c.max(1)).zip(grad.chunks(c.max(1))).zip(output.chunks(c.max(1)));
    for ((masked, grad), output) in rows {
        for (((m, &g), &o), sum) in masked.iter_mut().zip(grad).zip(output).zip(&mut sums) {
            *m = if o > 0.0 { g } else { 0.0 };
            *sum += *m;
        }
    }
    (masked, sums)
}

/// Index of the first maximum, as PyTorch's argmax.
fn first_argmax<'a>(lane: impl Iterator<Item = &'a f32>) -> i32 {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in lane.enumerate() {
        if i == 0 || v > best.1 {
            best = (i, v);
        }
    }
    best.0 as i32
}

impl Tensor {
    fn reduce_axis(&self, name: &'static str, op: ReduceOp, axis: isize, keepdim: bool) -> Result<Tensor> {
        let _op = profile::enter(name);
        self.expect_dtype(name, DType::F32)?;
        let axis = normalize_axis(name, axis, self.rank())?;
        let (outer, n, inner) =
            (self.shape[..axis].iter().product(), self.shape[axis], self.shape[axis + 1..].iter().product());
        if n == 0 && matches!(op, ReduceOp::Max | ReduceOp::Argmax) {
            return Err(TensorError::InvalidArgument {
                op: name,
                why: format!("axis {axis} of shape {:?} is empty", self.shape),
            });
        }
        let mut shape = self.shape.clone();
        if keepdim {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        let dtype = if op == ReduceOp::Argmax { DType::I32 } else { DType::F32 };
        match &self.device() {
            Device::Cpu => {
                let lanes = view(self.cpu_values(), &[outer, n, inner]).into_dimensionality::<Ix3>().expect("rank 3");
                if op == ReduceOp::Argmax {
                    let out = lanes.map_axis(Axis(1), |lane| first_argmax(lane.iter()));
                    return Ok(Tensor::cpu_i32(into_row_major(out.into_dyn()), shape));
                }
                let out = lanes.map_axis(Axis(1), |lane| match op {
                    ReduceOp::Sum => lane.sum(),
                    ReduceOp::Mean => lane.sum() / n as f32,
                    _ => lane.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                });
                Ok(Tensor::cpu_f32(into_row_major(out.into_dyn()), shape))
            }
            Device::Gpu(ctx) => {
                let out = reduce(ctx, op, self.gpu_buffer(), outer, n, inner)?;
                Ok(Tensor::gpu(out, shape, dtype))
            }
        }
    }

    /// Sum over `axis` (negative counts from the end); `keepdim` leaves it as size 1.
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce_axis("sum", ReduceOp::Sum, axis, keepdim)
    }
    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce_axis("mean", ReduceOp::Mean, axis, keepdim)
    }
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce_axis("max", ReduceOp::Max, axis, keepdim)
    }
    /// Index of the first maximum along `axis`, as an `I32` tensor.
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce_axis("argmax", ReduceOp::Argmax, axis, keepdim)
    }

    /// `[N, C, …]` as the per-channel kernels see it: `[N, C, the rest]`.
    fn channel_view(&self, op: &'static str) -> Result<[usize; 3]> {
        self.expect_dtype(op, DType::F32)?;
        if self.rank() < 2 {
            return Err(TensorError::InvalidArgument {
                op,
                why: format!("needs a [N, C, ...] tensor, got {:?}", self.shape),
            });
        }
        Ok([self.shape[0], self.shape[1], self.shape[2..].iter().product()])
    }

    /// Σ over every axis but axis 1 of `[N, C, …]`: `[C]`, the bias gradient of a linear
    /// layer (`[batch, out]`) or a convolution (`[N, O, OH, OW]`). One launch on the GPU.
    pub fn sum_per_channel(&self) -> Result<Tensor> {
        let _op = profile::enter("sum_per_channel");
        let view = self.channel_view("sum_per_channel")?;
        match &self.device() {
            Device::Cpu => Ok(Tensor::cpu_f32(cpu_channel_sums(self.cpu_values(), view), vec![view[1]])),
            Device::Gpu(ctx) => {
                let sums = channel_sums(ctx, self.gpu_buffer(), view)?;
                Ok(Tensor::gpu(sums, vec![view[1]], DType::F32))
            }
        }
    }

    /// This gradient through a ReLU whose output was `output` (zero where the output is
    /// not positive), and that gradient's [`Tensor::sum_per_channel`]: the backward of a
    /// layer and the ReLU after it, in one launch on the GPU.
    pub fn relu_backward_sum_per_channel(&self, output: &Tensor) -> Result<(Tensor, Tensor)> {
        let _op = profile::enter("relu_backward_sum_per_channel");
        const OP: &str = "relu_backward_sum_per_channel";
        let view = self.channel_view(OP)?;
        output.expect_dtype(OP, DType::F32)?;
        self.expect_same_device(OP, output)?;
        if output.shape != self.shape {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: output.shape.clone(),
                why: "the gradient and the ReLU's output must have one shape",
            });
        }
        match &self.device() {
            Device::Cpu if view[2] == 1 => {
                let (masked, sums) = cpu_relu_backward_row_sums(self.cpu_values(), output.cpu_values(), view[1]);
                Ok((Tensor::cpu_f32(masked, self.shape.clone()), Tensor::cpu_f32(sums, vec![view[1]])))
            }
            Device::Cpu => {
                let masked = self.relu_backward(output)?;
                let sums = cpu_channel_sums(masked.cpu_values(), view);
                Ok((masked, Tensor::cpu_f32(sums, vec![view[1]])))
            }
            Device::Gpu(ctx) => {
                let (masked, sums) = relu_backward_channel_sums(ctx, self.gpu_buffer(), output.gpu_buffer(), view)?;
                Ok((Tensor::gpu(masked, self.shape.clone(), DType::F32), Tensor::gpu(sums, vec![view[1]], DType::F32)))
            }
        }
    }

    /// Sums a broadcast result back to `shape` (which must broadcast to this tensor's shape):
    /// the gradient of an operand that an elementwise op broadcast.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("sum_to");
        let extra = self.rank().checked_sub(shape.len()).filter(|_| {
            shape.iter().zip(&self.shape[self.rank() - shape.len().min(self.rank())..]).all(|(&s, &t)| s == t || s == 1)
        });
        let Some(extra) = extra else {
            return Err(TensorError::ShapeMismatch {
                op: "sum_to",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                why: "the target does not broadcast to this shape",
            });
        };
        let mut out = self.clone();
        for _ in 0..extra {
            out = out.sum(0, false)?;
        }
        for (axis, &size) in shape.iter().enumerate() {
            if size == 1 && out.shape[axis] != 1 {
                out = out.sum(axis as isize, true)?;
            }
        }
        Ok(out)
    }

    /// Sum of every element, as a rank-0 tensor on the same device.
    pub fn sum_all(&self) -> Result<Tensor> {
        let _op = profile::enter("sum_all");
        self.reshape(&[self.len()])?.sum(0, false)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        let _op = profile::enter("mean_all");
        self.reshape(&[self.len()])?.mean(0, false)
    }
}
