//! Batch normalisation over the channels of NCHW tensors, as PyTorch's BatchNorm2d.
//!
//! Built from the tensor ops, so it runs on every device, and its statistics come from the
//! deterministic axis reductions: the same input gives the same bits on every run.

use crate::{DType, Result, Tensor, TensorError};

/// Batch statistics a training-mode forward pass saves for its backward pass.
#[derive(Clone, Debug)]
pub struct BatchNormSaved {
    /// Per-channel batch mean, `[C]`.
    pub mean: Tensor,
    /// Per-channel 1/√(biased variance + eps), `[C]`.
    pub invstd: Tensor,
}

impl BatchNormSaved {
    /// What evaluation mode normalises with: the running mean and 1/√(running var + eps).
    pub fn from_running(running_mean: &Tensor, running_var: &Tensor, config: &BatchNormConfig) -> Result<Self> {
        Ok(Self { mean: running_mean.clone(), invstd: running_var.add_scalar(config.eps)?.sqrt()?.recip()? })
    }
}

/// The gradients of batch normalisation.
#[derive(Clone, Debug)]
pub struct BatchNormGrads {
    pub input: Tensor,
    /// Present when the forward pass had a scale (gamma).
    pub weight: Option<Tensor>,
    /// Present when the forward pass had a shift (beta).
    pub bias: Option<Tensor>,
}

/// Batch norm's momentum (for the running statistics) and eps, PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub momentum: f32,
    pub eps: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self { momentum: 0.1, eps: 1e-5 }
    }
}

impl Tensor {
    /// A `[C]` tensor as `[1, C, 1, 1]`, to broadcast over NCHW.
    fn per_channel(&self) -> Result<Tensor> {
        self.reshape(&[1, self.len(), 1, 1])
    }

    /// Σ over N, H and W of an NCHW tensor: `[C]`.
    fn sum_per_channel(&self) -> Result<Tensor> {
        let [n, c, h, w] = self.shape[..] else { unreachable!("checked to be NCHW") };
        self.reshape(&[n, c, h * w])?.sum(2, false)?.sum(0, false)
    }

    fn check_batch_norm(&self, op: &'static str, per_channel: &[Option<&Tensor>]) -> Result<usize> {
        self.expect_dtype(op, DType::F32)?;
        let &[_, channels, _, _] = &self.shape[..] else {
            return Err(TensorError::InvalidArgument {
                op,
                why: format!("needs an [N, C, H, W] input, got {:?}", self.shape),
            });
        };
        for t in per_channel.iter().flatten() {
            t.expect_dtype(op, DType::F32)?;
            self.expect_same_device(op, t)?;
            if t.shape != [channels] {
                return Err(TensorError::ShapeMismatch {
                    op,
                    lhs: self.shape.clone(),
                    rhs: t.shape.clone(),
                    why: "per-channel tensors must be [C]",
                });
            }
        }
        Ok(channels)
    }

    /// Training-mode batch norm of `[N, C, H, W]`: normalises with the batch's per-channel
    /// mean and biased variance, applies the optional scale `weight` and shift `bias`, and
    /// moves the running statistics toward the batch's (the variance unbiased), as PyTorch.
    pub fn batch_norm2d_train(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
    ) -> Result<(Tensor, BatchNormSaved)> {
        const OP: &str = "batch_norm2d_train";
        self.check_batch_norm(OP, &[weight, bias, Some(running_mean), Some(running_var)])?;
        let count = (self.len() / self.shape[1]) as f32;
        if count < 2.0 {
            return Err(TensorError::InvalidArgument {
                op: OP,
                why: format!("training needs more than one value per channel, got shape {:?}", self.shape),
            });
        }
        let mean = self.sum_per_channel()?.div_scalar(count)?;
        let centered = self.sub(&mean.per_channel()?)?;
        let var = centered.square()?.sum_per_channel()?.div_scalar(count)?;
        let invstd = var.add_scalar(config.eps)?.sqrt()?.recip()?;
        let output = affine(centered.mul(&invstd.per_channel()?)?, weight, bias)?;
        let m = config.momentum;
        *running_mean = running_mean.mul_scalar(1.0 - m)?.add(&mean.mul_scalar(m)?)?;
        let unbiased = var.mul_scalar(count / (count - 1.0))?;
        *running_var = running_var.mul_scalar(1.0 - m)?.add(&unbiased.mul_scalar(m)?)?;
        Ok((output, BatchNormSaved { mean, invstd }))
    }

    /// Evaluation-mode batch norm: normalises with the running statistics.
    pub fn batch_norm2d_eval(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        config: &BatchNormConfig,
    ) -> Result<Tensor> {
        self.check_batch_norm("batch_norm2d_eval", &[weight, bias, Some(running_mean), Some(running_var)])?;
        let saved = BatchNormSaved::from_running(running_mean, running_var, config)?;
        affine(self.sub(&saved.mean.per_channel()?)?.mul(&saved.invstd.per_channel()?)?, weight, bias)
    }

    /// The gradients of a batch norm from this output gradient: `input` is the forward
    /// input, `saved` the statistics it was normalised with — the batch's in training mode,
    /// [`BatchNormSaved::from_running`] in evaluation mode (`training` false).
    pub fn batch_norm2d_backward(
        &self,
        input: &Tensor,
        weight: Option<&Tensor>,
        has_bias: bool,
        saved: &BatchNormSaved,
        training: bool,
    ) -> Result<BatchNormGrads> {
        const OP: &str = "batch_norm2d_backward";
        input.check_batch_norm(OP, &[weight, Some(&saved.mean), Some(&saved.invstd)])?;
        self.expect_dtype(OP, DType::F32)?;
        if self.shape != input.shape {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: input.shape.clone(),
                why: "the gradient must have the input's shape",
            });
        }
        let count = (input.len() / input.shape[1]) as f32;
        let invstd = saved.invstd.per_channel()?;
        let normalized = input.sub(&saved.mean.per_channel()?)?.mul(&invstd)?;
        let bias_grad = self.sum_per_channel()?;
        let weight_grad = self.mul(&normalized)?.sum_per_channel()?;
        let scale = match weight {
            Some(w) => invstd.mul(&w.per_channel()?)?,
            None => invstd,
        };
        let input_grad = if training {
            // (γ·invstd / m) · (m·dy − Σdy − x̂·Σ(dy·x̂))
            let correction = normalized.mul(&weight_grad.per_channel()?)?.add(&bias_grad.per_channel()?)?;
            self.mul_scalar(count)?.sub(&correction)?.mul(&scale)?.div_scalar(count)?
        } else {
            self.mul(&scale)?
        };
        Ok(BatchNormGrads {
            input: input_grad,
            weight: weight.map(|_| weight_grad),
            bias: has_bias.then_some(bias_grad),
        })
    }
}

fn affine(normalized: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let scaled = match weight {
        Some(w) => normalized.mul(&w.per_channel()?)?,
        None => normalized,
    };
    match bias {
        Some(b) => scaled.add(&b.per_channel()?),
        None => Ok(scaled),
    }
}
