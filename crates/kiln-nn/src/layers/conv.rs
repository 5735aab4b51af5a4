use kiln_autograd::Var;
use kiln_tensor::{Conv2d as Geometry, Device, Pool2d, Tensor};

use crate::export::{GraphBuilder, pads, pair};
use crate::{Module, Result, Seeds, init};

/// 2-D convolution, as `torch.nn.Conv2d` (groups = 1): weight `[out, in, k, k]` and bias
/// `[out]`, initialised uniformly in ±1/√(in·k·k).
pub struct Conv2d {
    pub weight: Var,
    pub bias: Option<Var>,
    pub geometry: Geometry,
}

impl Conv2d {
    /// A square `kernel`, stride 1, no padding, with a bias, on the CPU.
    pub fn new(inputs: usize, outputs: usize, kernel: usize, seeds: &mut Seeds) -> Result<Self> {
        let fan_in = inputs * kernel * kernel;
        let weight =
            init::kaiming_uniform(&[outputs, inputs, kernel, kernel], fan_in, seeds.next_seed(), &Device::Cpu)?;
        let bias = init::kaiming_uniform(&[outputs], fan_in, seeds.next_seed(), &Device::Cpu)?;
        Ok(Self { weight: Var::parameter(weight), bias: Some(Var::parameter(bias)), geometry: Geometry::default() })
    }

    /// As Keras initialises `Conv2D`: Glorot-uniform weights (fan-out O·k·k), zero bias.
    pub fn keras(inputs: usize, outputs: usize, kernel: usize, seeds: &mut Seeds) -> Result<Self> {
        let shape = [outputs, inputs, kernel, kernel];
        let (fan_in, fan_out) = init::fans(&shape);
        let weight = init::glorot_uniform(&shape, fan_in, fan_out, seeds.next_seed(), &Device::Cpu)?;
        let bias = Tensor::zeros(&[outputs], &Device::Cpu)?;
        Ok(Self { weight: Var::parameter(weight), bias: Some(Var::parameter(bias)), geometry: Geometry::default() })
    }

    pub fn stride(mut self, stride: usize) -> Self {
        self.geometry = self.geometry.stride(stride);
        self
    }

    pub fn padding(mut self, padding: usize) -> Self {
        self.geometry = self.geometry.padding(padding);
        self
    }

    pub fn without_bias(mut self) -> Self {
        self.bias = None;
        self
    }
}

impl Module for Conv2d {
    fn extra_repr(&self) -> String {
        let shape = self.weight.value().shape().to_vec();
        let pair = |[a, b]: [usize; 2]| format!("({a}, {b})");
        let g = &self.geometry;
        let mut text = format!(
            "{}, {}, kernel_size={}, stride={}",
            shape[1],
            shape[0],
            pair([shape[2], shape[3]]),
            pair(g.stride)
        );
        if g.padding != [0, 0] {
            text += &format!(", padding={}", pair(g.padding));
        }
        if g.dilation != [1, 1] {
            text += &format!(", dilation={}", pair(g.dilation));
        }
        if self.bias.is_none() {
            text += ", bias=False";
        }
        text
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.conv2d(&self.weight, self.bias.as_ref(), &self.geometry)?)
    }

    fn forward_relu(&mut self, input: &Var) -> Option<Result<Var>> {
        Some(input.conv2d_relu(&self.weight, self.bias.as_ref(), &self.geometry).map_err(Into::into))
    }

    fn forward_relu_max_pool(&mut self, input: &Var, pool: &Pool2d) -> Option<Result<Var>> {
        let (bias, geometry) = (self.bias.as_ref(), &self.geometry);
        Some(input.conv2d_relu_max_pool2d(&self.weight, bias, geometry, pool).map_err(Into::into))
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let weight = self.weight.value();
        let mut inputs = vec![x.to_string(), graph.constant("weight", &weight)?];
        if let Some(b) = &self.bias {
            inputs.push(graph.constant("bias", &b.value())?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let g = &self.geometry;
        let kernel = [weight.shape()[2], weight.shape()[3]];
        let attributes = [
            ("kernel_shape", pair(kernel)),
            ("strides", pair(g.stride)),
            ("pads", pads(g.padding)),
            ("dilations", pair(g.dilation)),
        ];
        Ok(graph.node("Conv", &inputs, &attributes))
    }

    fn local_parameters(&self) -> Vec<(String, Var)> {
        std::iter::once(("weight".to_string(), self.weight.clone()))
            .chain(self.bias.iter().map(|b| ("bias".to_string(), b.clone())))
            .collect()
    }
}
