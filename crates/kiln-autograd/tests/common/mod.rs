//! The gradient checks both test files use.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use kiln_autograd::{Var, no_grad};
use kiln_tensor::{Device, Tensor};
use kiln_wgsl::testing::context_or_skip;

pub fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance * y.abs().max(1.0))
}

/// Central differences of `loss` with respect to element `i` of parameter `which`.
fn numerical(params: &[Tensor], which: usize, i: usize, loss: &impl Fn(&[Tensor]) -> f32) -> f32 {
    let h = 1e-2f32;
    let shifted = |delta: f32| {
        let mut values = params[which].to_vec().unwrap();
        values[i] += delta;
        let mut moved = params.to_vec();
        moved[which] = Tensor::from_vec(values, params[which].shape(), &Device::Cpu).unwrap();
        loss(&moved) as f64
    };
    ((shifted(h) - shifted(-h)) / (2.0 * h as f64)) as f32
}

/// Checks `backward` against central differences for every parameter, at up to 12
/// elements of each.
pub fn check_gradients(params: &[Tensor], forward: impl Fn(&[Var]) -> Var) {
    let vars: Vec<Var> = params.iter().cloned().map(Var::parameter).collect();
    forward(&vars).backward().unwrap();
    let loss = |values: &[Tensor]| {
        no_grad(|| forward(&values.iter().cloned().map(Var::constant).collect::<Vec<_>>()).value().to_scalar().unwrap())
    };
    for (which, var) in vars.iter().enumerate() {
        let grad = var.grad().expect("every parameter gets a gradient").to_vec().unwrap();
        let step = (grad.len() / 12).max(1);
        for i in (0..grad.len()).step_by(step) {
            let numeric = numerical(params, which, i, &loss);
            assert!(
                (grad[i] - numeric).abs() <= 3e-3 + 2e-2 * numeric.abs(),
                "parameter {which}[{i}]: {} vs {numeric}",
                grad[i]
            );
        }
    }
}

pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, seed, &Device::Cpu).unwrap()
}

/// `forward`'s loss and then every parameter's gradient, computed on `device`.
fn loss_and_grads(params: &[Tensor], device: &Device, forward: &impl Fn(&[Var], &Device) -> Var) -> Vec<f32> {
    let vars: Vec<Var> = params.iter().map(|p| Var::parameter(p.to(device).unwrap())).collect();
    let loss = forward(&vars, device);
    loss.backward().unwrap();
    let mut all = loss.value().to_vec().unwrap();
    for var in &vars {
        all.extend(var.grad().expect("every parameter gets a gradient").to_vec().unwrap());
    }
    all
}

/// An op's gradients against central differences on the CPU, then its loss and gradients
/// on the GPU against the CPU's. `forward` builds the loss on the device it is given
/// (moving any constants it uses there).
pub fn check_op(test: &str, params: &[Tensor], forward: impl Fn(&[Var], &Device) -> Var) {
    check_gradients(params, |p| forward(p, &Device::Cpu));
    let Some(ctx) = context_or_skip(test) else { return };
    let (cpu, gpu) =
        (loss_and_grads(params, &Device::Cpu, &forward), loss_and_grads(params, &Device::Gpu(ctx), &forward));
    assert!(close(&gpu, &cpu, 1e-4), "{test}: the GPU's loss and gradients differ from the CPU's\n{gpu:?}\n{cpu:?}");
}
