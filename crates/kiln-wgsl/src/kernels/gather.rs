use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "gather", source: include_str!("gather.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    out_bytes: u32,
    row_bytes: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: out_bytes, row_bytes);

/// Rows of `row_bytes` bytes picked from `src` by `index` (u32 row numbers, one per output
/// row, already checked to be in range): a batch drawn from a dataset held on the GPU.
pub fn gather_rows(
    ctx: &GpuContext,
    src: &GpuBuffer,
    index: &GpuBuffer,
    rows: usize,
    row_bytes: usize,
) -> Result<GpuBuffer> {
    let out_bytes = rows * row_bytes;
    super::check_indexable("gather_rows", out_bytes, 1)?;
    let out = ctx.alloc(out_bytes as u64)?;
    let spec = KernelSpec::new(
        &FAMILY,
        "gather_rows",
        &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(3, Access::ReadWrite)],
    );
    let params = Params { out_bytes: out_bytes as u32, row_bytes: row_bytes as u32 };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, index, &out], ctx.linear_grid(out_bytes.div_ceil(4), 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context_or_skip;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn rows_of_any_byte_length_match_the_host(src_rows in 1..40usize, row_bytes in 1..70usize, picks in prop::collection::vec(any::<prop::sample::Index>(), 0..50)) {
            let Some(ctx) = context_or_skip("gather::rows_of_any_byte_length_match_the_host") else { return Ok(()) };
            let src: Vec<u8> = (0..src_rows * row_bytes).map(|i| (i * 7 % 251) as u8).collect();
            let index: Vec<u32> = picks.iter().map(|p| p.index(src_rows) as u32).collect();
            let out = gather_rows(&ctx, &ctx.upload(&src).unwrap(), &ctx.upload(&index).unwrap(), index.len(), row_bytes).unwrap();
            let got = ctx.read_bytes(&out, (index.len() * row_bytes) as u64).unwrap();
            let want: Vec<u8> = index.iter().flat_map(|&r| src[r as usize * row_bytes..(r as usize + 1) * row_bytes].to_vec()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
