//! The layers' ops: matrix products and linear layers, convolutions, pooling, batch norm,
//! dropout and cross-entropy.

use kiln_tensor::{BatchNormConfig, BatchNormGrads, BatchNormSaved, Conv2d, Pool2d, Reduction, Tensor};

use super::{present, through_relu};
use crate::{Result, Var};

impl Var {
    /// The matrix product over the last two axes, batched over the others as
    /// [`Tensor::matmul`]: `[.., M, K]` by `[.., K, N]`, equal leading axes, or one operand a
    /// plain matrix used for every batch entry.
    pub fn matmul(&self, other: &Var) -> Result<Var> {
        let value = self.value().matmul(&other.value())?;
        let (a, b) = (self.value(), other.value());
        Ok(Var::custom(value, &[self, other], move |g| {
            // A plain matrix used for every batch entry gets its gradients summed over them.
            let shared = |operand: &Tensor| operand.rank() == 2 && g.rank() > 2;
            let grad_a = if shared(&a) { g.matmul_t_sum(&b, false, true)? } else { g.matmul_t(&b, false, true)? };
            let grad_b = if shared(&b) { a.matmul_t_sum(g, true, false)? } else { a.matmul_t(g, true, false)? };
            Ok(vec![Some(grad_a), Some(grad_b)])
        }))
    }

    /// x · Wᵀ + b for this input `[batch, in]`, `weight` `[out, in]` and `bias` `[out]`.
    pub fn linear(&self, weight: &Var, bias: Option<&Var>) -> Result<Var> {
        self.linear_then(weight, bias, false)
    }

    /// max(x · Wᵀ + b, 0): a linear layer and the ReLU after it, fused forward and backward.
    pub fn linear_relu(&self, weight: &Var, bias: Option<&Var>) -> Result<Var> {
        self.linear_then(weight, bias, true)
    }

    fn linear_then(&self, weight: &Var, bias: Option<&Var>, relu: bool) -> Result<Var> {
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let value = if relu { x.linear_relu(&w, b.as_ref())? } else { x.linear(&w, b.as_ref())? };
        let (has_bias, input_needs_grad, weight_needs_grad) =
            (bias.is_some(), self.requires_grad(), weight.requires_grad());
        let output = relu.then(|| value.clone());
        Ok(Var::custom(value, &present(&[self, weight], &[bias]), move |g| {
            let (g, bias_grad) = through_relu(g, output.as_ref(), has_bias)?;
            let bias_wanted = has_bias && bias_grad.is_none();
            // A frozen weight (fine-tuning) skips the weight gradient's product.
            let (weight_grad, bias_sum) = match weight_needs_grad {
                true => {
                    let (weight_grad, bias_sum) = g.linear_parameter_backward(&x, &w, bias_wanted)?;
                    (Some(weight_grad), bias_sum)
                }
                false if bias_wanted => (None, Some(g.sum_per_channel()?)),
                false => (None, None),
            };
            // A first layer's input is the data: its gradient would be thrown away.
            let input_grad = if input_needs_grad { Some(g.matmul(&w)?) } else { None };
            let bias_grad = bias_grad.or(bias_sum);
            Ok([input_grad, weight_grad].into_iter().chain(has_bias.then_some(bias_grad)).collect())
        }))
    }

    /// 2-D convolution of this `[N, C, H, W]` input with `weight` `[O, C, KH, KW]`.
    pub fn conv2d(&self, weight: &Var, bias: Option<&Var>, conv: &Conv2d) -> Result<Var> {
        self.conv2d_then(weight, bias, conv, false)
    }

    /// max(conv2d(x), 0): a convolution and the ReLU after it, fused forward and backward.
    pub fn conv2d_relu(&self, weight: &Var, bias: Option<&Var>, conv: &Conv2d) -> Result<Var> {
        self.conv2d_then(weight, bias, conv, true)
    }

    fn conv2d_then(&self, weight: &Var, bias: Option<&Var>, conv: &Conv2d, relu: bool) -> Result<Var> {
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        // The GPU's column matrix of the input, kept for the weight gradient.
        let (value, columns) = x.conv2d_keeping_columns(&w, b.as_ref(), conv, relu)?;
        let (conv, has_bias, input_needs_grad) = (*conv, bias.is_some(), self.requires_grad());
        let output = relu.then(|| value.clone());
        Ok(Var::custom(value, &present(&[self, weight], &[bias]), move |g| {
            let (g, bias_grad) = through_relu(g, output.as_ref(), has_bias)?;
            let with_bias = has_bias && bias_grad.is_none();
            // A first layer's input is the data: its gradient (a matmul and a col2im) is skipped.
            let (input, weight, bias) =
                g.conv2d_backward_reusing(&x, &w, &conv, with_bias, columns.as_ref(), input_needs_grad)?;
            Ok([input, Some(weight)].into_iter().chain(bias_grad.or(bias).map(Some)).collect())
        }))
    }

    /// max_pool2d(max(conv2d(x), 0)): a convolution, the ReLU after it and a max pooling
    /// as one op forward and backward ([`Tensor::conv2d_relu_max_pool2d`]).
    pub fn conv2d_relu_max_pool2d(
        &self,
        weight: &Var,
        bias: Option<&Var>,
        conv: &Conv2d,
        pool: &Pool2d,
    ) -> Result<Var> {
        let (x, w) = (self.value(), weight.value());
        let saved = x.conv2d_relu_max_pool2d(&w, bias.map(Var::value).as_ref(), conv, pool)?;
        let (conv, pool, has_bias, input_needs_grad) = (*conv, *pool, bias.is_some(), self.requires_grad());
        Ok(Var::custom(saved.output().clone(), &present(&[self, weight], &[bias]), move |g| {
            let (input, weight, bias) =
                g.conv2d_relu_max_pool2d_backward(&saved, &x, &w, &conv, &pool, has_bias, input_needs_grad)?;
            Ok([input, Some(weight)].into_iter().chain(bias.map(Some)).collect())
        }))
    }

    /// 2-D max pooling.
    pub fn max_pool2d(&self, pool: &Pool2d) -> Result<Var> {
        let (value, positions) = self.value().max_pool2d(pool)?;
        let (shape, pool) = (self.value().shape().to_vec(), *pool);
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.max_pool2d_backward(&positions, &shape, &pool)?)])))
    }

    /// 2-D average pooling, the padding counted in each divisor (PyTorch's default).
    pub fn avg_pool2d(&self, pool: &Pool2d) -> Result<Var> {
        let (shape, pool) = (self.value().shape().to_vec(), *pool);
        Ok(Var::custom(self.value().avg_pool2d(&pool)?, &[self], move |g| {
            Ok(vec![Some(g.avg_pool2d_backward(&shape, &pool)?)])
        }))
    }

    /// Adaptive average pooling into `output` ([height, width]) windows.
    pub fn adaptive_avg_pool2d(&self, output: [usize; 2]) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        Ok(Var::custom(self.value().adaptive_avg_pool2d(output)?, &[self], move |g| {
            Ok(vec![Some(g.adaptive_avg_pool2d_backward(&shape)?)])
        }))
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
        // Evaluation's statistics for the backward are derived only if a backward is recorded.
        let (value, batch_stats) = if training {
            let (value, saved) = x.batch_norm2d_train(w.as_ref(), b.as_ref(), running_mean, running_var, config)?;
            (value, Some(saved))
        } else {
            (x.batch_norm2d_eval(w.as_ref(), b.as_ref(), running_mean, running_var, config)?, None)
        };
        let (has_bias, config) = (bias.is_some(), *config);
        let output = config.relu.then(|| value.clone());
        let running = (!training).then(|| (running_mean.clone(), running_var.clone()));
        Ok(Var::custom(value, &present(&[self], &[weight, bias]), move |g| {
            let saved = match &batch_stats {
                Some(saved) => saved.clone(),
                None => {
                    let (mean, var) = running.as_ref().expect("kept in evaluation");
                    let mut saved = BatchNormSaved::from_running(mean, var, &config)?;
                    saved.relu_output = output.clone();
                    saved
                }
            };
            let grads = g.batch_norm2d_backward(&x, w.as_ref(), has_bias, &saved, training)?;
            Ok(batch_norm_inputs_grads(grads))
        }))
    }

    /// max_pool2d(max(batch_norm2d(x), 0)) in training mode: a batch norm, the ReLU after it
    /// and a max pooling as one op forward and backward
    /// ([`Tensor::batch_norm2d_relu_max_pool2d`]; `config.relu` is implied).
    pub fn batch_norm2d_relu_max_pool2d(
        &self,
        weight: Option<&Var>,
        bias: Option<&Var>,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        config: &BatchNormConfig,
        pool: &Pool2d,
    ) -> Result<Var> {
        let (x, w, b) = (self.value(), weight.map(Var::value), bias.map(Var::value));
        let saved = x.batch_norm2d_relu_max_pool2d(w.as_ref(), b.as_ref(), running_mean, running_var, config, pool)?;
        let (has_bias, pool) = (bias.is_some(), *pool);
        Ok(Var::custom(saved.output().clone(), &present(&[self], &[weight, bias]), move |g| {
            let grads = g.batch_norm2d_relu_max_pool2d_backward(&saved, &x, w.as_ref(), has_bias, &pool)?;
            Ok(batch_norm_inputs_grads(grads))
        }))
    }

    /// Inverted dropout with probability `p` (the identity when not training). The mask is
    /// a function of `seed` alone, so the backward pass reapplies it to the gradient.
    pub fn dropout(&self, p: f32, seed: u64, training: bool) -> Result<Var> {
        let value = self.value().dropout(p, seed, training)?;
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.dropout(p, seed, training)?)])))
    }

    /// Cross-entropy of these logits `[rows, classes]` against i32 `labels` `[rows]`; the
    /// gradient comes from the same fused pass as the loss.
    pub fn cross_entropy(&self, labels: &Tensor, weight: Option<&Tensor>, reduction: Reduction) -> Result<Var> {
        if !self.requires_grad() || !crate::is_grad_enabled() {
            return Ok(Var::constant(self.value().cross_entropy(labels, weight, reduction)?));
        }
        let (loss, grad) = self.value().cross_entropy_with_grad(labels, weight, reduction)?;
        Ok(Var::scaled(loss, &[self], vec![Some(grad)]))
    }
}

/// A batch norm's gradients in the order of its `Var::custom` inputs: the input, then the
/// scale and the shift where they were given.
fn batch_norm_inputs_grads(grads: BatchNormGrads) -> Vec<Option<Tensor>> {
    std::iter::once(Some(grads.input)).chain(grads.weight.map(Some)).chain(grads.bias.map(Some)).collect()
}
