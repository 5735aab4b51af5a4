//! Picking by index: rows (index_select), elements along an axis (gather), and the sums
//! that return their gradients to the sources.

use kiln_wgsl::kernels::gather::{gather_rows, gather_rows_to_f32};
use kiln_wgsl::kernels::index_add::{AxisIndex, add_at_index, gather_axis};

use crate::profile;
use crate::shape::normalize_axis;
use crate::tensor::{HostData, Storage};
use crate::{DType, Device, Result, Tensor, TensorError};

fn pick<T: Copy>(values: &[T], row_len: usize, indices: &[usize]) -> Vec<T> {
    indices.iter().flat_map(|&i| values[i * row_len..(i + 1) * row_len].iter().copied()).collect()
}

impl Tensor {
    /// The rows (entries along axis 0) at `indices`, in that order, repeats allowed: how a
    /// batch is drawn from a dataset that lives on the device. Works for every dtype.
    pub fn index_select(&self, indices: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("index_select");
        let (row_len, shape) = self.picked_rows("index_select", indices)?;
        Ok(match &self.storage {
            Storage::Gpu(gpu) => {
                let ctx = gpu.buffer.context();
                let index: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
                let row_bytes = row_len * gpu.dtype.size_in_bytes();
                let out = gather_rows(&ctx, &gpu.buffer, &ctx.upload(&index)?, indices.len(), row_bytes)?;
                Tensor::gpu(out, shape, gpu.dtype)
            }
            Storage::Host(HostData::F32(values)) => Tensor::cpu_f32(pick(values, row_len, indices), shape),
            Storage::Host(HostData::I32(values)) => Tensor::cpu_i32(pick(values, row_len, indices), shape),
            Storage::Host(HostData::U8(values)) => Tensor::cpu_u8(pick(values, row_len, indices), shape),
        })
    }

    /// The rows at `indices` as f32, each value times `scale`: [`Tensor::index_select`],
    /// [`Tensor::to_f32`] and (unless `scale` is 1) [`Tensor::mul_scalar`], with their bits.
    /// A byte tensor on the GPU takes one launch for all three: how the data loader draws a
    /// batch of images from a dataset held on the device.
    pub fn index_select_to_f32(&self, indices: &[usize], scale: f32) -> Result<Tensor> {
        let _op = profile::enter("index_select_to_f32");
        if let Storage::Gpu(gpu) = &self.storage
            && gpu.dtype == DType::U8
        {
            let (row_len, shape) = self.picked_rows("index_select_to_f32", indices)?;
            let ctx = gpu.buffer.context();
            let index: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
            let out = gather_rows_to_f32(&ctx, &gpu.buffer, &ctx.upload(&index)?, indices.len(), row_len, scale)?;
            return Ok(Tensor::gpu(out, shape, DType::F32));
        }
        let values = self.index_select(indices)?.to_f32()?;
        if scale == 1.0 { Ok(values) } else { values.mul_scalar(scale) }
    }

    /// Elements per row, and the shape of the rows at `indices`, which must be in range.
    fn picked_rows(&self, op: &'static str, indices: &[usize]) -> Result<(usize, Vec<usize>)> {
        let Some((&rows, rest)) = self.shape.split_first() else {
            return Err(TensorError::InvalidArgument { op, why: "a rank-0 tensor has no rows".into() });
        };
        if let Some(&bad) = indices.iter().find(|&&i| i >= rows) {
            return Err(TensorError::InvalidArgument { op, why: format!("row {bad} is out of range for {rows} rows") });
        }
        Ok((rest.iter().product(), [&[indices.len()], rest].concat()))
    }

    /// The gradient of [`Tensor::index_select`]: this gradient `[indices.len(), …]` summed
    /// into `rows` rows, row `indices[p]` receiving entry p (repeats add up, in order).
    pub fn index_select_backward(&self, indices: &[usize], rows: usize) -> Result<Tensor> {
        let _op = profile::enter("index_select_backward");
        self.expect_dtype("index_select_backward", DType::F32)?;
        if self.shape.first() != Some(&indices.len()) || indices.iter().any(|&i| i >= rows) {
            return Err(TensorError::InvalidArgument {
                op: "index_select_backward",
                why: format!("a gradient {:?} for {} indices below {rows}", self.shape, indices.len()),
            });
        }
        let inner: usize = self.shape[1..].iter().product();
        let shape = [&[rows], &self.shape[1..]].concat();
        let at = AxisIndex { outer: 1, along: indices.len(), extent: rows, inner, shared_over_inner: true };
        Ok(match &self.device() {
            Device::Gpu(ctx) => {
                let index: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
                Tensor::gpu(add_at_index(ctx, self.gpu_buffer(), &ctx.upload(&index)?, &at)?, shape, DType::F32)
            }
            Device::Cpu => Tensor::cpu_f32(cpu_add_at_index(self.cpu_values(), &at, |_, j, _| indices[j]), shape),
        })
    }

    /// The elements picked along `axis` by `index`, as `torch.gather`: `out[.., j, ..] =
    /// self[.., index[.., j, ..], ..]`. `index` is an i32 tensor on the same device, shaped
    /// as this tensor but along `axis`. An index out of range is an error on the CPU; on the
    /// GPU, where checking it would mean waiting for the device, it gathers NaN.
    pub fn gather(&self, axis: isize, index: &Tensor) -> Result<Tensor> {
        let _op = profile::enter("gather");
        let at = self.axis_index("gather", axis, index, &self.shape)?;
        Ok(match &self.device() {
            Device::Gpu(ctx) => Tensor::gpu(
                gather_axis(ctx, self.gpu_buffer(), index.gpu_buffer(), &at)?,
                index.shape.clone(),
                DType::F32,
            ),
            Device::Cpu => {
                let picks = checked_picks("gather", index.host_i32("gather")?, at.extent)?;
                let values = self.cpu_values();
                let out = (0..at.outer * at.along * at.inner)
                    .map(|e| {
                        let (o, i) = (e / (at.inner * at.along), e % at.inner);
                        values[(o * at.extent + picks[e]) * at.inner + i]
                    })
                    .collect();
                Tensor::cpu_f32(out, index.shape.clone())
            }
        })
    }

    /// The gradient of [`Tensor::gather`]: this gradient (shaped as `index`) summed into a
    /// tensor of `input_shape`, each element receiving, in order, every entry gathered from it.
    pub fn gather_backward(&self, axis: isize, index: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("gather_backward");
        self.expect_dtype("gather_backward", DType::F32)?;
        if self.shape != index.shape {
            return Err(TensorError::ShapeMismatch {
                op: "gather_backward",
                lhs: self.shape.clone(),
                rhs: index.shape.clone(),
                why: "the gradient is shaped as the index",
            });
        }
        let at = self.axis_index("gather_backward", axis, index, input_shape)?;
        Ok(match &self.device() {
            Device::Gpu(ctx) => {
                let summed = add_at_index(ctx, self.gpu_buffer(), index.gpu_buffer(), &at)?;
                Tensor::gpu(summed, input_shape.to_vec(), DType::F32)
            }
            Device::Cpu => {
                let picks = checked_picks("gather_backward", index.host_i32("gather_backward")?, at.extent)?;
                let pick = |o: usize, j: usize, i: usize| picks[(o * at.along + j) * at.inner + i];
                Tensor::cpu_f32(cpu_add_at_index(self.cpu_values(), &at, pick), input_shape.to_vec())
            }
        })
    }

    /// The geometry of a gather along `axis` from a source of `source_shape` by `index`,
    /// after checking the index's type, device and shape.
    fn axis_index(&self, op: &'static str, axis: isize, index: &Tensor, source_shape: &[usize]) -> Result<AxisIndex> {
        self.expect_dtype(op, DType::F32)?;
        index.expect_dtype(op, DType::I32)?;
        self.expect_same_device(op, index)?;
        let axis = normalize_axis(op, axis, source_shape.len())?;
        let fits = index.rank() == source_shape.len()
            && (0..index.rank()).all(|d| d == axis || index.shape[d] == source_shape[d]);
        if !fits {
            return Err(TensorError::ShapeMismatch {
                op,
                lhs: source_shape.to_vec(),
                rhs: index.shape.clone(),
                why: "the index must have the source's shape but along the gathered axis",
            });
        }
        Ok(AxisIndex {
            outer: source_shape[..axis].iter().product(),
            along: index.shape[axis],
            extent: source_shape[axis],
            inner: source_shape[axis + 1..].iter().product(),
            shared_over_inner: false,
        })
    }
}

/// The index's entries as positions, each checked to be below `extent`.
fn checked_picks(op: &'static str, index: &[i32], extent: usize) -> Result<Vec<usize>> {
    index
        .iter()
        .map(|&k| {
            usize::try_from(k).ok().filter(|&k| k < extent).ok_or_else(|| TensorError::InvalidArgument {
                op,
                why: format!("index {k} is out of range for an axis of {extent}"),
            })
        })
        .collect()
}

/// `out[o, k, i] = Σ_j [pick(o, j, i) = k] · grad[o, j, i]`, in order of j, as the GPU's
/// `add_at_index` sums.
fn cpu_add_at_index(grad: &[f32], at: &AxisIndex, pick: impl Fn(usize, usize, usize) -> usize) -> Vec<f32> {
    let mut out = vec![0.0f32; at.outer * at.extent * at.inner];
    for o in 0..at.outer {
        for j in 0..at.along {
            for i in 0..at.inner {
                out[(o * at.extent + pick(o, j, i)) * at.inner + i] += grad[(o * at.along + j) * at.inner + i];
            }
        }
    }
    out
}
