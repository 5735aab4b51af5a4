use kiln_autograd::{Result, Var};
use kiln_tensor::{Device, SgdConfig, SgdParameter, Tensor, sgd_steps};

use crate::{Optimizer, OptimizerState, check_keys, per_parameter, scalar, scalar_tensor};

/// Stochastic gradient descent, as `torch.optim.SGD`.
pub struct Sgd {
    parameters: Vec<Var>,
    config: SgdConfig,
    /// One momentum buffer per parameter, made at its first step.
    momentum: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr` (no momentum, no weight decay).
    pub fn new(parameters: Vec<Var>, lr: f32) -> Self {
        let momentum = vec![None; parameters.len()];
        Self {
            parameters,
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
    /// Every parameter with a gradient, in one multi-tensor update (a few launches on a GPU).
    fn step(&mut self) -> Result<()> {
        let mut vars = Vec::new();
        let mut work = Vec::new();
        for (p, buffer) in self.parameters.iter().zip(&mut self.momentum) {
            let Some(grad) = p.grad() else { continue };
            let first_step = buffer.is_none();
            if self.config.momentum != 0.0 && first_step {
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
            sgd_steps(&mut parameters, &self.config)
        })
    }

    fn parameters(&self) -> &[Var] {
        &self.parameters
    }

    fn lr(&self) -> f32 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f32) {
        self.config.momentum = momentum;
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut state = OptimizerState::from([("lr".to_string(), scalar_tensor(self.config.lr)?)]);
        for (i, buffer) in self.momentum.iter().enumerate() {
            if let Some(buffer) = buffer {
                state.insert(format!("{i}.momentum_buffer"), buffer.to(&Device::Cpu)?);
            }
        }
        Ok(state)
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let n = self.parameters.len();
        check_keys(state, |k| {
            k == "lr" || k.strip_suffix(".momentum_buffer").and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < n)
        })?;
        let buffers = self
            .parameters
            .iter()
            .enumerate()
            .map(|(i, p)| per_parameter(state, &format!("{i}.momentum_buffer"), p))
            .collect::<Result<Vec<_>>>()?;
        self.config.lr = scalar(state, "lr")?;
        self.momentum = buffers;
        Ok(())
    }
}
