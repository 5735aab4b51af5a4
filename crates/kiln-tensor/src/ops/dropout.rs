//! Inverted dropout with a seeded, device-independent mask.

use kiln_wgsl::kernels::dropout::{dropout, keeps, mask_key, threshold};
use rayon::prelude::*;

use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

/// Dropout of `x` into `out`, whose first element is the tensor's element `first`: a select,
/// not a branch, so the mask's hash is computed a vector of elements at a time.
#[inline(always)]
fn drop_chunk(out: &mut [f32], x: &[f32], first: u32, key: u32, threshold: u32, scale: f32) {
    for (i, (out, &x)) in out.iter_mut().zip(x).enumerate() {
        *out = if keeps(key, first.wrapping_add(i as u32), threshold) { x * scale } else { 0.0 };
    }
}

impl Tensor {
    /// Zeroes each element with probability `p` and scales the rest by 1/(1−p); the identity
    /// when not `training`. The mask is a function of (`seed`, element index) alone, so the
    /// same seed drops the same elements on every device, and the backward pass is this same
    /// call on the gradient.
    pub fn dropout(&self, p: f32, seed: u64, training: bool) -> Result<Tensor> {
        let _op = profile::enter("dropout");
        self.expect_dtype("dropout", DType::F32)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(TensorError::InvalidArgument {
                op: "dropout",
                why: format!("probability {p} is outside [0, 1]"),
            });
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let (threshold, scale) = (threshold(p), if p == 1.0 { 0.0 } else { 1.0 / (1.0 - p) });
        match &self.device() {
            Device::Cpu => {
                // Chunks big enough that handing one to another core pays for itself.
                const CHUNK: usize = 1 << 16;
                let key = mask_key(seed);
                let mut values = vec![0.0f32; self.len()];
                values.par_chunks_mut(CHUNK).zip(self.cpu_values().par_chunks(CHUNK)).enumerate().for_each(
                    |(chunk, (out, x))| {
                        let first = (chunk * CHUNK) as u32;
                        widest_simd!(drop_chunk(out, x, first, key, threshold, scale))
                    },
                );
                Ok(Tensor::cpu_f32(values, self.shape.clone()))
            }
            Device::Gpu(ctx) => {
                let out = dropout(ctx, self.gpu_buffer(), self.len(), seed, threshold, scale)?;
                Ok(Tensor::gpu(out, self.shape.clone(), DType::F32))
            }
        }
    }
}
