//! Stateless layers: activations and reshaping.

use kiln_autograd::Var;

use crate::{Module, NnError, Result};

/// max(x, 0), as `torch.nn.ReLU`.
pub struct ReLU;

impl Module for ReLU {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.relu()?)
    }

    fn is_relu(&self) -> bool {
        true
    }
}

/// Merges every axis after the batch axis, as `torch.nn.Flatten()`.
#[derive(Default)]
pub struct Flatten;

impl Flatten {
    pub fn new() -> Self {
        Self
    }
}

impl Module for Flatten {
    fn extra_repr(&self) -> String {
        "start_dim=1, end_dim=-1".into()
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.flatten(1)?)
    }
}

/// softmax over the last axis, as `torch.nn.Softmax(dim=-1)`, for turning logits into
/// probabilities at inference. It is not differentiable here: train on logits with
/// `CrossEntropyLoss`, which includes the softmax.
pub struct Softmax;

impl Module for Softmax {
    /// Over the last axis, which is PyTorch's `dim=1` for a batch of logits.
    fn extra_repr(&self) -> String {
        "dim=-1".into()
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        if input.requires_grad() && kiln_autograd::is_grad_enabled() {
            return Err(NnError::Invalid(
                "Softmax is for inference: wrap it in no_grad, or train on logits with CrossEntropyLoss".into(),
            ));
        }
        Ok(Var::constant(input.value().softmax(-1)?))
    }
}
