//! Three steps of each optimizer from the same start and gradients as PyTorch's (the
//! fixture kiln-tensor's tests share, made by its make_pytorch_ops.py), on both devices.

use kiln_autograd::Var;
use kiln_optim::{Adam, Optimizer, Sgd};
use kiln_tensor::{Device, Tensor};
use kiln_wgsl::testing::context_or_skip;
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("../../kiln-tensor/tests/fixtures/pytorch_ops.json");
    serde_json::from_str::<Value>(text).expect("valid fixture")["optimizers"].clone()
}

fn tensor(v: &Value, device: &Device) -> Tensor {
    let data: Vec<f32> = v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    Tensor::from_vec(data, &shape, device).unwrap()
}

/// Runs the fixture's gradients through `optimizer` and compares every step with PyTorch.
fn follow(name: &str, device: &Device, make: impl Fn(Vec<Var>) -> Box<dyn Optimizer>) {
    let case = fixture();
    let p = Var::parameter(tensor(&case["start"], device));
    let mut optimizer = make(vec![p.clone()]);
    for (step, (grad, want)) in case["grads"].as_array().unwrap().iter().zip(case[name].as_array().unwrap()).enumerate()
    {
        optimizer.zero_grad();
        // Σ p·g has gradient g with respect to p.
        p.mul(&Var::constant(tensor(grad, device))).unwrap().sum_all().unwrap().backward().unwrap();
        optimizer.step().unwrap();
        let (got, want) = (p.value().to_vec().unwrap(), tensor(want, &Device::Cpu).to_vec().unwrap());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 2e-5 * w.abs().max(1.0),
                "{name} step {} on {device}: {got:?} vs {want:?}",
                step + 1
            );
        }
    }
}

#[test]
fn trajectories_match_pytorch() {
    let mut devices = vec![Device::Cpu];
    devices.extend(context_or_skip("trajectories_match_pytorch").map(Device::Gpu));
    for device in &devices {
        follow("sgd_momentum", device, |p| Box::new(Sgd::new(p, 0.1).momentum(0.9).dampening(0.1).weight_decay(0.01)));
        follow("sgd_nesterov", device, |p| Box::new(Sgd::new(p, 0.1).momentum(0.9).nesterov(true)));
        follow("adam", device, |p| Box::new(Adam::new(p, 0.01).weight_decay(0.1)));
        follow("adamw", device, |p| Box::new(Adam::adamw(p, 0.01).weight_decay(0.1)));
    }
}

#[test]
fn parameters_without_gradients_are_left_alone() {
    let (used, unused) = (
        Var::parameter(Tensor::ones(&[2], &Device::Cpu).unwrap()),
        Var::parameter(Tensor::ones(&[2], &Device::Cpu).unwrap()),
    );
    let mut optimizer = Sgd::new(vec![used.clone(), unused.clone()], 0.5);
    used.sum_all().unwrap().backward().unwrap();
    optimizer.step().unwrap();
    assert_eq!(used.value().to_vec().unwrap(), vec![0.5, 0.5]);
    assert_eq!(unused.value().to_vec().unwrap(), vec![1.0, 1.0]);
    optimizer.zero_grad();
    assert!(used.grad().is_none());
    optimizer.set_lr(0.25);
    assert_eq!(optimizer.lr(), 0.25);
}
