//! PyTorch's default initialisation, and Keras's for the Keras tutorials, from Kiln's seeded
//! random values.

use kiln_tensor::{Device, Tensor};

use crate::{Module, Result, Seeds};

/// Values drawn uniformly from [−bound, bound).
pub fn uniform(shape: &[usize], bound: f32, seed: u64, device: &Device) -> Result<Tensor> {
    Ok(Tensor::rand(shape, seed, device)?.mul_scalar(2.0 * bound)?.sub_scalar(bound)?)
}

/// `torch.nn.init.kaiming_uniform_(w, a=√5)`, the default for Linear and Conv2d weights:
/// the bound is gain·√(3/fan_in) with gain √(2/(1+a²)) = √(1/3), that is 1/√fan_in — the
/// same bound PyTorch then uses for their biases.
pub fn kaiming_uniform(shape: &[usize], fan_in: usize, seed: u64, device: &Device) -> Result<Tensor> {
    uniform(shape, 1.0 / (fan_in as f32).sqrt(), seed, device)
}

/// Keras's default for Dense and Conv2D kernels (`glorot_uniform`): uniform on
/// ±√(6 / (fan_in + fan_out)); Keras starts biases at zero.
pub fn glorot_uniform(shape: &[usize], fan_in: usize, fan_out: usize, seed: u64, device: &Device) -> Result<Tensor> {
    uniform(shape, (6.0 / (fan_in + fan_out) as f32).sqrt(), seed, device)
}

/// (fan_in, fan_out) of a weight [outputs, inputs, kernel…], as both frameworks count them:
/// the inputs and the outputs, each times the kernel's size.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    let receptive: usize = shape.iter().skip(2).product();
    (shape.get(1).copied().unwrap_or(1) * receptive, shape.first().copied().unwrap_or(1) * receptive)
}

/// How a model's layers start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// PyTorch's defaults, which Kiln's layers are built with.
    #[default]
    PyTorch,
    /// Keras's: Glorot-uniform weights and zero biases for `Dense` and `Conv2D`.
    Keras,
}

impl Init {
    /// Starts `model`'s parameters this way, drawing from `seeds`: for Keras, every weight of
    /// rank 2 or more (linear and convolution layers) Glorot-uniform and every bias zero;
    /// rank-1 weights (batch norm's γ, 1 in both frameworks) are left as they are. PyTorch's
    /// is how the layers were built, so it changes nothing.
    pub fn apply(self, model: &dyn Module, seeds: &mut Seeds) -> Result<()> {
        if self == Init::PyTorch {
            return Ok(());
        }
        for (name, parameter) in model.parameters() {
            let value = parameter.value();
            let (shape, device) = (value.shape().to_vec(), value.device());
            let start = if shape.len() >= 2 {
                let (fan_in, fan_out) = fans(&shape);
                glorot_uniform(&shape, fan_in, fan_out, seeds.next_seed(), &device)?
            } else if name.ends_with("bias") {
                Tensor::zeros(&shape, &device)?
            } else {
                continue;
            };
            parameter.update(|t| {
                *t = start;
                Ok(())
            })?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Init {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pytorch" => Ok(Init::PyTorch),
            "keras" => Ok(Init::Keras),
            other => Err(format!("{other:?} is not an initialisation: pytorch or keras")),
        }
    }
}
