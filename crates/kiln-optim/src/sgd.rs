use kiln_autograd::{Result, Var};
use kiln_tensor::{Device, SgdConfig, SgdParameter, Tensor, sgd_steps};

use crate::{Groups, Optimizer, OptimizerState, ParamGroup, check_keys, per_parameter};

/// Stochastic gradient descent, as `torch.optim.SGD`.
pub struct Sgd {
    groups: Groups,
    /// Every group's settings but its learning rate and (where it sets one) weight decay.
    config: SgdConfig,
    /// One momentum buffer per parameter, made at its first step.
    momentum: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr` (no momentum, no weight decay).
    pub fn new(parameters: Vec<Var>, lr: f32) -> Self {
        Self::with_groups(vec![ParamGroup::new(parameters)], lr)
    }

    /// SGD over parameter groups, each with its own rate and weight decay or these.
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f32) -> Self {
        let groups = Groups::new(groups, lr);
        let momentum = vec![None; groups.parameters.len()];
        Self {
            groups,
            config: SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false },
            momentum,
        }
    }

    pub fn momentum(mut self, momentum: f32) -> Self {
        self.config.momentum = momentum;
        self
    }

    pub fn dampening(mut self, dampening: f32) -> Self {
        self.config.dampening = dampening;
        self
    }

    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.config.nesterov = nesterov;
        self
    }

    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.config.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    /// Every parameter with a gradient, in one multi-tensor update per group (a few launches
    /// on a GPU).
    fn step(&mut self) -> Result<()> {
        for group in &self.groups.settings {
            let weight_decay = group.weight_decay.unwrap_or(self.config.weight_decay);
            let config = SgdConfig { lr: group.lr, weight_decay, ..self.config };
            let mut vars = Vec::new();
            let mut work = Vec::new();
            let parameters = &self.groups.parameters[group.start..group.end];
            for (p, buffer) in parameters.iter().zip(&mut self.momentum[group.start..group.end]) {
                let Some(grad) = p.grad() else { continue };
                let first_step = buffer.is_none();
                if config.momentum != 0.0 && first_step {
                    *buffer = Some(Tensor::zeros(grad.shape(), &grad.device())?);
                }
                vars.push(p);
                work.push((grad, buffer.as_mut(), first_step));
            }
            Var::update_all(&vars, |values| {
                let mut parameters: Vec<SgdParameter> = values
                    .iter_mut()
                    .zip(&mut work)
                    .map(|(param, (grad, buffer, first_step))| SgdParameter {
                        param,
                        grad,
                        momentum_buffer: buffer.as_deref_mut(),
                        first_step: *first_step,
                    })
                    .collect();
                sgd_steps(&mut parameters, &config)
            })?;
        }
        Ok(())
    }

    fn parameters(&self) -> &[Var] {
        &self.groups.parameters
    }

    fn lrs(&self) -> Vec<f32> {
        self.groups.lrs()
    }

    fn set_lrs(&mut self, lrs: &[f32]) -> Result<()> {
        self.groups.set_lrs(lrs)
    }

    fn set_momentum(&mut self, momentum: f32) {
        self.config.momentum = momentum;
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut state = OptimizerState::from([("lr".to_string(), self.groups.lr_state()?)]);
        for (i, buffer) in self.momentum.iter().enumerate() {
            if let Some(buffer) = buffer {
                state.insert(format!("{i}.momentum_buffer"), buffer.to(&Device::Cpu)?);
            }
        }
        Ok(state)
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let n = self.groups.parameters.len();
        check_keys(state, |k| {
            k == "lr" || k.strip_suffix(".momentum_buffer").and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < n)
        })?;
        let buffers = self
            .groups
            .parameters
            .iter()
            .enumerate()
            .map(|(i, p)| per_parameter(state, &format!("{i}.momentum_buffer"), p))
            .collect::<Result<Vec<_>>>()?;
        self.groups.load_lr_state(state)?;
        self.momentum = buffers;
        Ok(())
    }
}
