//! Each scheduler's learning rates (and OneCycleLR's β1) step by step against PyTorch's
//! (fixtures/schedules.json, made by fixtures/make_schedules.py).

use kiln_autograd::Var;
use kiln_optim::{Adam, CosineAnnealingLr, LrScheduler, OneCycleLr, Optimizer, ReduceLrOnPlateau, Sgd, StepLr};
use kiln_tensor::{Device, Tensor};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/schedules.json")).unwrap()
}

fn series(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn parameter() -> Vec<Var> {
    vec![Var::parameter(Tensor::zeros(&[1], &Device::Cpu).unwrap())]
}

/// The learning rate before each of `steps` steps, as the fixture records it.
fn rates(optimizer: &mut dyn Optimizer, scheduler: &mut dyn LrScheduler, steps: usize) -> Vec<f32> {
    (0..steps)
        .map(|_| {
            let lr = optimizer.lr();
            scheduler.step(optimizer);
            lr
        })
        .collect()
}

fn assert_series(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "{what} step {i}: {g} vs PyTorch {w}");
    }
}

#[test]
fn step_and_cosine_schedules() {
    let f = fixture();
    let mut sgd = Sgd::new(parameter(), 0.1).momentum(0.9);
    let mut step = StepLr::new(&sgd, 3, 0.5);
    assert_series(&rates(&mut sgd, &mut step, 10), &series(&f["step"]["lr"]), "StepLR");
    let mut sgd = Sgd::new(parameter(), 0.1).momentum(0.9);
    let mut cosine = CosineAnnealingLr::new(&sgd, 7, 0.001);
    assert_series(&rates(&mut sgd, &mut cosine, 16), &series(&f["cosine"]["lr"]), "CosineAnnealingLR");
}

#[test]
fn one_cycle_schedules_rate_and_momentum() {
    let f = fixture();
    let mut adam = Adam::new(parameter(), 0.01);
    let mut one_cycle = OneCycleLr::new(&mut adam, 0.1, 20);
    let mut betas = Vec::new();
    let lrs = (0..20)
        .map(|_| {
            let lr = adam.lr();
            betas.push(adam.beta1());
            one_cycle.step(&mut adam);
            lr
        })
        .collect::<Vec<_>>();
    assert_series(&lrs, &series(&f["one_cycle"]["lr"]), "OneCycleLR rate");
    assert_series(&betas, &series(&f["one_cycle"]["beta1"]), "OneCycleLR beta1");
}

#[test]
fn reduce_on_plateau() {
    let f = fixture();
    let metrics = series(&f["plateau_metrics"]);
    let mut sgd = Sgd::new(parameter(), 0.1).momentum(0.9);
    let mut plateau = ReduceLrOnPlateau::new(0.5, 2, 1);
    // The metric is recorded before each step, as PyTorch's step(metric) takes it.
    let lrs: Vec<f32> = metrics
        .iter()
        .map(|&metric| {
            let lr = sgd.lr();
            plateau.observe(metric);
            plateau.step(&mut sgd);
            lr
        })
        .collect();
    assert_series(&lrs, &series(&f["plateau"]["lr"]), "ReduceLROnPlateau");
}
