//! PyTorch's default initialisation, and Keras's for the Keras tutorials, from Kiln's seeded
//! random values.

use kiln_tensor::{Device, Tensor};

use crate::Result;

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
