use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "softmax", source: include_str!("softmax.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    n: u32,
    inner: u32,
    _pad: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: outer, n, inner);

/// softmax (or, with `log`, log_softmax) of `x` viewed as `[outer, n, inner]`, over the
/// middle axis.
pub fn softmax(ctx: &GpuContext, x: &GpuBuffer, outer: usize, n: usize, inner: usize, log: bool) -> Result<GpuBuffer> {
    let len = outer * n * inner;
    super::check_indexable("softmax", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec =
        KernelSpec::new(&FAMILY, "softmax", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]).constant("LOG", log);
    let params = Params { outer: outer as u32, n: n as u32, inner: inner as u32, _pad: 0 };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[x, &out], ctx.linear_grid(outer * inner, 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, values};
    use crate::testing::context_or_skip;

    #[test]
    fn rows_and_columns_match_the_host() {
        let Some(ctx) = context_or_skip("softmax::rows_and_columns_match_the_host") else { return };
        for (outer, n, inner) in [(3, 5, 1), (2, 7, 3), (1, 300, 1), (4, 1, 2)] {
            let x: Vec<f32> = values(outer * n * inner, 9).iter().map(|v| v * 20.0).collect();
            for log in [false, true] {
                let got = ctx
                    .read::<f32>(&softmax(&ctx, &ctx.upload(&x).unwrap(), outer, n, inner, log).unwrap(), x.len())
                    .unwrap();
                let mut want = vec![0.0; x.len()];
                for o in 0..outer {
                    for i in 0..inner {
                        let at = |k: usize| (o * n + k) * inner + i;
                        let top = (0..n).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, f32::max);
                        let total: f32 = (0..n).map(|k| (x[at(k)] - top).exp()).sum();
                        for k in 0..n {
                            let shifted = x[at(k)] - top;
                            want[at(k)] = if log { shifted - total.ln() } else { shifted.exp() / total };
                        }
                    }
                }
                assert_close(&got, &want, 1e-5);
            }
        }
    }
}
