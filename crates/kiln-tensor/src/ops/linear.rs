//! The fully connected layer's forward and backward passes, from matmul and sums. On the GPU
//! the bias (and a ReLU after the layer) is applied as the product is stored.

use kiln_wgsl::kernels::matmul::{BiasAxis, Epilogue, matmul_with};

use super::matmul::cpu_matmul_into;
use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

/// The gradients of `linear(input, weight, bias)`.
#[derive(Clone, Debug)]
pub struct LinearGrads {
    pub input: Tensor,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

fn check(op: &'static str, input: &Tensor, weight: &Tensor) -> Result<()> {
    input.expect_dtype(op, DType::F32)?;
    weight.expect_dtype(op, DType::F32)?;
    let fits = input.rank() == 2 && weight.rank() == 2 && input.shape[1] == weight.shape[1];
    if !fits {
        return Err(TensorError::ShapeMismatch {
            op,
            lhs: input.shape.clone(),
            rhs: weight.shape.clone(),
            why: "input must be [batch, in] and weight [out, in]",
        });
    }
    Ok(())
}

impl Tensor {
    /// x · Wᵀ + b for input `[batch, in]`, weight `[out, in]` (PyTorch's layout) and an
    /// optional bias `[out]`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let _op = profile::enter("linear");
        self.linear_then("linear", weight, bias, false)
    }

    /// max(x · Wᵀ + b, 0): a linear layer and the ReLU after it, one launch on the GPU.
    pub fn linear_relu(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let _op = profile::enter("linear_relu");
        self.linear_then("linear_relu", weight, bias, true)
    }

    fn linear_then(&self, op: &'static str, weight: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        check(op, self, weight)?;
        if let Some(b) = bias {
            b.expect_dtype(op, DType::F32)?;
            self.expect_same_device(op, b)?;
            if b.shape != [weight.shape[0]] {
                return Err(TensorError::ShapeMismatch {
                    op,
                    lhs: weight.shape.clone(),
                    rhs: b.shape.clone(),
                    why: "the bias needs one value per output",
                });
            }
        }
        let (shape, _) = self.matmul_shape(op, weight, false, true)?;
        let Device::Gpu(ctx) = &self.device() else {
            // The bias rows first, the product added onto them, then the ReLU in place: one
            // output buffer and one pass after the product.
            let mut out = match bias {
                Some(b) => b.cpu_values().repeat(shape.m),
                None => vec![0.0f32; shape.m * shape.n],
            };
            cpu_matmul_into(&mut out, self.cpu_values(), weight.cpu_values(), shape, bias.is_some());
            if relu {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            return Ok(Tensor::cpu_f32(out, vec![shape.m, shape.n]));
        };
        let epilogue = Epilogue { bias: bias.map(|b| (b.gpu_buffer(), BiasAxis::Column)), relu };
        let out = matmul_with(ctx, self.gpu_buffer(), weight.gpu_buffer(), shape, epilogue)?;
        Ok(Tensor::gpu(out, vec![self.shape[0], weight.shape[0]], DType::F32))
    }

    /// The gradients of `linear` from this output gradient `[batch, out]`.
    pub fn linear_backward(&self, input: &Tensor, weight: &Tensor, with_bias: bool) -> Result<LinearGrads> {
        let _op = profile::enter("linear_backward");
        let (weight_grad, bias) = self.linear_parameter_backward(input, weight, with_bias)?;
        Ok(LinearGrads { input: self.matmul(weight)?, weight: weight_grad, bias })
    }

    /// The weight and (when `with_bias`) bias gradients of `linear` alone: what a first
    /// layer needs, whose input (the data) wants no gradient. That skips a product as large
    /// as the weight gradient's.
    pub fn linear_parameter_backward(
        &self,
        input: &Tensor,
        weight: &Tensor,
        with_bias: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let _op = profile::enter("linear_parameter_backward");
        const OP: &str = "linear_backward";
        check(OP, input, weight)?;
        if self.shape != [input.shape[0], weight.shape[0]] {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: vec![input.shape[0], weight.shape[0]],
                why: "the gradient must be [batch, out]",
            });
        }
        let bias = if with_bias { Some(self.sum_per_channel()?) } else { None };
        Ok((self.matmul_t(input, true, false)?, bias))
    }
}
