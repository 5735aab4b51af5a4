//! Parameter groups with their own learning rates and weight decays, and the schedulers
//! driving every group, against PyTorch (fixtures/make_param_groups.py), on both devices.

use kiln_autograd::Var;
use kiln_optim::{
    Adam, CosineAnnealingLr, LrScheduler, OneCycleLr, Optimizer, ParamGroup, ReduceLrOnPlateau, Sgd, StepLr,
};
use kiln_tensor::{Device, Tensor};
use kiln_wgsl::testing::context_or_skip;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/param_groups.json")).expect("valid fixture")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

fn close(got: &[f32], want: &[f32], tolerance: f32) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= tolerance * w.abs().max(1.0))
}

/// The fixture's two parameters (one per group) through its four steps of gradients,
/// compared with PyTorch after each step.
fn follow(name: &str, device: &Device, make: impl Fn(Vec<Var>, Vec<Var>) -> Box<dyn Optimizer>) {
    let case = fixture();
    let params: Vec<Var> = (0..2)
        .map(|i| {
            let start = Tensor::from_vec(floats(&case["starts"][i]), &shape(&case["shapes"][i]), device).unwrap();
            Var::parameter(start)
        })
        .collect();
    let mut optimizer = make(vec![params[0].clone()], vec![params[1].clone()]);
    for (step, (grads, want)) in
        case["grads"].as_array().unwrap().iter().zip(case[name].as_array().unwrap()).enumerate()
    {
        optimizer.zero_grad();
        for (i, p) in params.iter().enumerate() {
            // Σ p·g has gradient g with respect to p.
            let g = Tensor::from_vec(floats(&grads[i]), &shape(&case["shapes"][i]), device).unwrap();
            p.mul(&Var::constant(g)).unwrap().sum_all().unwrap().backward().unwrap();
        }
        optimizer.step().unwrap();
        for (i, p) in params.iter().enumerate() {
            let (got, want) = (p.value().to_vec().unwrap(), floats(&want[i]));
            assert!(
                close(&got, &want, 2e-5),
                "{name} step {} parameter {i} on {device}: {got:?} vs {want:?}",
                step + 1
            );
        }
    }
}

#[test]
fn each_group_trains_with_its_own_rate_and_weight_decay_as_in_pytorch() {
    let mut devices = vec![Device::Cpu];
    devices
        .extend(context_or_skip("each_group_trains_with_its_own_rate_and_weight_decay_as_in_pytorch").map(Device::Gpu));
    for device in &devices {
        // The first group takes the optimizer's settings, the second sets its own.
        follow("sgd", device, |body, head| {
            let groups = vec![ParamGroup::new(body), ParamGroup::new(head).lr(0.01).weight_decay(0.0)];
            Box::new(Sgd::with_groups(groups, 0.1).momentum(0.9).weight_decay(0.05))
        });
        follow("adam", device, |body, head| {
            let groups = vec![ParamGroup::new(body), ParamGroup::new(head).lr(0.001).weight_decay(0.1)];
            Box::new(Adam::with_groups(groups, 0.01))
        });
        follow("adamw", device, |body, head| {
            let groups = vec![ParamGroup::new(body).weight_decay(0.0), ParamGroup::new(head).lr(0.001)];
            Box::new(Adam::adamw_with_groups(groups, 0.01).weight_decay(0.1))
        });
    }
}

fn two_groups(first_lr: f32, second_lr: f32, adam: bool) -> Box<dyn Optimizer> {
    let parameter = || Var::parameter(Tensor::zeros(&[1], &Device::Cpu).unwrap());
    let groups = vec![ParamGroup::new(vec![parameter()]), ParamGroup::new(vec![parameter()]).lr(second_lr)];
    if adam {
        Box::new(Adam::with_groups(groups, first_lr))
    } else {
        Box::new(Sgd::with_groups(groups, first_lr).momentum(0.9))
    }
}

/// Each group's rate before each of `steps` steps, and the first group's β1 (Adam).
fn schedule(
    optimizer: &mut dyn Optimizer,
    steps: usize,
    mut step: impl FnMut(&mut dyn Optimizer, usize),
) -> Vec<Vec<f32>> {
    (0..steps)
        .map(|i| {
            let lrs = optimizer.lrs();
            step(optimizer, i);
            lrs
        })
        .collect()
}

fn assert_rates(name: &str, got: &[Vec<f32>]) {
    let want: Vec<Vec<f32>> = fixture()[name]["lr"].as_array().unwrap().iter().map(floats).collect();
    assert_eq!(got.len(), want.len(), "{name}");
    for (step, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(close(g, w, 1e-5), "{name} step {step}: {g:?} vs {w:?}");
    }
}

#[test]
fn schedulers_drive_every_group_from_its_own_rate() {
    let mut sgd = two_groups(0.1, 0.01, false);
    let mut step_lr = StepLr::new(sgd.as_ref(), 2, 0.5);
    assert_rates("step", &schedule(sgd.as_mut(), 7, |o, _| step_lr.step(o)));

    let mut sgd = two_groups(0.1, 0.01, false);
    let mut cosine = CosineAnnealingLr::new(sgd.as_ref(), 5, 0.001);
    assert_rates("cosine", &schedule(sgd.as_mut(), 9, |o, _| cosine.step(o)));

    let mut plateau = ReduceLrOnPlateau::new(0.5, 1, 0).min_lr(0.004);
    let metrics = floats(&fixture()["plateau_metrics"]);
    let mut sgd = two_groups(0.1, 0.01, false);
    assert_rates(
        "plateau",
        &schedule(sgd.as_mut(), 10, |o, i| {
            plateau.observe(metrics[i]);
            plateau.step(o)
        }),
    );

    let parameter = || Var::parameter(Tensor::zeros(&[1], &Device::Cpu).unwrap());
    let groups = vec![ParamGroup::new(vec![parameter()]), ParamGroup::new(vec![parameter()]).lr(0.002)];
    let mut adam = Adam::with_groups(groups, 0.01);
    let mut one_cycle = OneCycleLr::per_group(&mut adam, &[0.1, 0.02], 12).unwrap();
    let (mut rates, mut betas) = (Vec::new(), Vec::new());
    for _ in 0..12 {
        rates.push(adam.lrs());
        betas.push(adam.beta1());
        one_cycle.step(&mut adam);
    }
    assert_rates("one_cycle", &rates);
    assert!(close(&betas, &floats(&fixture()["one_cycle"]["beta1"]), 1e-5), "β1 {betas:?}");
}

#[test]
fn group_settings_that_do_not_fit_are_errors() {
    let mut sgd = two_groups(0.1, 0.01, false);
    let err = sgd.set_lrs(&[0.1]).unwrap_err().to_string();
    assert!(err.contains("1 learning rates for 2 parameter groups"), "{err}");
    assert_eq!(sgd.lrs(), [0.1, 0.01], "unchanged");
    let err = OneCycleLr::per_group(sgd.as_mut(), &[0.1, 0.1, 0.1], 10).err().unwrap().to_string();
    assert!(err.contains("3 max_lr values for 2 parameter groups"), "{err}");
    // A state saved by a one-group optimizer does not load into a two-group one.
    let one_group = Sgd::new(vec![Var::parameter(Tensor::zeros(&[1], &Device::Cpu).unwrap())], 0.1);
    let mut state = one_group.state().unwrap();
    state.insert("1.momentum_buffer".into(), Tensor::zeros(&[1], &Device::Cpu).unwrap());
    let err = sgd.load_state(&state).unwrap_err().to_string();
    assert!(err.contains("'lr' has 1 rates for 2 parameter groups"), "{err}");
    // set_lr still sets every group.
    sgd.set_lr(0.5);
    assert_eq!(sgd.lrs(), [0.5, 0.5]);
}
