//! Gathering along an axis by an index, and returning a gathered gradient to its sources.

use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "index_add", source: include_str!("index_add.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    along: u32,
    extent: u32,
    inner: u32,
    index_inner: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: outer, along, extent, inner, index_inner);

/// The geometry of a gather along one axis: the source is `[outer, extent, inner]`, the
/// gathered side `[outer, along, inner]`, and the index holds one u32 (each below `extent`,
/// checked by the caller) per gathered element, or per `(outer, along)` pair when
/// `shared_over_inner` (index_select's row index).
#[derive(Clone, Copy, Debug)]
pub struct AxisIndex {
    pub outer: usize,
    pub along: usize,
    pub extent: usize,
    pub inner: usize,
    pub shared_over_inner: bool,
}

impl AxisIndex {
    fn params(&self) -> Params {
        let index_inner = if self.shared_over_inner { 1 } else { self.inner };
        let [outer, along, extent, inner, index_inner] =
            [self.outer, self.along, self.extent, self.inner, index_inner].map(|d| d as u32);
        Params { outer, along, extent, inner, index_inner }
    }

    fn launch(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        src: &GpuBuffer,
        index: &GpuBuffer,
        len: usize,
    ) -> Result<GpuBuffer> {
        let largest = self.outer * self.along.max(self.extent) * self.inner;
        super::check_indexable(entry, largest, 1)?;
        let out = ctx.alloc(len as u64 * 4)?;
        let spec = KernelSpec::new(
            &FAMILY,
            entry,
            &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(3, Access::ReadWrite)],
        );
        ctx.launch(&spec, bytemuck::bytes_of(&self.params()), &[src, index, &out], ctx.linear_grid(len, 256)?)?;
        Ok(out)
    }
}

/// `out[o, j, i] = src[o, index[o, j, i], i]`: torch.gather along the middle axis; NaN where
/// an index is out of range.
pub fn gather_axis(ctx: &GpuContext, src: &GpuBuffer, index: &GpuBuffer, at: &AxisIndex) -> Result<GpuBuffer> {
    at.launch(ctx, "gather_axis", src, index, at.outer * at.along * at.inner)
}

/// `out[o, k, i] = Σ_j [index[o, j, i] = k] · src[o, j, i]`, summed in order of j: the
/// gradient of a gather (or an index_select) returned to its sources, deterministically.
pub fn add_at_index(ctx: &GpuContext, src: &GpuBuffer, index: &GpuBuffer, at: &AxisIndex) -> Result<GpuBuffer> {
    at.launch(ctx, "add_at_index", src, index, at.outer * at.extent * at.inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::values;
    use crate::testing::context_or_skip;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn gathers_and_their_sums_match_the_host(outer in 1..4usize, along in 1..6usize, extent in 1..6usize,
                                                 inner in 1..5usize, shared in any::<bool>(), seed in any::<u64>()) {
            let Some(ctx) = context_or_skip("index_add::gathers_and_their_sums_match_the_host") else { return Ok(()) };
            let at = AxisIndex { outer, along, extent, inner, shared_over_inner: shared };
            let index_inner = if shared { 1 } else { inner };
            let index: Vec<u32> = (0..outer * along * index_inner).map(|e| ((seed >> (e % 50)) as usize + e * 7) as u32 % extent as u32).collect();
            let picked = |o: usize, j: usize, i: usize| index[(o * along + j) * index_inner + i % index_inner] as usize;
            let src = values(outer * extent * inner, seed);
            let gathered = ctx.read::<f32>(&gather_axis(&ctx, &ctx.upload(&src).unwrap(), &ctx.upload(&index).unwrap(), &at).unwrap(), outer * along * inner).unwrap();
            let mut want = Vec::new();
            for o in 0..outer { for j in 0..along { for i in 0..inner { want.push(src[(o * extent + picked(o, j, i)) * inner + i]); } } }
            prop_assert_eq!(&gathered, &want);

            let grad = values(outer * along * inner, seed ^ 1);
            let summed = ctx.read::<f32>(&add_at_index(&ctx, &ctx.upload(&grad).unwrap(), &ctx.upload(&index).unwrap(), &at).unwrap(), outer * extent * inner).unwrap();
            let mut want = vec![0.0f32; outer * extent * inner];
            for o in 0..outer { for j in 0..along { for i in 0..inner {
                want[(o * extent + picked(o, j, i)) * inner + i] += grad[(o * along + j) * inner + i];
            } } }
            prop_assert_eq!(summed, want);
        }
    }

    #[test]
    fn an_index_out_of_range_gathers_nan() {
        let Some(ctx) = context_or_skip("index_add::an_index_out_of_range_gathers_nan") else { return };
        let at = AxisIndex { outer: 1, along: 2, extent: 3, inner: 1, shared_over_inner: false };
        let out = gather_axis(&ctx, &ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap(), &ctx.upload(&[2u32, 3]).unwrap(), &at);
        let got = ctx.read::<f32>(&out.unwrap(), 2).unwrap();
        assert!(got[0] == 3.0 && got[1].is_nan(), "{got:?}");
    }
}
