//! Picking rows by index.

use kiln_wgsl::kernels::gather::gather_rows;

use crate::profile;
use crate::tensor::{HostData, Storage};
use crate::{Result, Tensor, TensorError};

fn pick<T: Copy>(values: &[T], row_len: usize, indices: &[usize]) -> Vec<T> {
    indices.iter().flat_map(|&i| values[i * row_len..(i + 1) * row_len].iter().copied()).collect()
}

impl Tensor {
    /// The rows (entries along axis 0) at `indices`, in that order, repeats allowed: how a
    /// batch is drawn from a dataset that lives on the device. Works for every dtype.
    pub fn index_select(&self, indices: &[usize]) -> Result<Tensor> {
        let _op = profile::enter("index_select");
        let Some((&rows, rest)) = self.shape.split_first() else {
            return Err(TensorError::InvalidArgument { op: "index_select", why: "a rank-0 tensor has no rows".into() });
        };
        if let Some(&bad) = indices.iter().find(|&&i| i >= rows) {
            return Err(TensorError::InvalidArgument {
                op: "index_select",
                why: format!("row {bad} is out of range for {rows} rows"),
            });
        }
        let row_len: usize = rest.iter().product();
        let shape = [&[indices.len()], rest].concat();
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
}
