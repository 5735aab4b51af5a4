//! The differentiable ops, one family per file: each runs the tensor op forward and records
//! its backward pass with [`Var::custom`], written with the tensor ops' own backward
//! functions.

use kiln_tensor::Tensor;

use crate::Var;

mod elementwise;
mod indexing;
mod layers;
mod layout;
mod reduce;

/// The gradient `g` of a fused layer-then-ReLU output through the ReLU (when `relu_output`
/// is there), and — when the layer has a bias — the bias gradient, from the same launch.
pub(crate) fn through_relu(
    g: &Tensor,
    relu_output: Option<&Tensor>,
    has_bias: bool,
) -> kiln_tensor::Result<(Tensor, Option<Tensor>)> {
    Ok(match relu_output {
        Some(output) if has_bias => {
            let (masked, bias) = g.relu_backward_sum_per_channel(output)?;
            (masked, Some(bias))
        }
        Some(output) => (g.relu_backward(output)?, None),
        None => (g.clone(), None),
    })
}

/// The inputs of an op with optional operands, in order, and whether each optional is there.
pub(crate) fn present<'a>(required: &[&'a Var], optional: &[Option<&'a Var>]) -> Vec<&'a Var> {
    required.iter().copied().chain(optional.iter().flatten().copied()).collect()
}
