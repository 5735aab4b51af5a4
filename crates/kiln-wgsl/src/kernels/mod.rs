//! The kernel families: one `.wgsl` file each, with a typed launcher here that allocates the
//! output, fills the uniform block and records the dispatch. Launchers take buffers and
//! plain shapes; what those mean as tensors is kiln-tensor's business.

pub mod batch_norm;
pub mod binary;
pub mod channel_sums;
pub mod classification;
pub mod conv;
pub mod convert;
pub mod dropout;
pub mod fill;
pub mod gather;
pub mod matmul;
pub mod optimizer;
pub mod permute;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

/// Rank of the largest tensor the strided kernels (binary, permute) index.
pub const MAX_RANK: usize = 8;

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// Shapes and strides as the strided kernels' uniforms hold them: two vec4<u32>.
pub(crate) fn packed_dims(dims: &[usize]) -> [u32; MAX_RANK] {
    let mut packed = [0u32; MAX_RANK];
    for (slot, &d) in packed.iter_mut().zip(dims) {
        *slot = d as u32;
    }
    packed
}

/// Fails a launch whose element count or rank the kernels cannot index.
pub(crate) fn check_indexable(kernel: &'static str, len: usize, rank: usize) -> crate::Result<()> {
    if rank > MAX_RANK {
        return Err(crate::GpuError::InvalidLaunch {
            kernel,
            reason: format!("rank {rank} exceeds the {MAX_RANK} dimensions the kernel indexes"),
        });
    }
    if len > u32::MAX as usize {
        return Err(crate::GpuError::InvalidLaunch {
            kernel,
            reason: format!("{len} elements exceed the 32-bit indices the kernels use"),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use proptest::prelude::*;

    /// Deterministic values in [-2, 2) so results are checkable without huge magnitudes.
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    pub fn assert_close(got: &[f32], want: &[f32], tolerance: f32) {
        assert_eq!(got.len(), want.len(), "length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let scale = 1.0f32.max(w.abs());
            assert!((g - w).abs() <= tolerance * scale || (g.is_nan() && w.is_nan()), "element {i}: got {g}, want {w}");
        }
    }

    /// Dimensions including the awkward ones: 1, primes, and sizes just past a workgroup.
    pub fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![1..=9usize, Just(13usize), Just(31), Just(67), Just(257)]
    }

    /// Shapes of 1 to 4 such dimensions, capped at 2¹⁶ elements so host loops stay quick.
    pub fn shape() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(dim(), 1..=4).prop_map(|mut shape| {
            while shape.iter().product::<usize>() > 1 << 16 {
                let largest = (0..shape.len()).max_by_key(|&i| shape[i]).expect("a large shape has axes");
                shape[largest] = (shape[largest] / 4).max(1);
            }
            shape
        })
    }
}
