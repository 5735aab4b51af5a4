use kiln_autograd::Var;
use kiln_tensor::Pool2d;

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
        let one_or_pair = |[a, b]: [usize; 2]| if a == b { a.to_string() } else { format!("({a}, {b})") };
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

    fn max_pool(&self) -> Option<Pool2d> {
        Some(self.pool)
    }
}
