use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "convert", source: include_str!("convert.wgsl") };

/// Element types that convert to f32; the discriminant is the kernel's SOURCE code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Bytes, packed four to a 32-bit word.
    U8 = 0,
    I32 = 1,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len);

/// The first `len` elements of `src`, as f32.
pub fn to_f32(ctx: &GpuContext, src: &GpuBuffer, source: Source, len: usize) -> Result<GpuBuffer> {
    super::check_indexable("to_f32", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(&FAMILY, "to_f32", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)])
        .constant("SOURCE", source as u32);
    ctx.launch(&spec, bytemuck::bytes_of(&Params { len: len as u32 }), &[src, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context_or_skip;

    #[test]
    fn bytes_and_ints_become_floats() {
        let Some(ctx) = context_or_skip("convert::bytes_and_ints_become_floats") else { return };
        let bytes: Vec<u8> = (0..=255).chain(0..7).collect();
        let got =
            ctx.read::<f32>(&to_f32(&ctx, &ctx.upload(&bytes).unwrap(), Source::U8, bytes.len()).unwrap(), bytes.len());
        assert_eq!(got.unwrap(), bytes.iter().map(|&b| b as f32).collect::<Vec<_>>());
        let ints = [-3i32, 0, 7, i32::MAX];
        let got = ctx.read::<f32>(&to_f32(&ctx, &ctx.upload(&ints).unwrap(), Source::I32, 4).unwrap(), 4).unwrap();
        assert_eq!(got, ints.map(|i| i as f32));
    }
}
