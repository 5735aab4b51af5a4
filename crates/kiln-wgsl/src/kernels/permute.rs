use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "permute", source: include_str!("permute.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    rank: u32,
    offset: u32,
    _pad: u32,
    shape: [u32; super::MAX_RANK],
    strides: [u32; super::MAX_RANK],
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len, rank, offset, shape, strides);

/// A view of `shape` into a strided buffer: its elements at `offset + Σ index·stride`.
pub struct StridedView<'a> {
    pub shape: &'a [usize],
    pub strides: &'a [usize],
    pub offset: usize,
}

impl StridedView<'_> {
    fn params(&self, op: &'static str) -> Result<(usize, Params)> {
        let len: usize = self.shape.iter().product();
        super::check_indexable(op, len.max(self.offset), self.shape.len())?;
        let params = Params {
            len: len as u32,
            rank: self.shape.len() as u32,
            offset: self.offset as u32,
            _pad: 0,
            shape: super::packed_dims(self.shape),
            strides: super::packed_dims(self.strides),
        };
        Ok((len, params))
    }
}

/// A contiguous buffer of `shape` whose element at each index is read from `src` through
/// `src_strides`: a permutation when the strides are permuted, a broadcast where one is 0.
/// Moves 32-bit words, so it serves every 4-byte element type.
pub fn gather_strided(ctx: &GpuContext, src: &GpuBuffer, src_strides: &[usize], shape: &[usize]) -> Result<GpuBuffer> {
    gather_view(ctx, src, &StridedView { shape, strides: src_strides, offset: 0 })
}

/// A contiguous copy of `view` of `src`: with an offset, a slab along one axis (`narrow`).
pub fn gather_view(ctx: &GpuContext, src: &GpuBuffer, view: &StridedView) -> Result<GpuBuffer> {
    let (len, params) = view.params("gather_strided")?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(&FAMILY, "gather_strided", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

/// Writes the contiguous `src` into `view` of `dst`, in place: one input of a concatenation
/// into its slab of the output.
pub fn scatter_view(ctx: &GpuContext, src: &GpuBuffer, dst: &GpuBuffer, view: &StridedView) -> Result<()> {
    let (len, params) = view.params("scatter_strided")?;
    let spec = KernelSpec::new(&FAMILY, "scatter_strided", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, dst], ctx.linear_grid(len, 256)?)
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

    /// A [2, 5] buffer's columns 1..4 read out, then written back into a zeroed [2, 5].
    #[test]
    fn offset_views_read_and_write_a_slab() {
        let Some(ctx) = context_or_skip("permute::offset_views_read_and_write_a_slab") else { return };
        let full = ctx.upload(&(0..10).collect::<Vec<i32>>()).unwrap();
        let slab = StridedView { shape: &[2, 3], strides: &[5, 1], offset: 1 };
        let out = gather_view(&ctx, &full, &slab).unwrap();
        assert_eq!(ctx.read::<i32>(&out, 6).unwrap(), vec![1, 2, 3, 6, 7, 8]);
        let zeros = ctx.upload(&[0i32; 10]).unwrap();
        scatter_view(&ctx, &out, &zeros, &slab).unwrap();
        assert_eq!(ctx.read::<i32>(&zeros, 10).unwrap(), vec![0, 1, 2, 3, 0, 0, 6, 7, 8, 0]);
    }

    #[test]
    fn zero_stride_broadcasts() {
        let Some(ctx) = context_or_skip("permute::zero_stride_broadcasts") else { return };
        let row = ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        let out = gather_strided(&ctx, &row, &[0, 1], &[2, 3]).unwrap();
        assert_eq!(ctx.read::<f32>(&out, 6).unwrap(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
