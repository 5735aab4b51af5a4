use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

/// Every binary op, in one table: its OP code, the WGSL body of its case in the kernel's
/// `apply` (of `x` and `y`) and its host definition. The Rust enum, `ALL`, the host `apply`
/// and the WGSL `switch` are all made from it, so an op added here exists everywhere.
macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident = $code:literal, wgsl: $wgsl:literal, host: |$x:ident, $y:ident| $host:expr;)*) => {
        /// Elementwise ops of two operands; the discriminant is the kernel's OP code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum BinaryOp {
            $($(#[$doc])* $name = $code,)*
        }

        impl BinaryOp {
            pub const ALL: [BinaryOp; [$($code),*].len()] = [$(BinaryOp::$name),*];

            /// The host definition every device must agree with. Always inlined, so a loop
            /// over a constant op compiles to that op alone.
            #[inline(always)]
            pub fn apply(self, x: f32, y: f32) -> f32 {
                match self {
                    $(BinaryOp::$name => {
                        let ($x, $y) = (x, y);
                        $host
                    })*
                }
            }
        }

        pub(crate) static FAMILY: KernelFamily = KernelFamily {
            name: "binary",
            source: concat!(
                include_str!("binary.wgsl"),
                "\nfn apply(x: f32, y: f32) -> f32 {\n    switch OP {\n",
                $("        case ", $code, "u: { ", $wgsl, " }\n",)*
                // WGSL requires a default; every OP the enum has is a case above.
                "        default: { return bitcast<f32>(0x7fc00000u); }\n    }\n}\n"
            ),
        };
    };
}

binary_ops! {
    Add = 0, wgsl: "return x + y;", host: |x, y| x + y;
    Sub = 1, wgsl: "return x - y;", host: |x, y| x - y;
    Mul = 2, wgsl: "return x * y;", host: |x, y| x * y;
    Div = 3, wgsl: "return x / y;", host: |x, y| x / y;
    Maximum = 4, wgsl: "return max(x, y);", host: |x, y| x.max(y);
    Minimum = 5, wgsl: "return min(x, y);", host: |x, y| x.min(y);
    /// `x` where `y > 0`, else 0: the gradient `x` through a ReLU whose input was `y`.
    ReluBackward = 6, wgsl: "return select(0.0, x, y > 0.0);", host: |x, y| if y > 0.0 { x } else { 0.0 };
    /// 1 where `x == y`, else 0: where a maximum was taken, for its gradient.
    Equal = 7, wgsl: "return select(0.0, 1.0, x == y);", host: |x, y| if x == y { 1.0 } else { 0.0 };
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    rank: u32,
    _pad: [u32; 2],
    shape: [u32; super::MAX_RANK],
    a_strides: [u32; super::MAX_RANK],
    b_strides: [u32; super::MAX_RANK],
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len, rank, shape, a_strides, b_strides);

/// `out[i] = op(a[..], b[..])` over the output `shape`, each operand read through its own
/// element strides (0 along a broadcast dimension).
pub fn binary(
    ctx: &GpuContext,
    op: BinaryOp,
    a: &GpuBuffer,
    a_strides: &[usize],
    b: &GpuBuffer,
    b_strides: &[usize],
    shape: &[usize],
) -> Result<GpuBuffer> {
    let len: usize = shape.iter().product();
    super::check_indexable("binary", len, shape.len())?;
    let out = ctx.alloc(len as u64 * 4)?;
    let contiguous = super::contiguous_strides(shape);
    let same_shape = a_strides == contiguous.as_slice() && b_strides == contiguous.as_slice();
    let spec =
        KernelSpec::new(&FAMILY, "binary", &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(3, Access::ReadWrite)])
            .constant("OP", op as u32)
            .constant("SAME_SHAPE", same_shape);
    let params = Params {
        len: len as u32,
        rank: shape.len() as u32,
        _pad: [0; 2],
        shape: super::packed_dims(shape),
        a_strides: super::packed_dims(a_strides),
        b_strides: super::packed_dims(b_strides),
    };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[a, b, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::contiguous_strides;
    use crate::kernels::test_support::{assert_close, shape, values};
    use crate::testing::context_or_skip;
    use proptest::prelude::*;

    /// The host loop: walk every output index, find each operand's element by its strides.
    fn host(op: BinaryOp, a: &[f32], sa: &[usize], b: &[f32], sb: &[usize], shape: &[usize]) -> Vec<f32> {
        let len: usize = shape.iter().product();
        (0..len)
            .map(|i| {
                let (mut rest, mut ai, mut bi) = (i, 0, 0);
                for d in (0..shape.len()).rev() {
                    let coord = rest % shape[d];
                    rest /= shape[d];
                    ai += coord * sa[d];
                    bi += coord * sb[d];
                }
                op.apply(a[ai], b[bi])
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn broadcast_matches_the_host(shape in shape(), mask in any::<u8>(), op_index in 0..7usize) {
            let Some(ctx) = context_or_skip("binary::broadcast_matches_the_host") else { return Ok(()) };
            let op = BinaryOp::ALL[op_index];
            // b is broadcast along the dimensions the mask picks.
            let b_shape: Vec<usize> = shape.iter().enumerate().map(|(d, &n)| if mask >> d & 1 == 1 { 1 } else { n }).collect();
            let sa = contiguous_strides(&shape);
            let sb: Vec<usize> = contiguous_strides(&b_shape).iter().zip(&b_shape).map(|(&s, &n)| if n == 1 { 0 } else { s }).collect();
            let a: Vec<f32> = values(shape.iter().product(), 1);
            let b: Vec<f32> = values(b_shape.iter().product(), 2).iter().map(|v| v + 3.0).collect();
            let out = binary(&ctx, op, &ctx.upload(&a).unwrap(), &sa, &ctx.upload(&b).unwrap(), &sb, &shape).unwrap();
            let got = ctx.read::<f32>(&out, a.len()).unwrap();
            assert_close(&got, &host(op, &a, &sa, &b, &sb, &shape), 1e-6);
        }
    }
}
