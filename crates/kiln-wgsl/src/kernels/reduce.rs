use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "reduce", source: include_str!("reduce.wgsl") };

/// Reductions over one axis; the discriminant is the kernel's OP code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum = 0,
    Mean = 1,
    Max = 2,
    /// Index of the first maximum; the output holds u32 indices.
    Argmax = 3,
}

/// Axes at least this long, with few enough outputs to leave the GPU idle one invocation
/// each, are reduced by a workgroup per output instead.
const TREE_MIN_AXIS: usize = 256;
const TREE_MAX_OUTPUTS: usize = 4096;

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

/// Reduces `x`, viewed as `[outer, n, inner]`, over its middle axis into `outer × inner`
/// 32-bit words: f32 values, or u32 indices for `Argmax`. `Max` and `Argmax` need `n > 0`.
pub fn reduce(
    ctx: &GpuContext,
    op: ReduceOp,
    x: &GpuBuffer,
    outer: usize,
    n: usize,
    inner: usize,
) -> Result<GpuBuffer> {
    let outputs = outer * inner;
    super::check_indexable("reduce", outputs * n, 1)?;
    if n == 0 && matches!(op, ReduceOp::Max | ReduceOp::Argmax) {
        return Err(crate::GpuError::InvalidLaunch { kernel: "reduce", reason: format!("{op:?} over an empty axis") });
    }
    let out = ctx.alloc(outputs as u64 * 4)?;
    let slots = &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)];
    let params = Params { outer: outer as u32, n: n as u32, inner: inner as u32, _pad: 0 };
    let tree = n >= TREE_MIN_AXIS && (inner == 1 || outputs <= TREE_MAX_OUTPUTS);
    let (entry, grid) = if tree {
        ("reduce_tree", ctx.linear_grid(outputs * 256, 256)?)
    } else {
        ("reduce_serial", ctx.linear_grid(outputs, 256)?)
    };
    let spec = KernelSpec::new(&FAMILY, entry, slots).constant("OP", op as u32);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[x, &out], grid)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, values};
    use crate::testing::context_or_skip;
    use proptest::prelude::*;

    fn host(op: ReduceOp, x: &[f32], outer: usize, n: usize, inner: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                let lane: Vec<f32> = (0..n).map(|k| x[(o * n + k) * inner + i]).collect();
                out.push(match op {
                    ReduceOp::Sum => lane.iter().sum(),
                    ReduceOp::Mean => lane.iter().sum::<f32>() / n as f32,
                    ReduceOp::Max => lane.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    ReduceOp::Argmax => {
                        let mut best = 0;
                        for k in 1..n {
                            if lane[k] > lane[best] {
                                best = k;
                            }
                        }
                        best as f32
                    }
                });
            }
        }
        out
    }

    fn run(ctx: &GpuContext, op: ReduceOp, x: &[f32], outer: usize, n: usize, inner: usize) -> Vec<f32> {
        let out = reduce(ctx, op, &ctx.upload(x).unwrap(), outer, n, inner).unwrap();
        if op == ReduceOp::Argmax {
            ctx.read::<u32>(&out, outer * inner).unwrap().into_iter().map(|i| i as f32).collect()
        } else {
            ctx.read::<f32>(&out, outer * inner).unwrap()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn both_strategies_match_the_host(
            outer in prop_oneof![1..=5usize, Just(17usize)],
            n in prop_oneof![1..=9usize, Just(255usize), Just(256), Just(1031)],
            inner in prop_oneof![Just(1usize), 2..=7usize, Just(33usize)],
            op_index in 0..4usize,
        ) {
            let Some(ctx) = context_or_skip("reduce::both_strategies_match_the_host") else { return Ok(()) };
            let op = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Argmax][op_index];
            let x = values(outer * n * inner, (outer * 1000 + n * 10 + inner) as u64);
            let tolerance = 1e-6 * (n as f32).sqrt() * 4.0;
            assert_close(&run(&ctx, op, &x, outer, n, inner), &host(op, &x, outer, n, inner), tolerance);
        }
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        let Some(ctx) = context_or_skip("reduce::argmax_takes_the_first_of_equal_maxima") else { return };
        let mut x = vec![0.0f32; 600];
        for i in [5, 300, 599] {
            x[i] = 2.0;
        }
        // 600 is long enough for the tree strategy; 3 rows of 200 take the serial one.
        assert_eq!(run(&ctx, ReduceOp::Argmax, &x, 1, 600, 1), vec![5.0]);
        assert_eq!(run(&ctx, ReduceOp::Argmax, &x, 3, 200, 1), vec![5.0, 100.0, 199.0]);
    }

    #[test]
    fn empty_axis() {
        let Some(ctx) = context_or_skip("reduce::empty_axis") else { return };
        let x = ctx.alloc(4).unwrap();
        assert!(reduce(&ctx, ReduceOp::Max, &x, 2, 0, 1).is_err());
        let sums = reduce(&ctx, ReduceOp::Sum, &x, 2, 0, 1).unwrap();
        assert_eq!(ctx.read::<f32>(&sums, 2).unwrap(), vec![0.0, 0.0]);
    }
}
