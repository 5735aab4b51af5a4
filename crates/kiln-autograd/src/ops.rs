//! The differentiable ops: each runs the tensor op forward and records its backward pass,
//! written with the tensor ops' own backward functions.

use kiln_tensor::{BatchNormConfig, BatchNormSaved, Conv2d, Pool2d, Reduction, Tensor};

use crate::{Result, Var};

/// The inputs of an op with optional operands, in order, and whether each optional is there.
fn present<'a>(required: &[&'a Var], optional: &[Option<&'a Var>]) -> Vec<&'a Var> {
    required.iter().copied().chain(optional.iter().flatten().copied()).collect()
}

impl Var {
    /// Elementwise sum, broadcasting as NumPy.
    pub fn add(&self, other: &Var) -> Result<Var> {
        let value = self.value().add(&other.value())?;
        let (a, b) = (self.value().shape().to_vec(), other.value().shape().to_vec());
        Ok(Var::record(value, &[self, other], move |g| Ok(vec![Some(g.sum_to(&a)?), Some(g.sum_to(&b)?)])))
    }

    pub fn sub(&self, other: &Var) -> Result<Var> {
        let value = self.value().sub(&other.value())?;
        let (a, b) = (self.value().shape().to_vec(), other.value().shape().to_vec());
        Ok(Var::record(value, &[self, other], move |g| Ok(vec![Some(g.sum_to(&a)?), Some(g.neg()?.sum_to(&b)?)])))
    }

    /// Elementwise product, broadcasting as NumPy.
    pub fn mul(&self, other: &Var) -> Result<Var> {
        let value = self.value().mul(&other.value())?;
        let (a, b) = (self.value(), other.value());
        Ok(Var::record(value, &[self, other], move |g| {
            Ok(vec![Some(g.mul(&b)?.sum_to(a.shape())?), Some(g.mul(&a)?.sum_to(b.shape())?)])
        }))
    }

    pub fn add_scalar(&self, s: f32) -> Result<Var> {
        Ok(Var::record(self.value().add_scalar(s)?, &[self], |g| Ok(vec![Some(g.clone())])))
    }

    pub fn mul_scalar(&self, s: f32) -> Result<Var> {
        Ok(Var::record(self.value().mul_scalar(s)?, &[self], move |g| Ok(vec![Some(g.mul_scalar(s)?)])))
    }

    pub fn relu(&self) -> Result<Var> {
        let input = self.value();
        Ok(Var::record(self.value().relu()?, &[self], move |g| Ok(vec![Some(g.relu_backward(&input)?)])))
    }

    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let original = self.value().shape().to_vec();
        Ok(Var::record(self.value().reshape(shape)?, &[self], move |g| Ok(vec![Some(g.reshape(&original)?)])))
    }

    /// The axes from `start` on merged into one (no copy).
    pub fn flatten(&self, start: usize) -> Result<Var> {
        let original = self.value().shape().to_vec();
        Ok(Var::record(self.value().flatten(start)?, &[self], move |g| Ok(vec![Some(g.reshape(&original)?)])))
    }

    /// The sum of every element (rank 0).
    pub fn sum_all(&self) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        Ok(Var::record(self.value().sum_all()?, &[self], move |g| Ok(vec![Some(g.broadcast_to(&shape)?)])))
    }

    /// The mean of every element (rank 0).
    pub fn mean_all(&self) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        let n = self.value().len() as f32;
        Ok(Var::record(self.value().mean_all()?, &[self], move |g| {
            Ok(vec![Some(g.broadcast_to(&shape)?.div_scalar(n)?)])
        }))
    }

    /// The product of two matrices, `[M, K]` by `[K, N]`.
    pub fn matmul(&self, other: &Var) -> Result<Var> {
        if self.value().rank() != 2 || other.value().rank() != 2 {
            return Err(kiln_tensor::TensorError::InvalidArgument {
                op: "Var::matmul",
                why: format!(
                    "differentiates matrices only, got {:?} and {:?}",
                    self.value().shape(),
                    other.value().shape()
                ),
            }
            .into());
        }
        let value = self.value().matmul(&other.value())?;
        let (a, b) = (self.value(), other.value());
        Ok(Var::record(value, &[self, other], move |g| {
            Ok(vec![Some(g.matmul_t(&b, false, true)?), Some(a.matmul_t(g, true, false)?)])
        }))
    }

    /// x · Wᵀ + b for this input `[batch, in]`, `weight` `[out, in]` and `bias` `[out]`.
    pub fn linear(&self, weight: &Var, bias: Option<&Var>) -> Result<Var> {
        let (x, w) = (self.value(), weight.value());
        let value = x.linear(&w, bias.map(Var::value).as_ref())?;
        let has_bias = bias.is_some();
        Ok(Var::record(value, &present(&[self, weight], &[bias]), move |g| {
            let grads = g.linear_backward(&x, &w, has_bias)?;
            Ok([Some(grads.input), Some(grads.weight)].into_iter().chain(grads.bias.map(Some)).collect())
        }))
    }

    /// 2-D convolution of this `[N, C, H, W]` input with `weight` `[O, C, KH, KW]`.
    pub fn conv2d(&self, weight: &Var, bias: Option<&Var>, conv: &Conv2d) -> Result<Var> {
        let (x, w) = (self.value(), weight.value());
        let value = x.conv2d(&w, bias.map(Var::value).as_ref(), conv)?;
        let (conv, has_bias, input_needs_grad) = (*conv, bias.is_some(), self.requires_grad());
        Ok(Var::record(value, &present(&[self, weight], &[bias]), move |g| {
            // A first layer's input is the data: skip its gradient, a matmul and a col2im.
            let (input, weight, bias) = if input_needs_grad {
                let grads = g.conv2d_backward(&x, &w, &conv, has_bias)?;
                (Some(grads.input), grads.weight, grads.bias)
            } else {
                let (weight, bias) = g.conv2d_parameter_backward(&x, &w, &conv, has_bias)?;
                (None, weight, bias)
            };
            Ok([input, Some(weight)].into_iter().chain(bias.map(Some)).collect())
        }))
    }

    /// 2-D max pooling.
    pub fn max_pool2d(&self, pool: &Pool2d) -> Result<Var> {
        let (value, positions) = self.value().max_pool2d(pool)?;
        let (shape, pool) = (self.value().shape().to_vec(), *pool);
        Ok(Var::record(value, &[self], move |g| Ok(vec![Some(g.max_pool2d_backward(&positions, &shape, &pool)?)])))
    }

    /// Batch norm of `[N, C, H, W]`. In training it normalises with the batch's statistics
    /// and updates the running ones; in evaluation it uses the running ones.
    pub fn batch_norm2d(
        &self,
        weight: Option<&Var>,
        bias: Option<&Var>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
        training: bool,
    ) -> Result<Var> {
        let (x, w, b) = (self.value(), weight.map(Var::value), bias.map(Var::value));
        let (value, saved) = if training {
            x.batch_norm2d_train(w.as_ref(), b.as_ref(), running_mean, running_var, config)?
        } else {
            let value = x.batch_norm2d_eval(w.as_ref(), b.as_ref(), running_mean, running_var, config)?;
            (value, BatchNormSaved::from_running(running_mean, running_var, config)?)
        };
        let has_bias = bias.is_some();
        Ok(Var::record(value, &present(&[self], &[weight, bias]), move |g| {
            let grads = g.batch_norm2d_backward(&x, w.as_ref(), has_bias, &saved, training)?;
            Ok(std::iter::once(Some(grads.input)).chain(grads.weight.map(Some)).chain(grads.bias.map(Some)).collect())
        }))
    }

    /// Inverted dropout with probability `p` (the identity when not training). The mask is
    /// a function of `seed` alone, so the backward pass reapplies it to the gradient.
    pub fn dropout(&self, p: f32, seed: u64, training: bool) -> Result<Var> {
        let value = self.value().dropout(p, seed, training)?;
        Ok(Var::record(value, &[self], move |g| Ok(vec![Some(g.dropout(p, seed, training)?)])))
    }

    /// Cross-entropy of these logits `[rows, classes]` against i32 `labels` `[rows]`; the
    /// gradient comes from the same fused pass as the loss.
    pub fn cross_entropy(&self, labels: &Tensor, weight: Option<&Tensor>, reduction: Reduction) -> Result<Var> {
        if !self.requires_grad() || !crate::is_grad_enabled() {
            return Ok(Var::constant(self.value().cross_entropy(labels, weight, reduction)?));
        }
        let (loss, grad) = self.value().cross_entropy_with_grad(labels, weight, reduction)?;
        Ok(Var::record(loss, &[self], move |g| Ok(vec![Some(grad.mul(g)?)])))
    }
}
