//! Stateless layers: activations and reshaping.

use kiln_autograd::Var;

use kiln_tensor::{Device, Tensor};

use crate::export::{Attribute, GraphBuilder};
use crate::{Module, NnError, Result};

/// A layer that is one ONNX operator of its input, without attributes.
fn single(graph: &mut dyn GraphBuilder, op: &str, x: &str) -> Result<String> {
    Ok(graph.node(op, &[x], &[]))
}

/// max(x, 0), as `torch.nn.ReLU`.
pub struct ReLU;

impl Module for ReLU {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.relu()?)
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        single(graph, "Relu", x)
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

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        Ok(graph.node("Flatten", &[x], &[("axis", Attribute::Int(1))]))
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

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        Ok(graph.node("Softmax", &[x], &[("axis", Attribute::Int(-1))]))
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

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        Ok(graph.node("LeakyRelu", &[x], &[("alpha", Attribute::Float(self.negative_slope))]))
    }
}

/// 1 / (1 + e⁻ˣ), as `torch.nn.Sigmoid`.
pub struct Sigmoid;

impl Module for Sigmoid {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.sigmoid()?)
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        single(graph, "Sigmoid", x)
    }
}

/// The hyperbolic tangent, as `torch.nn.Tanh`.
pub struct Tanh;

impl Module for Tanh {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.tanh()?)
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        single(graph, "Tanh", x)
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

    /// Opset 17 has no Gelu: ½x(1 + erf(x/√2)), or ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let mut scalar = |name: &str, value: f32| graph.constant(name, &Tensor::scalar(value, &Device::Cpu)?);
        let (half, one) = (scalar("half", 0.5)?, scalar("one", 1.0)?);
        let inner = if self.tanh_approximation {
            let (cubic, scale) = (scalar("cubic", 0.044715)?, scalar("scale", (2.0 / std::f32::consts::PI).sqrt())?);
            let square = graph.node("Mul", &[x, x], &[]);
            let cube = graph.node("Mul", &[&square, x], &[]);
            let term = graph.node("Mul", &[&cube, &cubic], &[]);
            let sum = graph.node("Add", &[x, &term], &[]);
            let scaled = graph.node("Mul", &[&sum, &scale], &[]);
            graph.node("Tanh", &[&scaled], &[])
        } else {
            let inv_sqrt2 = scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2)?;
            let scaled = graph.node("Mul", &[x, &inv_sqrt2], &[]);
            graph.node("Erf", &[&scaled], &[])
        };
        let plus_one = graph.node("Add", &[&inner, &one], &[]);
        let times_x = graph.node("Mul", &[x, &plus_one], &[]);
        Ok(graph.node("Mul", &[&times_x, &half], &[]))
    }
}

/// Its input, as `torch.nn.Identity`: a placeholder where a layer is taken out (a head
/// removed for fine-tuning).
pub struct Identity;

impl Module for Identity {
    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.clone())
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        single(graph, "Identity", x)
    }
}
