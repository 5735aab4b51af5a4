//! The fully connected layer's forward and backward passes, from matmul and sums.

use crate::{DType, Result, Tensor, TensorError};

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
        check("linear", self, weight)?;
        let out = self.matmul_t(weight, false, true)?;
        match bias {
            Some(b) if b.shape == [weight.shape[0]] => out.add(b),
            Some(b) => Err(TensorError::ShapeMismatch {
                op: "linear",
                lhs: weight.shape.clone(),
                rhs: b.shape.clone(),
                why: "the bias needs one value per output",
            }),
            None => Ok(out),
        }
    }

    /// The gradients of `linear` from this output gradient `[batch, out]`.
    pub fn linear_backward(&self, input: &Tensor, weight: &Tensor, with_bias: bool) -> Result<LinearGrads> {
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
        Ok(LinearGrads {
            input: self.matmul(weight)?,
            weight: self.matmul_t(input, true, false)?,
            bias: if with_bias { Some(self.sum(0, false)?) } else { None },
        })
    }
}
