use kiln_autograd::Var;
use kiln_tensor::{Device, Tensor};

use crate::export::{Attribute, GraphBuilder};
use crate::{Module, Result, Seeds, init};

/// y = x·Wᵀ + b, as `torch.nn.Linear`: weight `[out, in]`, bias `[out]`, both initialised
/// uniformly in ±1/√in.
pub struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
}

impl Linear {
    /// A layer with a bias, on the CPU (move it with `to_device`).
    pub fn new(inputs: usize, outputs: usize, seeds: &mut Seeds) -> Result<Self> {
        let weight = init::kaiming_uniform(&[outputs, inputs], inputs, seeds.next_seed(), &Device::Cpu)?;
        let bias = init::kaiming_uniform(&[outputs], inputs, seeds.next_seed(), &Device::Cpu)?;
        Ok(Self { weight: Var::parameter(weight), bias: Some(Var::parameter(bias)) })
    }

    /// As Keras initialises `Dense`: Glorot-uniform weights, zero bias.
    pub fn keras(inputs: usize, outputs: usize, seeds: &mut Seeds) -> Result<Self> {
        let weight = init::glorot_uniform(&[outputs, inputs], inputs, outputs, seeds.next_seed(), &Device::Cpu)?;
        let bias = Tensor::zeros(&[outputs], &Device::Cpu)?;
        Ok(Self { weight: Var::parameter(weight), bias: Some(Var::parameter(bias)) })
    }

    /// The same layer without a bias.
    pub fn without_bias(mut self) -> Self {
        self.bias = None;
        self
    }
}

impl Module for Linear {
    fn extra_repr(&self) -> String {
        let shape = self.weight.value().shape().to_vec();
        let bias = if self.bias.is_some() { "True" } else { "False" };
        format!("in_features={}, out_features={}, bias={bias}", shape[1], shape[0])
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.linear(&self.weight, self.bias.as_ref())?)
    }

    fn forward_relu(&mut self, input: &Var) -> Option<Result<Var>> {
        Some(input.linear_relu(&self.weight, self.bias.as_ref()).map_err(Into::into))
    }

    /// Gemm: x · Wᵀ + b.
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let mut inputs = vec![x.to_string(), graph.constant("weight", &self.weight.value())?];
        if let Some(b) = &self.bias {
            inputs.push(graph.constant("bias", &b.value())?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(graph.node("Gemm", &inputs, &[("transB", Attribute::Int(1))]))
    }

    fn local_parameters(&self) -> Vec<(String, Var)> {
        std::iter::once(("weight".to_string(), self.weight.clone()))
            .chain(self.bias.iter().map(|b| ("bias".to_string(), b.clone())))
            .collect()
    }
}
