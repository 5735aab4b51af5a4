use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "dropout", source: include_str!("dropout.wgsl") };

/// The 32-bit mixer dropout.wgsl uses; the host copy that keeps the two masks identical.
#[inline]
pub fn mix(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// The drop threshold for probability `p` on the 24-bit scale the mask compares against.
pub fn threshold(p: f32) -> u32 {
    (p as f64 * (1u64 << 24) as f64).round() as u32
}

/// The part of the mask's hash that depends on the seed alone: computed once per call,
/// not once per element.
pub fn mask_key(seed: u64) -> u32 {
    mix(seed as u32 ^ mix((seed >> 32) as u32))
}

/// Whether element `index` survives dropout with `threshold` under the seed whose
/// [`mask_key`] is `key`.
#[inline]
pub fn keeps(key: u32, index: u32, threshold: u32) -> bool {
    (mix(index ^ key) >> 8) >= threshold
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len, seed_lo, seed_hi, threshold, scale);

/// `x[i] · scale` where element i is kept (see [`keeps`]), else 0.
pub fn dropout(
    ctx: &GpuContext,
    x: &GpuBuffer,
    len: usize,
    seed: u64,
    threshold: u32,
    scale: f32,
) -> Result<GpuBuffer> {
    super::check_indexable("dropout", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(&FAMILY, "dropout", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]);
    let params =
        Params { len: len as u32, seed_lo: seed as u32, seed_hi: (seed >> 32) as u32, threshold, scale, _pad: [0; 3] };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[x, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context_or_skip;

    #[test]
    fn the_mask_matches_the_host_bit_for_bit() {
        let Some(ctx) = context_or_skip("dropout::the_mask_matches_the_host_bit_for_bit") else { return };
        let len = 100_003;
        let ones = crate::kernels::fill::fill(&ctx, len, 1.0f32.to_bits()).unwrap();
        for (seed, p) in [(0u64, 0.5f32), (u64::MAX - 3, 0.2), (12345, 0.9)] {
            let t = threshold(p);
            let got = ctx.read::<f32>(&dropout(&ctx, &ones, len, seed, t, 2.0).unwrap(), len).unwrap();
            let key = mask_key(seed);
            let want: Vec<f32> = (0..len as u32).map(|i| if keeps(key, i, t) { 2.0 } else { 0.0 }).collect();
            assert_eq!(got, want);
            let kept = want.iter().filter(|&&v| v > 0.0).count() as f32 / len as f32;
            assert!((kept - (1.0 - p)).abs() < 0.01, "kept {kept} for p = {p}");
        }
    }
}
