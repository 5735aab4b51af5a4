//! Ops that move elements without changing them: permute, transpose, broadcast_to.
//! They work on every dtype: on the GPU they move 32-bit words.

use kiln_wgsl::kernels::permute::gather_strided;
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
    fn gather(
        &self,
        op: &'static str,
        shape: Vec<usize>,
        strides: &[usize],
        order: Option<&[usize]>,
    ) -> Result<Tensor> {
        match &self.storage {
            Storage::Host(HostData::U8(_)) | Storage::Gpu(GpuData { dtype: DType::U8, .. }) => {
                Err(TensorError::InvalidArgument {
                    op,
                    why: "u8 tensors only move whole rows; convert with to_f32 first".into(),
                })
            }
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
        self.gather("permute", shape, &src_strides, Some(dims))
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
        self.gather("broadcast_to", shape.to_vec(), &strides, None)
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
