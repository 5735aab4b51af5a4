//! An optimizer whose steps run through a hook: what a training loop hands its epoch when
//! something must happen around every step — a schedule stepped after it, gradients averaged
//! across processes before it — so the loop itself needs no hooks.

use kiln_autograd::{Result, Var};

use crate::{Optimizer, OptimizerState};

/// `optimizer`, each `step` of which is `hook(optimizer)`: the hook steps the optimizer
/// itself and may do more before or after. Everything else is the optimizer's own.
pub struct Hooked<'a, H> {
    optimizer: &'a mut dyn Optimizer,
    hook: H,
}

impl<'a, H: FnMut(&mut dyn Optimizer) -> Result<()>> Hooked<'a, H> {
    pub fn new(optimizer: &'a mut dyn Optimizer, hook: H) -> Self {
        Self { optimizer, hook }
    }
}

impl<H: FnMut(&mut dyn Optimizer) -> Result<()>> Optimizer for Hooked<'_, H> {
    fn step(&mut self) -> Result<()> {
        (self.hook)(self.optimizer)
    }

    fn parameters(&self) -> &[Var] {
        self.optimizer.parameters()
    }

    fn zero_grad(&mut self) {
        self.optimizer.zero_grad()
    }

    fn lrs(&self) -> Vec<f32> {
        self.optimizer.lrs()
    }

    fn set_lrs(&mut self, lrs: &[f32]) -> Result<()> {
        self.optimizer.set_lrs(lrs)
    }

    fn set_momentum(&mut self, momentum: f32) {
        self.optimizer.set_momentum(momentum)
    }

    fn state(&self) -> Result<OptimizerState> {
        self.optimizer.state()
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.optimizer.load_state(state)
    }
}
