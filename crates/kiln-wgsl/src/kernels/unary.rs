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
    /// x where positive, else s·x: LeakyReLU with slope `s`.
    LeakyRelu = 16, wgsl: "return select(s * v, v, v > 0.0);", host: |x, s| if x > 0.0 { x } else { s * x };
    /// LeakyReLU's derivative: 1 where positive, else `s`.
    LeakyReluSlope = 17, wgsl: "return select(s, 1.0, v > 0.0);", host: |x, s| if x > 0.0 { 1.0 } else { s };
    /// x·Φ(x) = ½x(1 + erf(x/√2)), PyTorch's exact GELU.
    Gelu = 18, wgsl: "return 0.5 * v * (1.0 + erf(v * 0.7071067812));", host: |x, s| 0.5 * x * (1.0 + erf(x * 0.707_106_77));
    /// GELU's derivative: Φ(x) + x·φ(x).
    GeluDerivative = 19,
        wgsl: "return 0.5 * (1.0 + erf(v * 0.7071067812)) + v * 0.3989422804 * exp(-0.5 * v * v);",
        host: |x, s| 0.5 * (1.0 + erf(x * 0.707_106_77)) + x * 0.398_942_3 * (-0.5 * x * x).exp();
    /// ½x(1 + tanh(√(2/π)(x + 0.044715x³))), GELU(approximate='tanh').
    GeluTanh = 20, wgsl: "return 0.5 * v * (1.0 + gelu_tanh_inner(v));", host: |x, s| 0.5 * x * (1.0 + gelu_tanh_inner(x));
    /// The tanh approximation's derivative.
    GeluTanhDerivative = 21,
        wgsl: "let t = gelu_tanh_inner(v); return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * 0.7978845608 * (1.0 + 0.134145 * v * v);",
        host: |x, s| {
            let t = gelu_tanh_inner(x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.797_884_6 * (1.0 + 0.134_145 * x * x)
        };
}

/// The error function as unary.wgsl computes it: Abramowitz & Stegun 7.1.26, |error| ≤
/// 1.5e-7 in exact arithmetic, 3.5e-7 in f32.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let magnitude = 1.0 - poly * (-z * z).exp();
    // 0 at 0, as WGSL's sign() makes it.
    if x == 0.0 { 0.0 } else { magnitude.copysign(x) }
}

/// tanh(√(2/π)·(x + 0.044715·x³)), as unary.wgsl's `gelu_tanh_inner`.
#[inline(always)]
fn gelu_tanh_inner(x: f32) -> f32 {
    (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh()
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

    /// Signed inputs for the ops defined on every real (LeakyReLU's and GELU's two sides).
    #[test]
    fn signed_inputs_match_the_host() {
        let Some(ctx) = context_or_skip("unary::signed_inputs_match_the_host") else { return };
        let x: Vec<f32> = values(1000, 4).iter().map(|v| v * 3.0).chain([0.0, -0.0, 8.0, -8.0]).collect();
        let buffer = ctx.upload(&x).unwrap();
        let everywhere =
            UnaryOp::ALL.into_iter().filter(|op| !matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::PowScalar));
        for op in everywhere {
            let got = ctx.read::<f32>(&unary(&ctx, op, &buffer, x.len(), 0.1).unwrap(), x.len()).unwrap();
            let want: Vec<f32> = x.iter().map(|&v| op.apply(v, 0.1)).collect();
            assert_close(&got, &want, 1e-5);
        }
    }

    /// The host erf against f64 values of erf (from the series, exact to f32 here).
    #[test]
    fn erf_is_within_its_bound() {
        let series = |x: f64| {
            // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1)), converging for |x| ≤ 4.
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        // 1.5e-7 from the formula, and a few roundings of f32 near 1 (3.45e-7 at worst here).
        for x in (-400..=400).map(|i| i as f32 / 100.0) {
            assert!((erf(x) as f64 - series(x as f64)).abs() < 4e-7, "erf({x})");
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
