//! Learning-rate schedulers with PyTorch's formulas. Call `step` once per epoch (StepLR,
//! CosineAnnealingLR), per batch (OneCycleLR), or per epoch with the validation metric
//! (ReduceLROnPlateau), after the optimizer's step, as in PyTorch. Each drives every
//! parameter group, from that group's own rate when the scheduler was made.

use std::f64::consts::PI;

use kiln_autograd::Result;
use kiln_tensor::TensorError;

use crate::Optimizer;

/// Sets rates a scheduler computed from `optimizer.lrs()`, one per group by construction.
fn set_lrs(optimizer: &mut dyn Optimizer, lrs: &[f32]) {
    optimizer.set_lrs(lrs).expect("a schedule keeps one rate per group");
}

/// A schedule that sets an optimizer's learning rate as training advances.
pub trait LrScheduler {
    /// Advances one step and sets the optimizer's learning rate for the next.
    fn step(&mut self, optimizer: &mut dyn Optimizer);
}

/// lr = base · γ^⌊t / step_size⌋, as `torch.optim.lr_scheduler.StepLR`.
pub struct StepLr {
    base_lrs: Vec<f32>,
    step_size: u64,
    gamma: f32,
    t: u64,
}

impl StepLr {
    pub fn new(optimizer: &dyn Optimizer, step_size: u64, gamma: f32) -> Self {
        Self { base_lrs: optimizer.lrs(), step_size: step_size.max(1), gamma, t: 0 }
    }
}

impl LrScheduler for StepLr {
    fn step(&mut self, optimizer: &mut dyn Optimizer) {
        self.t += 1;
        let decay = (self.gamma as f64).powi((self.t / self.step_size) as i32);
        set_lrs(optimizer, &self.base_lrs.iter().map(|&base| (base as f64 * decay) as f32).collect::<Vec<_>>());
    }
}

/// lr = η_min + (base − η_min)·(1 + cos(π·t / T_max))/2, as
/// `torch.optim.lr_scheduler.CosineAnnealingLR` (which repeats past T_max).
pub struct CosineAnnealingLr {
    base_lrs: Vec<f32>,
    t_max: u64,
    eta_min: f32,
    t: u64,
}

impl CosineAnnealingLr {
    pub fn new(optimizer: &dyn Optimizer, t_max: u64, eta_min: f32) -> Self {
        Self { base_lrs: optimizer.lrs(), t_max: t_max.max(1), eta_min, t: 0 }
    }
}

impl LrScheduler for CosineAnnealingLr {
    fn step(&mut self, optimizer: &mut dyn Optimizer) {
        self.t += 1;
        let (min, phase) = (self.eta_min as f64, (1.0 + (PI * self.t as f64 / self.t_max as f64).cos()) / 2.0);
        let lrs: Vec<f32> = self.base_lrs.iter().map(|&base| (min + (base as f64 - min) * phase) as f32).collect();
        set_lrs(optimizer, &lrs);
    }
}

/// The 1cycle policy, as `torch.optim.lr_scheduler.OneCycleLR` with its defaults: the rate
/// rises from max_lr/25 to max_lr over the first 30% of the steps and falls to
/// max_lr/25/10⁴ by the last, both along cosines, while momentum (Adam's β1) moves the other
/// way between 0.95 and 0.85. Step once per batch.
pub struct OneCycleLr {
    /// Per parameter group.
    max_lrs: Vec<f64>,
    peak_step: f64,
    last_step: f64,
    momentum: (f64, f64),
    t: u64,
}

impl OneCycleLr {
    /// Sets the optimizer's starting rate and momentum, as PyTorch's constructor does; every
    /// group peaks at `max_lr`.
    pub fn new(optimizer: &mut dyn Optimizer, max_lr: f32, total_steps: u64) -> Self {
        let groups = optimizer.lrs().len();
        Self::per_group(optimizer, &vec![max_lr; groups], total_steps).expect("one max_lr for each group")
    }

    /// As [`OneCycleLr::new`], each group peaking at its own rate (PyTorch's `max_lr` list).
    pub fn per_group(optimizer: &mut dyn Optimizer, max_lrs: &[f32], total_steps: u64) -> Result<Self> {
        let groups = optimizer.lrs().len();
        if max_lrs.len() != groups {
            let why = format!("{} max_lr values for {groups} parameter groups", max_lrs.len());
            return Err(TensorError::InvalidArgument { op: "OneCycleLr", why }.into());
        }
        let schedule = Self {
            max_lrs: max_lrs.iter().map(|&lr| lr as f64).collect(),
            peak_step: 0.3 * total_steps as f64 - 1.0,
            last_step: total_steps as f64 - 1.0,
            momentum: (0.85, 0.95),
            t: 0,
        };
        schedule.apply(optimizer);
        Ok(schedule)
    }

    fn apply(&self, optimizer: &mut dyn Optimizer) {
        let anneal = |from: f64, to: f64, pct: f64| to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0);
        let t = self.t as f64;
        let (base_m, max_m) = self.momentum;
        // Each group from max/25 up to its max, then down to max/25/10⁴.
        let rising = t <= self.peak_step;
        let lr = |max: f64| {
            let (initial, min) = (max / 25.0, max / 25.0 / 1e4);
            if rising {
                anneal(initial, max, t / self.peak_step)
            } else {
                anneal(max, min, (t - self.peak_step) / (self.last_step - self.peak_step))
            }
        };
        let momentum = if rising {
            anneal(max_m, base_m, t / self.peak_step)
        } else {
            anneal(base_m, max_m, (t - self.peak_step) / (self.last_step - self.peak_step))
        };
        set_lrs(optimizer, &self.max_lrs.iter().map(|&max| lr(max) as f32).collect::<Vec<_>>());
        optimizer.set_momentum(momentum as f32);
    }
}

impl LrScheduler for OneCycleLr {
    fn step(&mut self, optimizer: &mut dyn Optimizer) {
        self.t += 1;
        self.apply(optimizer);
    }
}

/// Cuts the rate by `factor` when a metric (lower is better) has not improved by a relative
/// 10⁻⁴ for more than `patience` steps, then waits `cooldown` steps, as
/// `torch.optim.lr_scheduler.ReduceLROnPlateau` in mode "min".
pub struct ReduceLrOnPlateau {
    factor: f32,
    patience: u64,
    cooldown: u64,
    min_lr: f32,
    best: f64,
    bad_steps: u64,
    cooldown_left: u64,
    metric: f64,
}

impl ReduceLrOnPlateau {
    pub fn new(factor: f32, patience: u64, cooldown: u64) -> Self {
        Self {
            factor,
            patience,
            cooldown,
            min_lr: 0.0,
            best: f64::INFINITY,
            bad_steps: 0,
            cooldown_left: 0,
            metric: f64::NAN,
        }
    }

    pub fn min_lr(mut self, min_lr: f32) -> Self {
        self.min_lr = min_lr;
        self
    }

    /// Records this step's metric (validation loss, say); call before `step`.
    pub fn observe(&mut self, metric: f32) {
        self.metric = metric as f64;
    }
}

impl LrScheduler for ReduceLrOnPlateau {
    fn step(&mut self, optimizer: &mut dyn Optimizer) {
        if self.metric < self.best * (1.0 - 1e-4) {
            self.best = self.metric;
            self.bad_steps = 0;
        } else {
            self.bad_steps += 1;
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.bad_steps = 0;
        }
        if self.bad_steps > self.patience {
            // Each group cut on its own, and only by more than 1e-8 (PyTorch's eps).
            let lrs: Vec<f32> = optimizer
                .lrs()
                .into_iter()
                .map(|old| {
                    let new = (old * self.factor).max(self.min_lr);
                    if old - new > 1e-8 { new } else { old }
                })
                .collect();
            set_lrs(optimizer, &lrs);
            self.cooldown_left = self.cooldown;
            self.bad_steps = 0;
        }
    }
}
