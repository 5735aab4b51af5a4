use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

/// Every unary op, in one table: its OP code, the WGSL body of its case in the kernel's
/// `apply` (of `v` and the scalar `s`) and its host definition (of `x` and `s`). The Rust
/// enum, `ALL`, the host `apply` and the WGSL `switch` are all made from it, so an op added
/// here exists everywhere at once.
macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident = $code:literal, wgsl: $wgsl:literal, host: |$x:ident, $s:ident| $host:expr;)*) => {
        /// Elementwise maps; the `Scalar*` ones combine each element with a scalar `s`.
        /// The discriminant is the kernel's OP code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum UnaryOp {
            $($(#[$doc])* $name = $code,)*
        }

        impl UnaryOp {
            pub const ALL: [UnaryOp; [$($code),*].len()] = [$(UnaryOp::$name),*];

            /// The host definition every device must agree with. Always inlined, so a loop
            /// over a constant op compiles to that op alone.
            #[inline(always)]
            #[allow(unused_variables)]
            pub fn apply(self, x: f32, s: f32) -> f32 {
                match self {
                    $(UnaryOp::$name => {
                        let ($x, $s) = (x, s);
                        $host
                    })*
                }
            }
        }

        pub(crate) static FAMILY: KernelFamily = KernelFamily {
            name: "unary",
            source: concat!(
                include_str!("unary.wgsl"),
                "\nfn apply(v: f32, s: f32) -> f32 {\n    switch OP {\n",
                $("        case ", $code, "u: { ", $wgsl, " }\n",)*
                // WGSL requires a default; every OP the enum has is a case above.
                "        default: { return bitcast<f32>(0x7fc00000u); }\n    }\n}\n"
            ),
        };
    };
}

unary_ops! {
    Neg = 0, wgsl: "return -v;", host: |x, s| -x;
    Abs = 1, wgsl: "return abs(v);", host: |x, s| x.abs();
    Exp = 2, wgsl: "return exp(v);", host: |x, s| x.exp();
    Log = 3, wgsl: "return log(v);", host: |x, s| x.ln();
    Sqrt = 4, wgsl: "return sqrt(v);", host: |x, s| x.sqrt();
    Relu = 5, wgsl: "return max(v, 0.0);", host: |x, s| x.max(0.0);
    /// Split by sign so exp never overflows.
    Sigmoid = 6,
        wgsl: "if (v >= 0.0) { return 1.0 / (1.0 + exp(-v)); } let e = exp(v); return e / (1.0 + e);",
        host: |x, s| if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { let e = x.exp(); e / (1.0 + e) };
    Tanh = 7, wgsl: "return tanh(v);", host: |x, s| x.tanh();
    Square = 8, wgsl: "return v * v;", host: |x, s| x * x;
    Recip = 9, wgsl: "return 1.0 / v;", host: |x, s| 1.0 / x;
    /// x + s
    AddScalar = 10, wgsl: "return v + s;", host: |x, s| x + s;
    /// x · s
    MulScalar = 11, wgsl: "return v * s;", host: |x, s| x * s;
    /// xˢ
    PowScalar = 12, wgsl: "return pow(v, s);", host: |x, s| x.powf(s);
    /// max(x, s)
    MaxScalar = 13, wgsl: "return max(v, s);", host: |x, s| x.max(s);
    /// min(x, s)
    MinScalar = 14, wgsl: "return min(v, s);", host: |x, s| x.min(s);
    /// s − x
    ScalarSub = 15, wgsl: "return s - v;", host: |x, s| s - x;
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    scalar: f32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: len, scalar);

/// The pipeline of `op`: input in slot 1, output in slot 2.
pub(crate) fn spec(op: UnaryOp) -> KernelSpec {
    KernelSpec::new(&FAMILY, "unary", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]).constant("OP", op as u32)
}

/// `op` applied to the first `len` elements of `x`, with scalar operand `scalar`.
pub fn unary(ctx: &GpuContext, op: UnaryOp, x: &GpuBuffer, len: usize, scalar: f32) -> Result<GpuBuffer> {
    super::check_indexable("unary", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = spec(op);
    let params = Params { len: len as u32, scalar };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[x, &out], ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

/// `into[i] += scale · x[i]` for the first `len` elements, in place.
pub fn accumulate(ctx: &GpuContext, into: &GpuBuffer, x: &GpuBuffer, len: usize, scale: f32) -> Result<()> {
    super::check_indexable("accumulate", len, 1)?;
    // OP is unused by this entry, but the module declares it.
    let spec =
        KernelSpec::new(&FAMILY, "accumulate", &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]).constant("OP", 0);
    let params = Params { len: len as u32, scalar: scale };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[x, into], ctx.linear_grid(len, 256)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, values};
    use crate::testing::context_or_skip;

    #[test]
    fn every_op_matches_the_host() {
        let Some(ctx) = context_or_skip("unary::every_op_matches_the_host") else { return };
        let len = 1000;
        // Positive inputs keep log, sqrt and fractional powers defined.
        let x: Vec<f32> = values(len, 3).iter().map(|v| v.abs() + 0.1).collect();
        let buffer = ctx.upload(&x).unwrap();
        for op in UnaryOp::ALL {
            let got = ctx.read::<f32>(&unary(&ctx, op, &buffer, len, 1.7).unwrap(), len).unwrap();
            let want: Vec<f32> = x.iter().map(|&v| op.apply(v, 1.7)).collect();
            assert_close(&got, &want, 1e-5);
        }
    }

    #[test]
    fn accumulate_adds_a_scaled_tensor_in_place() {
        let Some(ctx) = context_or_skip("unary::accumulate_adds_a_scaled_tensor_in_place") else { return };
        let (sum, x) = (ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap(), ctx.upload(&[1.0f32, -1.0, 0.5]).unwrap());
        accumulate(&ctx, &sum, &x, 3, 2.0).unwrap();
        accumulate(&ctx, &sum, &x, 3, 2.0).unwrap();
        assert_eq!(ctx.read::<f32>(&sum, 3).unwrap(), vec![5.0, -2.0, 5.0]);
    }

    #[test]
    fn sigmoid_saturates_without_overflow() {
        let Some(ctx) = context_or_skip("unary::sigmoid_saturates_without_overflow") else { return };
        let x = [-200.0f32, -20.0, 0.0, 20.0, 200.0];
        let got =
            ctx.read::<f32>(&unary(&ctx, UnaryOp::Sigmoid, &ctx.upload(&x).unwrap(), 5, 0.0).unwrap(), 5).unwrap();
        assert!(got.iter().all(|v| v.is_finite()));
        assert_close(&got, &x.map(|v| UnaryOp::Sigmoid.apply(v, 0.0)), 1e-6);
    }
}
