use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "permute", source: include_str!("permute.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    rank: u32,
    _pad: [u32; 2],
    shape: [u32; super::MAX_RANK],
    src_strides: [u32; super::MAX_RANK],
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len, rank, shape, src_strides);

/// A contiguous buffer of `shape` whose element at each index is read from `src` through
/// `src_strides`: a permutation when the strides are permuted, a broadcast where one is 0.
/// Moves 32-bit words, so it serves every 4-byte element type.
pub fn gather_strided(ctx: &GpuContext, src: &GpuBuffer, src_strides: &[usize], shape: &[usize]) -> Result<GpuBuffer> {
    let len: usize = shape.iter().product();
    super::check_indexable("gather_strided", len, shape.len())?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(&FAMILY, "gather_strided", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]);
    let params = Params {
        len: len as u32,
        rank: shape.len() as u32,
        _pad: [0; 2],
        shape: super::packed_dims(shape),
        src_strides: super::packed_dims(src_strides),
    };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::contiguous_strides;
    use crate::kernels::test_support::shape;
    use crate::testing::context_or_skip;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn permutation_matches_the_host(shape in shape(), seed in any::<u64>()) {
            let Some(ctx) = context_or_skip("permute::permutation_matches_the_host") else { return Ok(()) };
            // A permutation of the axes picked from the seed (Fisher–Yates on its bits).
            let mut perm: Vec<usize> = (0..shape.len()).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, (seed >> (8 * i)) as usize % (i + 1));
            }
            let len: usize = shape.iter().product();
            let src: Vec<i32> = (0..len as i32).collect();
            let strides = contiguous_strides(&shape);
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let out_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
            let got = ctx.read::<i32>(&gather_strided(&ctx, &ctx.upload(&src).unwrap(), &out_strides, &out_shape).unwrap(), len).unwrap();
            let want: Vec<i32> = (0..len)
                .map(|i| {
                    let (mut rest, mut at) = (i, 0);
                    for d in (0..out_shape.len()).rev() {
                        at += (rest % out_shape[d]) * out_strides[d];
                        rest /= out_shape[d];
                    }
                    src[at]
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn zero_stride_broadcasts() {
        let Some(ctx) = context_or_skip("permute::zero_stride_broadcasts") else { return };
        let row = ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        let out = gather_strided(&ctx, &row, &[0, 1], &[2, 3]).unwrap();
        assert_eq!(ctx.read::<f32>(&out, 6).unwrap(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
