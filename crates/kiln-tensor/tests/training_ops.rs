//! Dropout and the in-place optimizer steps: the GPU against the CPU reference, known values,
//! copy-on-write, and bad input.

use kiln_tensor::{AdamConfig, Device, SgdConfig, Tensor};
use kiln_wgsl::testing::context_or_skip;
use proptest::prelude::*;

fn gpu(test: &str) -> Option<Device> {
    context_or_skip(test).map(Device::Gpu)
}

fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance * y.abs().max(1.0))
}

const ADAM: AdamConfig =
    AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
const SGD: SgdConfig = SgdConfig { lr: 0.1, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn dropout_masks_are_identical(len in 1..5000usize, p in prop_oneof![Just(0.0f32), Just(0.2), Just(0.5), Just(0.9), Just(1.0)], seed in any::<u64>()) {
        let Some(gpu) = gpu("dropout_masks_are_identical") else { return Ok(()) };
        let x = Tensor::randn(&[len], seed, &Device::Cpu).unwrap();
        let cpu = x.dropout(p, seed, true).unwrap().to_vec().unwrap();
        let on_gpu = x.to(&gpu).unwrap().dropout(p, seed, true).unwrap().to_vec().unwrap();
        prop_assert_eq!(&cpu, &on_gpu);
        let xs = x.to_vec().unwrap();
        let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        prop_assert!(cpu.iter().zip(&xs).all(|(&y, &x)| y == 0.0 || y == x * scale));
        // The backward pass is the same call on the gradient: the same elements survive.
        let ones = Tensor::ones(&[len], &Device::Cpu).unwrap().dropout(p, seed, true).unwrap().to_vec().unwrap();
        // (randn never yields an exact 0, so y = 0 only where the mask drops.)
        prop_assert!(ones.iter().zip(&cpu).all(|(&g, &y)| (g == 0.0) == (y == 0.0)));
    }

    #[test]
    fn optimizer_steps_match(len in 1..700usize, momentum in prop_oneof![Just(0.0f32), Just(0.9)], dampening in prop_oneof![Just(0.0f32), Just(0.1)],
                             nesterov in any::<bool>(), weight_decay in prop_oneof![Just(0.0f32), Just(0.01)], decoupled in any::<bool>(), seed in any::<u64>()) {
        let Some(gpu) = gpu("optimizer_steps_match") else { return Ok(()) };
        let sgd = SgdConfig { momentum, dampening, nesterov: nesterov && momentum > 0.0, weight_decay, ..SGD };
        let adam = AdamConfig { weight_decay, decoupled, ..ADAM };
        let start = Tensor::randn(&[len], seed, &Device::Cpu).unwrap();
        let zeros = Tensor::zeros(&[len], &Device::Cpu).unwrap();
        let (mut p_sgd, mut buf) = (start.clone(), zeros.clone());
        let (mut p_adam, mut m, mut v) = (start.clone(), zeros.clone(), zeros.clone());
        let (mut g_sgd, mut g_buf) = (start.to(&gpu).unwrap(), zeros.to(&gpu).unwrap());
        let (mut g_adam, mut g_m, mut g_v) = (start.to(&gpu).unwrap(), zeros.to(&gpu).unwrap(), zeros.to(&gpu).unwrap());
        for step in 1..=5u64 {
            let grad = Tensor::randn(&[len], seed ^ step, &Device::Cpu).unwrap();
            let grad_gpu = grad.to(&gpu).unwrap();
            p_sgd.sgd_step(&grad, Some(&mut buf), &sgd, step == 1).unwrap();
            g_sgd.sgd_step(&grad_gpu, Some(&mut g_buf), &sgd, step == 1).unwrap();
            p_adam.adam_step(&grad, &mut m, &mut v, &adam, step).unwrap();
            g_adam.adam_step(&grad_gpu, &mut g_m, &mut g_v, &adam, step).unwrap();
        }
        prop_assert!(close(&g_sgd.to_vec().unwrap(), &p_sgd.to_vec().unwrap(), 1e-5));
        prop_assert!(close(&g_buf.to_vec().unwrap(), &buf.to_vec().unwrap(), 1e-5));
        prop_assert!(close(&g_adam.to_vec().unwrap(), &p_adam.to_vec().unwrap(), 1e-5));
        prop_assert!(close(&g_v.to_vec().unwrap(), &v.to_vec().unwrap(), 1e-5));
    }
}

#[test]
fn dropout_keeps_about_one_minus_p_and_eval_is_the_identity() {
    let x = Tensor::ones(&[100_000], &Device::Cpu).unwrap();
    let kept = x.dropout(0.3, 7, true).unwrap().to_vec().unwrap().iter().filter(|&&v| v > 0.0).count();
    assert!((kept as f32 / 100_000.0 - 0.7).abs() < 0.01, "kept {kept}");
    assert_eq!(x.dropout(0.3, 7, false).unwrap().to_vec().unwrap(), x.to_vec().unwrap());
    assert_ne!(x.dropout(0.3, 7, true).unwrap().to_vec().unwrap(), x.dropout(0.3, 8, true).unwrap().to_vec().unwrap());
    assert!(x.dropout(1.5, 7, true).is_err() && x.dropout(-0.1, 7, true).is_err());
}

#[test]
fn sgd_momentum_known_values() {
    // PyTorch: buf₁ = g₁; buf₂ = μ·buf₁ + (1−d)·g₂; w −= lr·buf (nesterov: lr·(g + μ·buf)).
    let config = SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.5, weight_decay: 0.0, nesterov: false };
    let mut w = Tensor::from_vec(vec![1.0], &[1], &Device::Cpu).unwrap();
    let mut buf = Tensor::zeros(&[1], &Device::Cpu).unwrap();
    let g = |v: f32| Tensor::from_vec(vec![v], &[1], &Device::Cpu).unwrap();
    w.sgd_step(&g(2.0), Some(&mut buf), &config, true).unwrap();
    assert!((w.to_scalar().unwrap() - 0.8).abs() < 1e-6);
    w.sgd_step(&g(1.0), Some(&mut buf), &config, false).unwrap();
    // buf = 0.9·2 + 0.5·1 = 2.3; w = 0.8 − 0.23.
    assert!((buf.to_scalar().unwrap() - 2.3).abs() < 1e-6 && (w.to_scalar().unwrap() - 0.57).abs() < 1e-6);
}

#[test]
fn adam_and_adamw_known_values() {
    // Step 1 from zero moments moves each weight by lr·g/(|g| + eps·…) ≈ lr·sign(g);
    // AdamW first shrinks the weight by lr·wd, Adam folds wd·w into the gradient.
    let g = Tensor::from_vec(vec![0.5, -2.0], &[2], &Device::Cpu).unwrap();
    let zeros = || Tensor::zeros(&[2], &Device::Cpu).unwrap();
    let mut w = Tensor::from_vec(vec![1.0, 1.0], &[2], &Device::Cpu).unwrap();
    let config = AdamConfig { lr: 0.1, weight_decay: 0.5, decoupled: true, ..ADAM };
    w.adam_step(&g, &mut zeros(), &mut zeros(), &config, 1).unwrap();
    let got = w.to_vec().unwrap();
    assert!((got[0] - (0.95 - 0.1)).abs() < 1e-5 && (got[1] - (0.95 + 0.1)).abs() < 1e-5, "{got:?}");
    let mut w = Tensor::from_vec(vec![1.0, 1.0], &[2], &Device::Cpu).unwrap();
    let config = AdamConfig { decoupled: false, ..config };
    w.adam_step(&g, &mut zeros(), &mut zeros(), &config, 1).unwrap();
    let got = w.to_vec().unwrap(); // gradients 1.0 and −1.5: both still one lr step
    assert!((got[0] - 0.9).abs() < 1e-5 && (got[1] - 1.1).abs() < 1e-5, "{got:?}");
}

#[test]
fn steps_never_change_other_handles_to_the_parameter() {
    let Some(gpu) = gpu("steps_never_change_other_handles_to_the_parameter") else { return };
    for device in [Device::Cpu, gpu] {
        let mut w = Tensor::ones(&[3], &device).unwrap();
        let snapshot = w.clone();
        w.sgd_step(&Tensor::ones(&[3], &device).unwrap(), None, &SGD, true).unwrap();
        assert_eq!(snapshot.to_vec().unwrap(), vec![1.0; 3], "on {device}");
        assert_eq!(w.to_vec().unwrap(), vec![0.9; 3]);
    }
}

#[test]
fn optimizer_input_errors() {
    let mut w = Tensor::ones(&[3], &Device::Cpu).unwrap();
    let g = Tensor::ones(&[3], &Device::Cpu).unwrap();
    let momentum = SgdConfig { momentum: 0.9, ..SGD };
    assert!(w.sgd_step(&g, None, &momentum, true).unwrap_err().to_string().contains("momentum buffer"));
    assert!(w.sgd_step(&Tensor::ones(&[4], &Device::Cpu).unwrap(), None, &SGD, true).is_err());
    let (mut m, mut v) = (g.clone(), Tensor::ones(&[2], &Device::Cpu).unwrap());
    assert!(w.adam_step(&g, &mut m, &mut v, &ADAM, 1).is_err());
    let mut v = g.clone();
    assert!(w.adam_step(&g, &mut m, &mut v, &ADAM, 0).unwrap_err().to_string().contains("from 1"));
}
