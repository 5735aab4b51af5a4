use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "gather", source: include_str!("gather.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    out_bytes: u32,
    row_bytes: u32,
    scale: f32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: out_bytes, row_bytes, scale);

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
    let params = Params { out_bytes: out_bytes as u32, row_bytes: row_bytes as u32, scale: 1.0 };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, index, &out], ctx.linear_grid(out_bytes.div_ceil(4), 256)?)?;
    Ok(out)
}

/// Rows of `row_len` bytes picked from `src` by `index` as [`gather_rows`] does, each byte
/// written as an f32 times `scale` (`f32(byte) * scale`, the bits of a conversion and then
/// a multiplication): `rows × row_len` f32s.
pub fn gather_rows_to_f32(
    ctx: &GpuContext,
    src: &GpuBuffer,
    index: &GpuBuffer,
    rows: usize,
    row_len: usize,
    scale: f32,
) -> Result<GpuBuffer> {
    let len = rows * row_len;
    super::check_indexable("gather_rows_to_f32", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(
        &FAMILY,
        "gather_rows_to_f32",
        &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(3, Access::ReadWrite)],
    );
    let params = Params { out_bytes: len as u32, row_bytes: row_len as u32, scale };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, index, &out], ctx.linear_grid(len, 256)?)?;
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

        #[test]
        fn byte_rows_become_scaled_f32s_as_on_the_host(src_rows in 1..40usize, row_len in 1..70usize, picks in prop::collection::vec(any::<prop::sample::Index>(), 0..50), scale in prop_oneof![Just(1.0f32), Just(1.0 / 255.0), -3.0f32..3.0]) {
            let Some(ctx) = context_or_skip("gather::byte_rows_become_scaled_f32s_as_on_the_host") else { return Ok(()) };
            let src: Vec<u8> = (0..src_rows * row_len).map(|i| (i * 7 % 256) as u8).collect();
            let index: Vec<u32> = picks.iter().map(|p| p.index(src_rows) as u32).collect();
            let out = gather_rows_to_f32(&ctx, &ctx.upload(&src).unwrap(), &ctx.upload(&index).unwrap(), index.len(), row_len, scale).unwrap();
            let got: Vec<u32> = ctx.read::<f32>(&out, index.len() * row_len).unwrap().iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = index
                .iter()
                .flat_map(|&r| src[r as usize * row_len..(r as usize + 1) * row_len].iter().map(|&v| (f32::from(v) * scale).to_bits()))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
