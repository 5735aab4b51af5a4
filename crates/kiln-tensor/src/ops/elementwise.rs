//! Elementwise maps: unary, tensor–scalar, and broadcasting tensor–tensor.

use kiln_wgsl::kernels::binary::{BinaryOp, binary};
use kiln_wgsl::kernels::unary::{UnaryOp, unary};
use ndarray::{IxDyn, Zip};

use rayon::prelude::*;

use super::{into_row_major, view};
use crate::shape::{broadcast_shapes, broadcast_strides};
use crate::{DType, Device, Result, Tensor};

/// Elementwise work on fewer elements stays on one thread; past this it is split across
/// cores (measured on the ASL CNN's conv + bias shapes with benches/layers.rs).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

impl Tensor {
    fn map(&self, name: &'static str, op: UnaryOp, scalar: f32) -> Result<Tensor> {
        self.expect_dtype(name, DType::F32)?;
        match &self.device {
            Device::Cpu => {
                let values = if self.len() >= PARALLEL_MIN_ELEMENTS {
                    self.cpu_values().par_iter().map(|&x| op.apply(x, scalar)).collect()
                } else {
                    self.cpu_values().iter().map(|&x| op.apply(x, scalar)).collect()
                };
                Ok(Tensor::cpu_f32(values, self.shape.clone()))
            }
            Device::Gpu(ctx) => {
                let out = unary(ctx, op, self.gpu_buffer(), self.len(), scalar)?;
                Ok(Tensor::gpu(out, self.shape.clone(), DType::F32, &self.device))
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
        self.expect_dtype(name, DType::F32)?;
        other.expect_dtype(name, DType::F32)?;
        self.expect_same_device(name, other)?;
        let shape = broadcast_shapes(name, &self.shape, &other.shape)?;
        match &self.device {
            Device::Cpu => {
                let a = view(self.cpu_values(), &self.shape);
                let b = view(other.cpu_values(), &other.shape);
                let (a, b) =
                    (a.broadcast(IxDyn(&shape)).expect("checked"), b.broadcast(IxDyn(&shape)).expect("checked"));
                let zip = Zip::from(&a).and(&b);
                let out = if shape.iter().product::<usize>() >= PARALLEL_MIN_ELEMENTS {
                    zip.par_map_collect(|&x, &y| op.apply(x, y))
                } else {
                    zip.map_collect(|&x, &y| op.apply(x, y))
                };
                Ok(Tensor::cpu_f32(into_row_major(out), shape))
            }
            Device::Gpu(ctx) => {
                let a_strides = broadcast_strides(&self.shape, &shape);
                let b_strides = broadcast_strides(&other.shape, &shape);
                let out = binary(ctx, op, self.gpu_buffer(), &a_strides, other.gpu_buffer(), &b_strides, &shape)?;
                Ok(Tensor::gpu(out, shape, DType::F32, &self.device))
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
    /// The gradient through a ReLU: `self` (the gradient of its output) where the forward
    /// input `input` was positive, else 0.
    pub fn relu_backward(&self, input: &Tensor) -> Result<Tensor> {
        self.zip_with("relu_backward", BinaryOp::ReluBackward, input)
    }
}
