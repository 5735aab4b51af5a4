use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

static FAMILY: KernelFamily = KernelFamily { name: "unary", source: include_str!("unary.wgsl") };

/// Elementwise maps; the `Scalar*` ones combine each element with a scalar `s`.
/// The discriminant is the kernel's OP code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg = 0,
    Abs = 1,
    Exp = 2,
    Log = 3,
    Sqrt = 4,
    Relu = 5,
    Sigmoid = 6,
    Tanh = 7,
    Square = 8,
    Recip = 9,
    /// x + s
    AddScalar = 10,
    /// x · s
    MulScalar = 11,
    /// xˢ
    PowScalar = 12,
    /// max(x, s)
    MaxScalar = 13,
    /// min(x, s)
    MinScalar = 14,
    /// s − x
    ScalarSub = 15,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 16] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Square,
        UnaryOp::Recip,
        UnaryOp::AddScalar,
        UnaryOp::MulScalar,
        UnaryOp::PowScalar,
        UnaryOp::MaxScalar,
        UnaryOp::MinScalar,
        UnaryOp::ScalarSub,
    ];

    /// The host definition every device must agree with. Always inlined, so a loop over a
    /// constant op compiles to that op alone.
    #[inline(always)]
    pub fn apply(self, x: f32, s: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Square => x * x,
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::AddScalar => x + s,
            UnaryOp::MulScalar => x * s,
            UnaryOp::PowScalar => x.powf(s),
            UnaryOp::MaxScalar => x.max(s),
            UnaryOp::MinScalar => x.min(s),
            UnaryOp::ScalarSub => s - x,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    scalar: f32,
}

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
