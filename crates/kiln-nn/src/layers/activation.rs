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

/// x where positive, else `negative_slope`·x, as `torch.nn.LeakyReLU` (slope 0.01 by default).
pub struct LeakyReLU {
    pub negative_slope: f32,
}

impl Default for LeakyReLU {
    fn default() -> Self {
        Self { negative_slope: 0.01 }
    }
}

impl LeakyReLU {
    pub fn new(negative_slope: f32) -> Self {
        Self { negative_slope }
    }
}

impl Module for LeakyReLU {
    fn extra_repr(&self) -> String {
        format!("negative_slope={}", crate::python_float(self.negative_slope))
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.leaky_relu(self.negative_slope)?)
    }
}

/// 1 / (1 + e⁻ˣ), as `torch.nn.Sigmoid`.
pub struct Sigmoid;

impl Module for Sigmoid {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.sigmoid()?)
    }
}

/// The hyperbolic tangent, as `torch.nn.Tanh`.
pub struct Tanh;

impl Module for Tanh {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.tanh()?)
    }
}

/// x·Φ(x), as `torch.nn.GELU`: exact by default, or its tanh approximation.
#[derive(Default)]
pub struct GELU {
    pub tanh_approximation: bool,
}

impl GELU {
    /// The exact GELU (`approximate='none'`).
    pub fn new() -> Self {
        Self::default()
    }

    /// The tanh approximation (`approximate='tanh'`).
    pub fn tanh() -> Self {
        Self { tanh_approximation: true }
    }
}

impl Module for GELU {
    fn extra_repr(&self) -> String {
        format!("approximate='{}'", if self.tanh_approximation { "tanh" } else { "none" })
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.gelu(self.tanh_approximation)?)
    }
}

/// Its input, as `torch.nn.Identity`: a placeholder where a layer is taken out (a head
/// removed for fine-tuning).
pub struct Identity;

impl Module for Identity {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.clone())
    }
}
