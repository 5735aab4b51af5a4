//! Elementwise maps: unary, tensor–scalar, and broadcasting tensor–tensor.

use kiln_wgsl::kernels::binary::{BinaryOp, binary};
use kiln_wgsl::kernels::unary::{UnaryOp, accumulate, unary};
use rayon::prelude::*;

use super::{PARALLEL_MIN_ELEMENTS, rows_per_task};
use crate::profile;
use crate::shape::{broadcast_shapes, broadcast_strides};
use crate::{DType, Device, Result, Tensor, TensorError};

/// `f` over every value, on several threads when there are many.
fn map_values(values: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    if values.len() >= PARALLEL_MIN_ELEMENTS {
        values.par_iter().map(|&x| f(x)).collect()
    } else {
        values.iter().map(|&x| f(x)).collect()
    }
}

/// `f` over pairs of equally long slices.
fn zip_values(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    if a.len() >= PARALLEL_MIN_ELEMENTS {
        a.par_iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    } else {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
}

/// `run(|x| op.apply(x, …))` with `op` a constant in each arm, so each op gets its own
/// loop (which the compiler can vectorise) instead of a `match` per element.
macro_rules! specialise {
    ($op:expr, $ty:ident, [$($variant:ident),*], $run:expr) => {
        match $op {
            $($ty::$variant => $run($ty::$variant),)*
        }
    };
}

fn cpu_unary(values: &[f32], op: UnaryOp, s: f32) -> Vec<f32> {
    specialise!(
        op,
        UnaryOp,
        [
            Neg,
            Abs,
            Exp,
            Log,
            Sqrt,
            Relu,
            Sigmoid,
            Tanh,
            Square,
            Recip,
            AddScalar,
            MulScalar,
            PowScalar,
            MaxScalar,
            MinScalar,
            ScalarSub,
            LeakyRelu,
            LeakyReluSlope,
            Gelu,
            GeluDerivative,
            GeluTanh,
            GeluTanhDerivative
        ],
        |op: UnaryOp| map_values(values, |x| op.apply(x, s))
    )
}

fn cpu_binary_same_shape(a: &[f32], b: &[f32], op: BinaryOp) -> Vec<f32> {
    specialise!(op, BinaryOp, [Add, Sub, Mul, Div, Maximum, Minimum, ReluBackward, Equal], |op: BinaryOp| {
        zip_values(a, b, |x, y| op.apply(x, y))
    })
}

/// One operand as the broadcast sees it: its values and its stride along each output axis
/// (0 where it is broadcast).
struct Strided<'a> {
    values: &'a [f32],
    strides: Vec<usize>,
}

impl Strided<'_> {
    /// Where row `row` of the output (all axes but the last) starts in this operand.
    fn row_start(&self, row: usize, shape: &[usize]) -> usize {
        let (mut rest, mut start) = (row, 0);
        for axis in (0..shape.len() - 1).rev() {
            start += (rest % shape[axis]) * self.strides[axis];
            rest /= shape[axis];
        }
        start
    }
}

/// A broadcasting binary op, row by row along the last axis. Each operand either runs
/// along a row or repeats one value across it, so the inner loops stay simple enough to
/// vectorise.
fn cpu_binary_broadcast(a: &Strided, b: &Strided, shape: &[usize], op: BinaryOp) -> Vec<f32> {
    specialise!(op, BinaryOp, [Add, Sub, Mul, Div, Maximum, Minimum, ReluBackward, Equal], |op: BinaryOp| {
        broadcast_rows(a, b, shape, |x, y| op.apply(x, y))
    })
}

fn broadcast_rows(a: &Strided, b: &Strided, shape: &[usize], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let len: usize = shape.iter().product();
    let mut out = vec![0.0f32; len];
    let Some(&row_len) = shape.last() else {
        out[0] = f(a.values[0], b.values[0]);
        return out;
    };
    if len == 0 {
        return out;
    }
    let last = shape.len() - 1;
    let fill_row = |(row, out): (usize, &mut [f32])| {
        let (a_start, b_start) = (a.row_start(row, shape), b.row_start(row, shape));
        match (a.strides[last], b.strides[last]) {
            (0, 0) => out.fill(f(a.values[a_start], b.values[b_start])),
            (0, _) => {
                let x = a.values[a_start];
                for (o, &y) in out.iter_mut().zip(&b.values[b_start..b_start + row_len]) {
                    *o = f(x, y);
                }
            }
            (_, 0) => {
                let y = b.values[b_start];
                for (o, &x) in out.iter_mut().zip(&a.values[a_start..a_start + row_len]) {
                    *o = f(x, y);
                }
            }
            _ => {
                let rows = a.values[a_start..a_start + row_len].iter().zip(&b.values[b_start..b_start + row_len]);
                for (o, (&x, &y)) in out.iter_mut().zip(rows) {
                    *o = f(x, y);
                }
            }
        }
    };
    if len >= PARALLEL_MIN_ELEMENTS {
        out.par_chunks_mut(row_len).enumerate().with_min_len(rows_per_task(row_len, 4096)).for_each(fill_row);
    } else {
        out.chunks_mut(row_len).enumerate().for_each(fill_row);
    }
    out
}

impl Tensor {
    fn map(&self, name: &'static str, op: UnaryOp, scalar: f32) -> Result<Tensor> {
        let _op = profile::enter(name);
        self.expect_dtype(name, DType::F32)?;
        match &self.device() {
            Device::Cpu => Ok(Tensor::cpu_f32(cpu_unary(self.cpu_values(), op, scalar), self.shape.clone())),
            Device::Gpu(ctx) => {
                let out = unary(ctx, op, self.gpu_buffer(), self.len(), scalar)?;
                Ok(Tensor::gpu(out, self.shape.clone(), DType::F32))
            }
        }
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.map("neg", UnaryOp::Neg, 0.0)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.map("abs", UnaryOp::Abs, 0.0)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.map("exp", UnaryOp::Exp, 0.0)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.map("log", UnaryOp::Log, 0.0)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.map("sqrt", UnaryOp::Sqrt, 0.0)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.map("relu", UnaryOp::Relu, 0.0)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.map("sigmoid", UnaryOp::Sigmoid, 0.0)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.map("tanh", UnaryOp::Tanh, 0.0)
    }
    pub fn square(&self) -> Result<Tensor> {
        self.map("square", UnaryOp::Square, 0.0)
    }
    /// x where positive, else `slope`·x, as `torch.nn.functional.leaky_relu`.
    pub fn leaky_relu(&self, slope: f32) -> Result<Tensor> {
        self.map("leaky_relu", UnaryOp::LeakyRelu, slope)
    }
    /// The gradient through a LeakyReLU: this gradient times 1 where the input was
    /// positive, else `slope`.
    pub fn leaky_relu_backward(&self, input: &Tensor, slope: f32) -> Result<Tensor> {
        self.mul(&input.map("leaky_relu_backward", UnaryOp::LeakyReluSlope, slope)?)
    }
    /// x·Φ(x), PyTorch's exact GELU (Φ through an erf with |error| ≤ 3.5e-7); with `tanh`,
    /// its tanh approximation (`approximate='tanh'`).
    pub fn gelu(&self, tanh: bool) -> Result<Tensor> {
        self.map("gelu", if tanh { UnaryOp::GeluTanh } else { UnaryOp::Gelu }, 0.0)
    }
    /// The gradient through a GELU whose input was `input`.
    pub fn gelu_backward(&self, input: &Tensor, tanh: bool) -> Result<Tensor> {
        let derivative = if tanh { UnaryOp::GeluTanhDerivative } else { UnaryOp::GeluDerivative };
        self.mul(&input.map("gelu_backward", derivative, 0.0)?)
    }
    /// 1 / x.
    pub fn recip(&self) -> Result<Tensor> {
        self.map("recip", UnaryOp::Recip, 0.0)
    }
    pub fn add_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("add_scalar", UnaryOp::AddScalar, s)
    }
    pub fn sub_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("sub_scalar", UnaryOp::AddScalar, -s)
    }
    pub fn mul_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("mul_scalar", UnaryOp::MulScalar, s)
    }
    /// x · (1/s), the same rounding on every device.
    pub fn div_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("div_scalar", UnaryOp::MulScalar, 1.0 / s)
    }
    /// s − x.
    pub fn rsub_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("rsub_scalar", UnaryOp::ScalarSub, s)
    }
    pub fn pow_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("pow_scalar", UnaryOp::PowScalar, s)
    }
    /// max(x, s), e.g. a clamp from below.
    pub fn maximum_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("maximum_scalar", UnaryOp::MaxScalar, s)
    }
    pub fn minimum_scalar(&self, s: f32) -> Result<Tensor> {
        self.map("minimum_scalar", UnaryOp::MinScalar, s)
    }

    fn zip_with(&self, name: &'static str, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        let _op = profile::enter(name);
        self.expect_dtype(name, DType::F32)?;
        other.expect_dtype(name, DType::F32)?;
        self.expect_same_device(name, other)?;
        let shape = broadcast_shapes(name, &self.shape, &other.shape)?;
        match &self.device() {
            Device::Cpu if self.shape == other.shape => {
                Ok(Tensor::cpu_f32(cpu_binary_same_shape(self.cpu_values(), other.cpu_values(), op), shape))
            }
            Device::Cpu => {
                let a = Strided { values: self.cpu_values(), strides: broadcast_strides(&self.shape, &shape) };
                let b = Strided { values: other.cpu_values(), strides: broadcast_strides(&other.shape, &shape) };
                Ok(Tensor::cpu_f32(cpu_binary_broadcast(&a, &b, &shape, op), shape))
            }
            Device::Gpu(ctx) => {
                let a_strides = broadcast_strides(&self.shape, &shape);
                let b_strides = broadcast_strides(&other.shape, &shape);
                let out = binary(ctx, op, self.gpu_buffer(), &a_strides, other.gpu_buffer(), &b_strides, &shape)?;
                Ok(Tensor::gpu(out, shape, DType::F32))
            }
        }
    }

    /// Elementwise sum with NumPy broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("add", BinaryOp::Add, other)
    }
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("sub", BinaryOp::Sub, other)
    }
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("mul", BinaryOp::Mul, other)
    }
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("div", BinaryOp::Div, other)
    }
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("maximum", BinaryOp::Maximum, other)
    }
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("minimum", BinaryOp::Minimum, other)
    }
    /// 1.0 where the elements are equal, else 0.0, with NumPy broadcasting.
    pub fn eq(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with("eq", BinaryOp::Equal, other)
    }
    /// The gradient through a ReLU: `self` (the gradient of its output) where the forward
    /// input `input` was positive, else 0.
    pub fn relu_backward(&self, input: &Tensor) -> Result<Tensor> {
        self.zip_with("relu_backward", BinaryOp::ReluBackward, input)
    }

    /// self += scale · other, in place, for tensors of one shape: a running sum (an epoch's
    /// loss) in one launch. Other handles to this tensor's data keep the old values.
    pub fn accumulate(&mut self, other: &Tensor, scale: f32) -> Result<()> {
        let _op = profile::enter("accumulate");
        const OP: &str = "accumulate";
        self.expect_dtype(OP, DType::F32)?;
        other.expect_dtype(OP, DType::F32)?;
        self.expect_same_device(OP, other)?;
        if self.shape != other.shape {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: other.shape.clone(),
                why: "a running sum takes tensors of its own shape",
            });
        }
        self.unshare()?;
        match &self.device() {
            Device::Gpu(ctx) => Ok(accumulate(ctx, self.gpu_buffer(), other.gpu_buffer(), self.len(), scale)?),
            Device::Cpu => {
                self.cpu_values_mut().iter_mut().zip(other.cpu_values()).for_each(|(s, v)| *s += scale * v);
                Ok(())
            }
        }
    }
}
