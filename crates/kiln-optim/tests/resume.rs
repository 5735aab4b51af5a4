//! An optimizer restored from its saved state continues exactly as one never interrupted.

use kiln_autograd::Var;
use kiln_optim::{Adam, Optimizer, OptimizerState, Sgd};
use kiln_tensor::{Device, Tensor};

fn gradient_step(p: &Var, optimizer: &mut dyn Optimizer, step: u64) {
    optimizer.zero_grad();
    let target = Var::constant(Tensor::randn(&[5], step, &Device::Cpu).unwrap());
    p.sub(&target).unwrap().mul(&p.sub(&target).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    optimizer.step().unwrap();
}

fn start() -> Var {
    Var::parameter(Tensor::randn(&[5], 100, &Device::Cpu).unwrap())
}

fn check_resume(make: impl Fn(Vec<Var>) -> Box<dyn Optimizer>) {
    let straight = start();
    let mut optimizer = make(vec![straight.clone()]);
    for step in 0..6 {
        gradient_step(&straight, optimizer.as_mut(), step);
    }
    let resumed = start();
    let mut first = make(vec![resumed.clone()]);
    for step in 0..3 {
        gradient_step(&resumed, first.as_mut(), step);
    }
    let saved: OptimizerState = first.state().unwrap();
    let mut second = make(vec![resumed.clone()]);
    second.load_state(&saved).unwrap();
    for step in 3..6 {
        gradient_step(&resumed, second.as_mut(), step);
    }
    assert_eq!(resumed.value().to_vec().unwrap(), straight.value().to_vec().unwrap());
}

#[test]
fn sgd_and_adam_resume_exactly() {
    check_resume(|p| Box::new(Sgd::new(p, 0.05).momentum(0.9).nesterov(true)));
    check_resume(|p| Box::new(Adam::new(p, 0.05)));
    check_resume(|p| Box::new(Adam::adamw(p, 0.05)));
}

#[test]
fn states_that_do_not_fit_are_refused() {
    let p = start();
    let mut adam = Adam::new(vec![p.clone()], 0.1);
    gradient_step(&p, &mut adam, 0);
    let mut state = adam.state().unwrap();
    let mut other = Adam::new(vec![Var::parameter(Tensor::zeros(&[4], &Device::Cpu).unwrap())], 0.1);
    assert!(other.load_state(&state).unwrap_err().to_string().contains("'0.exp_avg' is [5] but its parameter is [4]"));
    state.insert("7.exp_avg".into(), Tensor::zeros(&[5], &Device::Cpu).unwrap());
    assert!(adam.load_state(&state).unwrap_err().to_string().contains("unexpected '7.exp_avg'"));
    state.remove("7.exp_avg");
    state.remove("lr");
    assert!(adam.load_state(&state).unwrap_err().to_string().contains("no 'lr'"));
    let mut sgd = Sgd::new(vec![p], 0.1);
    assert!(sgd.load_state(&adam.state().unwrap()).is_err(), "an Adam state is not an SGD state");
}

/// Two groups whose rates a schedule has moved: the state carries each group's rate, and a
/// restored optimizer made with the starting rates continues as the uninterrupted one.
#[test]
fn groups_resume_with_their_own_rates() {
    use kiln_optim::ParamGroup;
    let make = |body: &Var, head: &Var| {
        let groups = vec![ParamGroup::new(vec![body.clone()]), ParamGroup::new(vec![head.clone()]).lr(0.01)];
        Adam::with_groups(groups, 0.05)
    };
    let run = |body: &Var, head: &Var, optimizer: &mut Adam, steps: std::ops::Range<u64>| {
        for step in steps {
            gradient_step(body, optimizer, step);
            gradient_step(head, optimizer, step + 10);
            optimizer.set_lrs(&[0.05 / (step + 2) as f32, 0.01 / (step + 2) as f32]).unwrap();
        }
    };
    let (body, head) = (start(), start());
    let mut straight = make(&body, &head);
    run(&body, &head, &mut straight, 0..6);

    let (resumed_body, resumed_head) = (start(), start());
    let mut first = make(&resumed_body, &resumed_head);
    run(&resumed_body, &resumed_head, &mut first, 0..3);
    let mut second = make(&resumed_body, &resumed_head);
    second.load_state(&first.state().unwrap()).unwrap();
    assert_eq!(second.lrs(), first.lrs(), "each group's moved rate");
    run(&resumed_body, &resumed_head, &mut second, 3..6);
    for (resumed, straight) in [(&resumed_body, &body), (&resumed_head, &head)] {
        assert_eq!(resumed.value().to_vec().unwrap(), straight.value().to_vec().unwrap());
    }
}
