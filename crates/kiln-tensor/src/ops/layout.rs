//! Ops that move elements without changing them: permute, transpose, broadcast_to, narrow,
//! cat. They work on f32 and i32: on the GPU they move 32-bit words.

use kiln_wgsl::kernels::permute::{StridedView, gather_strided, gather_view, scatter_view};
use ndarray::IxDyn;

use super::{into_row_major, view};
use crate::profile;
use crate::shape::{broadcast_shapes, broadcast_strides, contiguous_strides, normalize_axis};
use crate::tensor::{GpuData, HostData, Storage};
use crate::{DType, Result, Tensor, TensorError};

impl Tensor {
    /// A contiguous tensor of `shape` whose elements are read through `strides`. The CPU
    /// builds the same view with ndarray: the axes permuted by `order`, or when there is no
    /// order, broadcast to `shape`.
    fn copy_strided(
        &self,
        op: &'static str,
        shape: Vec<usize>,
        strides: &[usize],
        order: Option<&[usize]>,
    ) -> Result<Tensor> {
        match &self.storage {
            Storage::Host(HostData::U8(_)) | Storage::Gpu(GpuData { dtype: DType::U8, .. }) => Err(u8_refused(op)),
            Storage::Gpu(gpu) => {
                let out = gather_strided(&gpu.buffer.context(), &gpu.buffer, strides, &shape)?;
                Ok(Tensor::gpu(out, shape, gpu.dtype))
            }
            Storage::Host(HostData::F32(values)) => {
                Ok(Tensor::cpu_f32(rearrange(view(values, &self.shape), order, &shape), shape))
            }
            Storage::Host(HostData::I32(values)) => {
                Ok(Tensor::cpu_i32(rearrange(view(values, &self.shape), order, &shape), shape))
            }
        }
    }

    /// Reorders the axes: output axis i is input axis `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("permute");
        let mut seen = vec![false; self.rank()];
        let valid =
            dims.len() == self.rank() && dims.iter().all(|&d| d < seen.len() && !std::mem::replace(&mut seen[d], true));
        if !valid {
            return Err(TensorError::InvalidArgument {
                op: "permute",
                why: format!("{dims:?} is not a permutation of the {} axes of shape {:?}", self.rank(), self.shape),
            });
        }
        let strides = contiguous_strides(&self.shape);
        let shape = dims.iter().map(|&d| self.shape[d]).collect();
        let src_strides: Vec<usize> = dims.iter().map(|&d| strides[d]).collect();
        self.copy_strided("permute", shape, &src_strides, Some(dims))
    }

    /// Swaps two axes (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let _op = profile::enter("transpose");
        let (a, b) = (normalize_axis("transpose", a, self.rank())?, normalize_axis("transpose", b, self.rank())?);
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// The axes from `start` on merged into one, as `torch.flatten(x, start)`; never copies.
    pub fn flatten(&self, start: usize) -> Result<Tensor> {
        let _op = profile::enter("flatten");
        if start >= self.rank().max(1) {
            return Err(TensorError::InvalidAxis { op: "flatten", axis: start as isize, rank: self.rank() });
        }
        let shape = [&self.shape[..start], &[self.shape[start..].iter().product()]].concat();
        self.reshape(&shape)
    }

    /// The transpose of a matrix.
    pub fn t(&self) -> Result<Tensor> {
        let _op = profile::enter("t");
        if self.rank() != 2 {
            return Err(TensorError::InvalidArgument {
                op: "t",
                why: format!("needs a matrix, got shape {:?}", self.shape),
            });
        }
        self.transpose(0, 1)
    }

    /// A copy repeated along broadcast dimensions until it has `shape` (NumPy rules).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("broadcast_to");
        if broadcast_shapes("broadcast_to", &self.shape, shape)? != shape {
            return Err(TensorError::ShapeMismatch {
                op: "broadcast_to",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                why: "the target shape must be the broadcast result",
            });
        }
        let strides = broadcast_strides(&self.shape, shape);
        self.copy_strided("broadcast_to", shape.to_vec(), &strides, None)
    }
}

/// `shape` as `[outer, extent, inner]` around `axis`.
fn around(shape: &[usize], axis: usize) -> [usize; 3] {
    [shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product()]
}

fn u8_refused(op: &'static str) -> TensorError {
    TensorError::InvalidArgument { op, why: "u8 tensors only move whole rows; convert with to_f32 first".into() }
}

/// Entries `start..start + len` of each `[outer, extent, inner]` slab: narrow's CPU side.
fn slab<T: Copy>(values: &[T], [outer, extent, inner]: [usize; 3], start: usize, len: usize) -> Vec<T> {
    (0..outer)
        .flat_map(|o| values[(o * extent + start) * inner..(o * extent + start + len) * inner].iter().copied())
        .collect()
}

/// The pieces' slabs side by side along the middle axis: cat's CPU side.
fn side_by_side<T: Copy>(pieces: &[(&[T], usize)], outer: usize, inner: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * inner * pieces.iter().map(|(_, extent)| extent).sum::<usize>());
    for o in 0..outer {
        for (values, extent) in pieces {
            out.extend_from_slice(&values[o * extent * inner..(o + 1) * extent * inner]);
        }
    }
    out
}

impl Tensor {
    /// Entries `start..start + len` along `axis` (negative counts from the end), as
    /// `torch.narrow`, copied.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let _op = profile::enter("narrow");
        let axis = normalize_axis("narrow", axis, self.rank())?;
        let [outer, extent, inner] = around(&self.shape, axis);
        if start + len > extent {
            return Err(TensorError::InvalidArgument {
                op: "narrow",
                why: format!(
                    "entries {start}..{} past the {extent} of axis {axis} in shape {:?}",
                    start + len,
                    self.shape
                ),
            });
        }
        let mut shape = self.shape.clone();
        shape[axis] = len;
        Ok(match &self.storage {
            Storage::Gpu(GpuData { dtype: DType::U8, .. }) => return Err(u8_refused("narrow")),
            Storage::Gpu(gpu) => {
                let view = StridedView {
                    shape: &[outer, len, inner],
                    strides: &[extent * inner, inner, 1],
                    offset: start * inner,
                };
                Tensor::gpu(gather_view(&gpu.buffer.context(), &gpu.buffer, &view)?, shape, gpu.dtype)
            }
            Storage::Host(HostData::F32(v)) => Tensor::cpu_f32(slab(v, [outer, extent, inner], start, len), shape),
            Storage::Host(HostData::I32(v)) => Tensor::cpu_i32(slab(v, [outer, extent, inner], start, len), shape),
            Storage::Host(HostData::U8(_)) => return Err(u8_refused("narrow")),
        })
    }

    /// The tensors joined along `axis`, as `torch.cat`: the same dtype, device and shape
    /// but along `axis`.
    pub fn cat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let _op = profile::enter("cat");
        let Some(first) = tensors.first() else {
            return Err(TensorError::InvalidArgument { op: "cat", why: "needs at least one tensor".into() });
        };
        let axis = normalize_axis("cat", axis, first.rank())?;
        for t in &tensors[1..] {
            first.expect_dtype("cat", t.dtype())?;
            first.expect_same_device("cat", t)?;
            let fits = t.rank() == first.rank() && (0..t.rank()).all(|d| d == axis || t.shape[d] == first.shape[d]);
            if !fits {
                return Err(TensorError::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape.clone(),
                    rhs: t.shape.clone(),
                    why: "the shapes must agree but along the joined axis",
                });
            }
        }
        let extents: Vec<usize> = tensors.iter().map(|t| t.shape[axis]).collect();
        let mut shape = first.shape.clone();
        shape[axis] = extents.iter().sum();
        let [outer, total, inner] = around(&shape, axis);
        Ok(match &first.storage {
            Storage::Gpu(GpuData { dtype: DType::U8, .. }) => return Err(u8_refused("cat")),
            Storage::Gpu(gpu) => {
                let ctx = gpu.buffer.context();
                let out = ctx.alloc((outer * total * inner).max(1) as u64 * 4)?;
                let mut start = 0;
                for (t, &extent) in tensors.iter().zip(&extents) {
                    let view = StridedView {
                        shape: &[outer, extent, inner],
                        strides: &[total * inner, inner, 1],
                        offset: start * inner,
                    };
                    if outer * extent * inner > 0 {
                        scatter_view(&ctx, t.gpu_buffer(), &out, &view)?;
                    }
                    start += extent;
                }
                Tensor::gpu(out, shape, gpu.dtype)
            }
            Storage::Host(HostData::F32(_)) => {
                let pieces: Vec<(&[f32], usize)> = tensors.iter().map(|t| t.cpu_values()).zip(extents).collect();
                Tensor::cpu_f32(side_by_side(&pieces, outer, inner), shape)
            }
            Storage::Host(HostData::I32(_)) => {
                let pieces = tensors
                    .iter()
                    .map(|t| t.host_i32("cat"))
                    .zip(extents)
                    .map(|(v, e)| Ok((v?, e)))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cpu_i32(side_by_side(&pieces, outer, inner), shape)
            }
            Storage::Host(HostData::U8(_)) => return Err(u8_refused("cat")),
        })
    }
}

/// The CPU reference: permuted axes when `order` is given, else a broadcast to `shape`.
fn rearrange<T: Clone>(source: ndarray::ArrayViewD<'_, T>, order: Option<&[usize]>, shape: &[usize]) -> Vec<T> {
    let moved = match order {
        Some(order) => source.permuted_axes(IxDyn(order)),
        None => source.broadcast(IxDyn(shape)).expect("broadcast checked"),
    };
    into_row_major(moved.to_owned())
}
