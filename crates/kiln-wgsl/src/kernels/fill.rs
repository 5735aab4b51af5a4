use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "fill", source: include_str!("fill.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    bits: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len, bits);

/// A buffer of `len` 32-bit words, each set to `bits` (`f32::to_bits` or an i32's bits).
pub fn fill(ctx: &GpuContext, len: usize, bits: u32) -> Result<GpuBuffer> {
    super::check_indexable("fill", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(&FAMILY, "fill", &[Slot(2, Access::ReadWrite)]);
    let params = Params { len: len as u32, bits };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[&out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

/// A new buffer holding the first `len` 32-bit words of `src`.
pub fn copy(ctx: &GpuContext, src: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    super::check_indexable("copy", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(&FAMILY, "copy", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]);
    let params = Params { len: len as u32, bits: 0 };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[src, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context_or_skip;

    #[test]
    fn fill_and_copy_match_the_host() {
        let Some(ctx) = context_or_skip("fill_and_copy_match_the_host") else { return };
        for len in [1usize, 255, 256, 257, 10_000] {
            let filled = fill(&ctx, len, 1.5f32.to_bits()).unwrap();
            assert_eq!(ctx.read::<f32>(&filled, len).unwrap(), vec![1.5; len]);
            let ints = fill(&ctx, len, (-7i32) as u32).unwrap();
            let copied = copy(&ctx, &ints, len).unwrap();
            assert_eq!(ctx.read::<i32>(&copied, len).unwrap(), vec![-7; len]);
        }
    }
}
