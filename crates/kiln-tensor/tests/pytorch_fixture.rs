//! Known values from PyTorch (fixtures/pytorch_ops.json, made by fixtures/make_pytorch_ops.py):
//! conv2d, max_pool2d, batch_norm2d and cross_entropy outputs and gradients, and SGD and
//! Adam trajectories, reproduced on the CPU and on the GPU, with each kernel class the GPU
//! adapter can run (lavapipe runs both: the software kernels and the portable ones that
//! hardware GPUs launch).

use kiln_tensor::{AdamConfig, BatchNormConfig, Conv2d, Device, Pool2d, Reduction, SgdConfig, Tensor};
use kiln_wgsl::testing::contexts_of_each_class;
use serde_json::Value;

const TOLERANCE: f32 = 2e-5;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/pytorch_ops.json")).expect("valid fixture")
}

fn devices(test: &str) -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    devices.extend(contexts_of_each_class(test).into_iter().map(Device::Gpu));
    devices
}

fn shape(v: &Value) -> Vec<usize> {
    v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn tensor(v: &Value, device: &Device) -> Tensor {
    Tensor::from_vec(floats(v), &shape(v), device).unwrap()
}

#[track_caller]
fn assert_matches(got: &Tensor, want: &Value, what: &str) {
    assert_eq!(got.shape(), shape(want).as_slice(), "{what}: shape");
    let (got, want) = (got.to_vec().unwrap(), floats(want));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= TOLERANCE * w.abs().max(1.0), "{what}[{i}]: kiln {g}, PyTorch {w}");
    }
}

#[test]
fn conv2d_matches_pytorch() {
    let fixture = fixture();
    for device in devices("conv2d_matches_pytorch") {
        for name in ["conv_s2_p1_bias", "conv_d2_p2"] {
            let case = &fixture[name];
            let n = |key: &str| case[key].as_u64().unwrap() as usize;
            let conv = Conv2d::default().stride(n("stride")).padding(n("padding")).dilation(n("dilation"));
            let (x, w) = (tensor(&case["x"], &device), tensor(&case["w"], &device));
            let b = case.get("b").map(|b| tensor(b, &device));
            assert_matches(&x.conv2d(&w, b.as_ref(), &conv).unwrap(), &case["y"], name);
            let grads = tensor(&case["r"], &device).conv2d_backward(&x, &w, &conv, b.is_some()).unwrap();
            assert_matches(&grads.input, &case["grad_x"], &format!("{name} grad x on {device}"));
            assert_matches(&grads.weight, &case["grad_w"], &format!("{name} grad w on {device}"));
            if let Some(grad_b) = case.get("grad_b") {
                assert_matches(&grads.bias.unwrap(), grad_b, &format!("{name} grad b on {device}"));
            }
        }
    }
}

#[test]
fn max_pool2d_matches_pytorch() {
    let case = &fixture()["max_pool"];
    let pool = Pool2d::new(3).stride(2).padding(1);
    for device in devices("max_pool2d_matches_pytorch") {
        let x = tensor(&case["x"], &device);
        let (y, at) = x.max_pool2d(&pool).unwrap();
        assert_matches(&y, &case["y"], "max_pool y");
        let want: Vec<i32> =
            case["indices"]["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
        assert_eq!(at.to_vec_i32().unwrap(), want, "argmax positions, ties included, on {device}");
        let grad = tensor(&case["r"], &device).max_pool2d_backward(&at, x.shape(), &pool).unwrap();
        assert_matches(&grad, &case["grad_x"], "max_pool grad");
    }
}

#[test]
fn batch_norm2d_matches_pytorch() {
    let case = &fixture()["batch_norm"];
    let config = BatchNormConfig { momentum: 0.1, eps: 1e-5, relu: false };
    for device in devices("batch_norm2d_matches_pytorch") {
        let (x, w, b) = (tensor(&case["x"], &device), tensor(&case["weight"], &device), tensor(&case["bias"], &device));
        let (mut rm, mut rv) = (Tensor::zeros(&[3], &device).unwrap(), Tensor::ones(&[3], &device).unwrap());
        let (y, saved) = x.batch_norm2d_train(Some(&w), Some(&b), &mut rm, &mut rv, &config).unwrap();
        assert_matches(&y, &case["y"], "batch_norm y");
        assert_matches(&rm, &case["running_mean"], "running mean");
        assert_matches(&rv, &case["running_var"], "running var");
        let grads = tensor(&case["r"], &device).batch_norm2d_backward(&x, Some(&w), true, &saved, true).unwrap();
        assert_matches(&grads.input, &case["grad_x"], "batch_norm grad x");
        assert_matches(&grads.weight.unwrap(), &case["grad_w"], "batch_norm grad w");
        assert_matches(&grads.bias.unwrap(), &case["grad_b"], "batch_norm grad b");
        let eval = x.batch_norm2d_eval(Some(&w), Some(&b), &rm, &rv, &config).unwrap();
        assert_matches(&eval, &case["y_eval"], "batch_norm eval");
    }
}

#[test]
fn cross_entropy_matches_pytorch() {
    let case = &fixture()["cross_entropy"];
    for device in devices("cross_entropy_matches_pytorch") {
        let logits = tensor(&case["logits"], &device);
        let labels: Vec<i32> =
            case["labels"]["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
        let labels = Tensor::from_vec_i32(labels, &[5], &device).unwrap();
        let weight = tensor(&case["weight"], &device);
        for (name, w) in [("plain", None), ("weighted", Some(&weight))] {
            for (suffix, reduction) in [("mean", Reduction::Mean), ("sum", Reduction::Sum)] {
                let want = &case[format!("{name}_{suffix}")];
                let (loss, grad) = logits.cross_entropy_with_grad(&labels, w, reduction).unwrap();
                let expected = want["loss"].as_f64().unwrap() as f32;
                let got = loss.to_scalar().unwrap();
                assert!(
                    (got - expected).abs() <= TOLERANCE * expected.abs().max(1.0),
                    "{name} {suffix}: {got} vs {expected}"
                );
                assert_matches(&grad, &want["grad"], &format!("{name} {suffix} grad"));
            }
        }
    }
}

#[test]
fn optimizer_trajectories_match_pytorch() {
    let case = &fixture()["optimizers"];
    let grads: Vec<&Value> = case["grads"].as_array().unwrap().iter().collect();
    let sgd = |momentum, dampening, weight_decay, nesterov| SgdConfig {
        lr: 0.1,
        momentum,
        dampening,
        weight_decay,
        nesterov,
    };
    let adam = |decoupled| AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, decoupled };
    for device in devices("optimizer_trajectories_match_pytorch") {
        for (name, config) in [("sgd_momentum", sgd(0.9, 0.1, 0.01, false)), ("sgd_nesterov", sgd(0.9, 0.0, 0.0, true))]
        {
            let mut p = tensor(&case["start"], &device);
            let mut buffer = Tensor::zeros(p.shape(), &device).unwrap();
            for (step, (g, want)) in grads.iter().zip(case[name].as_array().unwrap()).enumerate() {
                p.sgd_step(&tensor(g, &device), Some(&mut buffer), &config, step == 0).unwrap();
                assert_matches(&p, want, &format!("{name} step {}", step + 1));
            }
        }
        for (name, config) in [("adam", adam(false)), ("adamw", adam(true))] {
            let mut p = tensor(&case["start"], &device);
            let (mut m, mut v) =
                (Tensor::zeros(p.shape(), &device).unwrap(), Tensor::zeros(p.shape(), &device).unwrap());
            for (step, (g, want)) in grads.iter().zip(case[name].as_array().unwrap()).enumerate() {
                p.adam_step(&tensor(g, &device), &mut m, &mut v, &config, step as u64 + 1).unwrap();
                assert_matches(&p, want, &format!("{name} step {}", step + 1));
            }
        }
    }
}
