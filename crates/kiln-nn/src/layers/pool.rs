use kiln_autograd::Var;
use kiln_tensor::Pool2d;

use crate::export::{Attribute, GraphBuilder, cannot_export, pads, pair};
use crate::{Module, Result};

/// 2-D max pooling, as `torch.nn.MaxPool2d` (stride defaults to the kernel size).
pub struct MaxPool2d {
    pub pool: Pool2d,
}

impl MaxPool2d {
    pub fn new(kernel: usize) -> Self {
        Self { pool: Pool2d::new(kernel) }
    }

    pub fn stride(mut self, stride: usize) -> Self {
        self.pool = self.pool.stride(stride);
        self
    }

    pub fn padding(mut self, padding: usize) -> Self {
        self.pool = self.pool.padding(padding);
        self
    }
}

impl Module for MaxPool2d {
    fn extra_repr(&self) -> String {
        let p = &self.pool;
        format!(
            "kernel_size={}, stride={}, padding={}, dilation=1, ceil_mode=False",
            one_or_pair(p.kernel),
            one_or_pair(p.stride),
            one_or_pair(p.padding)
        )
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.max_pool2d(&self.pool)?)
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let p = &self.pool;
        Ok(graph.node(
            "MaxPool",
            &[x],
            &[("kernel_shape", pair(p.kernel)), ("strides", pair(p.stride)), ("pads", pads(p.padding))],
        ))
    }

    fn max_pool(&self) -> Option<Pool2d> {
        Some(self.pool)
    }
}

/// 2-D average pooling, as `torch.nn.AvgPool2d` (zero-padding counted in each divisor, its
/// `count_include_pad` default): a square window whose stride is its size unless set.
pub struct AvgPool2d {
    pub pool: Pool2d,
}

impl AvgPool2d {
    pub fn new(kernel: usize) -> Self {
        Self { pool: Pool2d::new(kernel) }
    }

    pub fn stride(mut self, stride: usize) -> Self {
        self.pool = self.pool.stride(stride);
        self
    }

    pub fn padding(mut self, padding: usize) -> Self {
        self.pool = self.pool.padding(padding);
        self
    }
}

/// One number where both sides agree, else the pair, as PyTorch prints pooling settings.
fn one_or_pair([a, b]: [usize; 2]) -> String {
    if a == b { a.to_string() } else { format!("({a}, {b})") }
}

impl Module for AvgPool2d {
    fn extra_repr(&self) -> String {
        let p = &self.pool;
        format!(
            "kernel_size={}, stride={}, padding={}",
            one_or_pair(p.kernel),
            one_or_pair(p.stride),
            one_or_pair(p.padding)
        )
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.avg_pool2d(&self.pool)?)
    }

    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let p = &self.pool;
        let attributes = [
            ("kernel_shape", pair(p.kernel)),
            ("strides", pair(p.stride)),
            ("pads", pads(p.padding)),
            ("count_include_pad", Attribute::Int(1)),
        ];
        Ok(graph.node("AveragePool", &[x], &attributes))
    }
}

/// Average pooling into a fixed output size whatever the input's, as
/// `torch.nn.AdaptiveAvgPool2d`: `AdaptiveAvgPool2d::new(1)` is global average pooling.
pub struct AdaptiveAvgPool2d {
    pub output: [usize; 2],
}

impl AdaptiveAvgPool2d {
    /// A square `size`×`size` output.
    pub fn new(size: usize) -> Self {
        Self { output: [size; 2] }
    }

    /// An output of `[height, width]`.
    pub fn sized(output: [usize; 2]) -> Self {
        Self { output }
    }
}

impl Module for AdaptiveAvgPool2d {
    fn extra_repr(&self) -> String {
        format!("output_size={}", one_or_pair(self.output))
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        Ok(input.adaptive_avg_pool2d(self.output)?)
    }

    /// GlobalAveragePool for an output of 1×1; ONNX has no operator for other sizes.
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        if self.output != [1, 1] {
            return Err(cannot_export(self, "ONNX pools adaptively only to 1×1 (GlobalAveragePool)"));
        }
        Ok(graph.node("GlobalAveragePool", &[x], &[]))
    }
}
