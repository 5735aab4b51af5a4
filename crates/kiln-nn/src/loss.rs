use kiln_autograd::Var;
use kiln_tensor::{Reduction, Tensor};

use crate::Result;

/// `torch.nn.CrossEntropyLoss`: logits `[batch, classes]` against i32 class labels
/// `[batch]`, optional class weights, mean (PyTorch's weighted mean) or sum.
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyLoss {
    pub weight: Option<Tensor>,
    pub reduction: Reduction,
}

impl CrossEntropyLoss {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn weighted(weight: Tensor) -> Self {
        Self { weight: Some(weight), ..Self::default() }
    }

    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    pub fn forward(&self, logits: &Var, labels: &Tensor) -> Result<Var> {
        Ok(logits.cross_entropy(labels, self.weight.as_ref(), self.reduction)?)
    }
}
