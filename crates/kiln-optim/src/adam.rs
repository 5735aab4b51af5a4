use kiln_autograd::{Result, Var};
use kiln_tensor::{AdamConfig, AdamParameter, Device, Tensor, adam_steps};

use crate::{Groups, Optimizer, OptimizerState, ParamGroup, check_keys, per_parameter, scalar, scalar_tensor};

/// Adam, as `torch.optim.Adam` (β = (0.9, 0.999), eps 1e-8, no weight decay by default),
/// or AdamW with [`Adam::adamw`].
pub struct Adam {
    groups: Groups,
    /// Every group's settings but its learning rate and (where it sets one) weight decay.
    config: AdamConfig,
    /// Per parameter: (first moment, second moment), made at its first step.
    moments: Vec<Option<(Tensor, Tensor)>>,
    /// Per parameter: steps taken, for the bias corrections.
    steps: Vec<u64>,
}

impl Adam {
    /// β1, which OneCycleLR cycles.
    pub fn beta1(&self) -> f32 {
        self.config.beta1
    }

    pub fn new(parameters: Vec<Var>, lr: f32) -> Self {
        Self::with_groups(vec![ParamGroup::new(parameters)], lr)
    }

    /// Adam over parameter groups, each with its own rate and weight decay or these.
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f32) -> Self {
        let groups = Groups::new(groups, lr);
        let n = groups.parameters.len();
        Self {
            groups,
            config: AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false },
            moments: vec![None; n],
            steps: vec![0; n],
        }
    }

    /// AdamW, as `torch.optim.AdamW`: decoupled weight decay, 0.01 by default.
    pub fn adamw(parameters: Vec<Var>, lr: f32) -> Self {
        Self::adamw_with_groups(vec![ParamGroup::new(parameters)], lr)
    }

    /// AdamW over parameter groups.
    pub fn adamw_with_groups(groups: Vec<ParamGroup>, lr: f32) -> Self {
        let mut adam = Self::with_groups(groups, lr);
        adam.config.decoupled = true;
        adam.config.weight_decay = 0.01;
        adam
    }

    pub fn betas(mut self, beta1: f32, beta2: f32) -> Self {
        (self.config.beta1, self.config.beta2) = (beta1, beta2);
        self
    }

    pub fn eps(mut self, eps: f32) -> Self {
        self.config.eps = eps;
        self
    }

    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.config.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Adam {
    /// Every parameter with a gradient, in one multi-tensor update per group (a few launches
    /// on a GPU).
    fn step(&mut self) -> Result<()> {
        for group in &self.groups.settings {
            let weight_decay = group.weight_decay.unwrap_or(self.config.weight_decay);
            let config = AdamConfig { lr: group.lr, weight_decay, ..self.config };
            let range = group.start..group.end;
            let mut vars = Vec::new();
            let mut work = Vec::new();
            let parameters = self.groups.parameters[range.clone()].iter();
            for ((p, moments), steps) in parameters.zip(&mut self.moments[range.clone()]).zip(&mut self.steps[range]) {
                let Some(grad) = p.grad() else { continue };
                if moments.is_none() {
                    let zeros = || Tensor::zeros(grad.shape(), &grad.device());
                    *moments = Some((zeros()?, zeros()?));
                }
                *steps += 1;
                vars.push(p);
                work.push((grad, moments.as_mut().expect("made above"), *steps));
            }
            Var::update_all(&vars, |values| {
                let mut parameters: Vec<AdamParameter> = values
                    .iter_mut()
                    .zip(&mut work)
                    .map(|(param, (grad, (exp_avg, exp_avg_sq), step))| AdamParameter {
                        param,
                        grad,
                        exp_avg,
                        exp_avg_sq,
                        step: *step,
                    })
                    .collect();
                adam_steps(&mut parameters, &config)
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
        self.config.beta1 = momentum;
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut state = OptimizerState::from([
            ("lr".to_string(), self.groups.lr_state()?),
            ("beta1".to_string(), scalar_tensor(self.config.beta1)?),
        ]);
        for (i, (moments, &steps)) in self.moments.iter().zip(&self.steps).enumerate() {
            if let Some((m, v)) = moments {
                state.insert(format!("{i}.exp_avg"), m.to(&Device::Cpu)?);
                state.insert(format!("{i}.exp_avg_sq"), v.to(&Device::Cpu)?);
                state.insert(format!("{i}.step"), Tensor::from_vec_i32(vec![steps as i32], &[], &Device::Cpu)?);
            }
        }
        Ok(state)
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let n = self.groups.parameters.len();
        check_keys(state, |k| {
            k == "lr"
                || k == "beta1"
                || k.split_once('.').is_some_and(|(i, what)| {
                    i.parse::<usize>().is_ok_and(|i| i < n) && ["exp_avg", "exp_avg_sq", "step"].contains(&what)
                })
        })?;
        let mut moments = Vec::with_capacity(n);
        let mut steps = Vec::with_capacity(n);
        for (i, p) in self.groups.parameters.iter().enumerate() {
            let m = per_parameter(state, &format!("{i}.exp_avg"), p)?;
            let v = per_parameter(state, &format!("{i}.exp_avg_sq"), p)?;
            match (m, v) {
                (Some(m), Some(v)) => {
                    moments.push(Some((m, v)));
                    steps.push(scalar(state, &format!("{i}.step"))? as u64);
                }
                (None, None) => {
                    moments.push(None);
                    steps.push(0);
                }
                _ => return Err(crate::invalid(format!("parameter {i} has only one of its two moments"))),
            }
        }
        self.groups.load_lr_state(state)?;
        self.config.beta1 = scalar(state, "beta1")?;
        (self.moments, self.steps) = (moments, steps);
        Ok(())
    }
}
