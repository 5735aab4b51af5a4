//! Gradients from `backward` against central differences (composite expressions and a small
//! CNN with every layer type), the same gradients on the GPU as on the CPU, and the rules:
//! accumulation, zero_grad, detach, no_grad, a consumed graph, a non-scalar loss.

use kiln_autograd::{AutogradError, Var, no_grad};
use kiln_tensor::{BatchNormConfig, Conv2d, Device, Pool2d, Reduction, Tensor};
use kiln_wgsl::testing::context_or_skip;

mod common;
use common::{check_gradients, close, randn};

#[test]
fn composite_expressions() {
    let x = Var::constant(randn(&[4, 3], 1));
    let r = Var::constant(randn(&[4, 2], 2));
    check_gradients(&[randn(&[3, 2], 3), randn(&[2], 4)], |p| {
        // Σ relu(x·W + b) · r − 0.5·mean(W²), with the bias broadcast over rows.
        let hidden = x.matmul(&p[0]).unwrap().add(&p[1]).unwrap().relu().unwrap();
        let fit = hidden.mul(&r).unwrap().sum_all().unwrap();
        fit.sub(&p[0].mul(&p[0]).unwrap().mean_all().unwrap().mul_scalar(0.5).unwrap()).unwrap()
    });
}

/// The ASL CNN's layer types in miniature: conv → batch norm → ReLU → max pool → dropout →
/// flatten → linear → cross-entropy.
fn small_cnn(p: &[Var], x: &Var, labels: &Tensor, training: bool) -> Var {
    let (mut mean, mut var) =
        (Tensor::zeros(&[3], &x.value().device()).unwrap(), Tensor::ones(&[3], &x.value().device()).unwrap());
    let config = BatchNormConfig::default();
    let h = x.conv2d(&p[0], Some(&p[1]), &Conv2d::default().padding(1)).unwrap();
    let h = h.batch_norm2d(Some(&p[2]), Some(&p[3]), &mut mean, &mut var, &config, training).unwrap();
    let h = h.relu().unwrap().max_pool2d(&Pool2d::new(2)).unwrap().dropout(0.25, 9, training).unwrap();
    let logits = h.flatten(1).unwrap().linear(&p[4], Some(&p[5])).unwrap();
    logits.cross_entropy(labels, None, Reduction::Mean).unwrap()
}

fn cnn_params(device: &Device) -> Vec<Tensor> {
    [vec![3, 2, 3, 3], vec![3], vec![3], vec![3], vec![4, 12], vec![4]]
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            Tensor::randn(shape, 10 + i as u64, &Device::Cpu).unwrap().mul_scalar(0.5).unwrap().to(device).unwrap()
        })
        .collect()
}

#[test]
fn a_small_cnn_in_training_and_evaluation() {
    let x = Var::constant(randn(&[3, 2, 4, 4], 5));
    let labels = Tensor::from_vec_i32(vec![0, 3, 1], &[3], &Device::Cpu).unwrap();
    for training in [true, false] {
        check_gradients(&cnn_params(&Device::Cpu), |p| small_cnn(p, &x, &labels, training));
    }
}

#[test]
fn the_gpu_gives_the_cpus_gradients() {
    let Some(ctx) = context_or_skip("the_gpu_gives_the_cpus_gradients") else { return };
    let gpu = Device::Gpu(ctx);
    let grads = |device: &Device| {
        let params: Vec<Var> = cnn_params(device).into_iter().map(Var::parameter).collect();
        let x = Var::constant(randn(&[3, 2, 4, 4], 5).to(device).unwrap());
        let labels = Tensor::from_vec_i32(vec![0, 3, 1], &[3], device).unwrap();
        let loss = small_cnn(&params, &x, &labels, true);
        loss.backward().unwrap();
        let mut all = loss.value().to_vec().unwrap();
        for p in &params {
            all.extend(p.grad().unwrap().to_vec().unwrap());
        }
        all
    };
    assert!(close(&grads(&gpu), &grads(&Device::Cpu), 1e-4));
}

/// conv → ReLU → batch norm → ReLU → flatten → linear → ReLU → linear → cross-entropy, with
/// each layer-then-ReLU fused into one op or composed of two.
fn relu_net(p: &[Var], x: &Var, labels: &Tensor, fused: bool) -> Var {
    let device = x.value().device();
    let (mut mean, mut var) = (Tensor::zeros(&[3], &device).unwrap(), Tensor::ones(&[3], &device).unwrap());
    let conv = Conv2d::default().padding(1);
    let h = if fused {
        let h = x.conv2d_relu(&p[0], Some(&p[1]), &conv).unwrap();
        let config = BatchNormConfig { relu: true, ..BatchNormConfig::default() };
        let h = h.batch_norm2d(Some(&p[2]), Some(&p[3]), &mut mean, &mut var, &config, true).unwrap();
        h.flatten(1).unwrap().linear_relu(&p[4], Some(&p[5])).unwrap()
    } else {
        let h = x.conv2d(&p[0], Some(&p[1]), &conv).unwrap().relu().unwrap();
        let config = BatchNormConfig::default();
        let h = h.batch_norm2d(Some(&p[2]), Some(&p[3]), &mut mean, &mut var, &config, true).unwrap().relu().unwrap();
        h.flatten(1).unwrap().linear(&p[4], Some(&p[5])).unwrap().relu().unwrap()
    };
    h.linear(&p[6], Some(&p[7])).unwrap().cross_entropy(labels, None, Reduction::Mean).unwrap()
}

fn relu_net_params(device: &Device) -> Vec<Tensor> {
    [vec![3, 2, 3, 3], vec![3], vec![3], vec![3], vec![5, 48], vec![5], vec![4, 5], vec![4]]
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            Tensor::randn(shape, 30 + i as u64, &Device::Cpu).unwrap().mul_scalar(0.5).unwrap().to(device).unwrap()
        })
        .collect()
}

#[test]
fn fused_relus_give_the_gradients_of_their_parts() {
    let labels = Tensor::from_vec_i32(vec![0, 3, 1], &[3], &Device::Cpu).unwrap();
    let x = Var::constant(randn(&[3, 2, 4, 4], 6));
    check_gradients(&relu_net_params(&Device::Cpu), |p| relu_net(p, &x, &labels, true));
    let grads = |device: &Device, fused: bool| {
        let params: Vec<Var> = relu_net_params(device).into_iter().map(Var::parameter).collect();
        let x = Var::constant(randn(&[3, 2, 4, 4], 6).to(device).unwrap());
        let loss = relu_net(&params, &x, &labels.to(device).unwrap(), fused);
        loss.backward().unwrap();
        let mut all = loss.value().to_vec().unwrap();
        for p in &params {
            all.extend(p.grad().unwrap().to_vec().unwrap());
        }
        all
    };
    let cpu = grads(&Device::Cpu, true);
    assert_eq!(cpu, grads(&Device::Cpu, false), "on the CPU the fused ops compute what their parts do");
    let Some(ctx) = context_or_skip("fused_relus_give_the_gradients_of_their_parts") else { return };
    let gpu = Device::Gpu(ctx);
    assert!(close(&grads(&gpu, true), &cpu, 1e-4));
    assert!(close(&grads(&gpu, false), &cpu, 1e-4));
}

#[test]
fn several_leaves_update_at_once_each_once() {
    let a = Var::parameter(Tensor::from_vec(vec![1.0], &[1], &Device::Cpu).unwrap());
    let b = Var::parameter(Tensor::from_vec(vec![2.0, 3.0], &[2], &Device::Cpu).unwrap());
    Var::update_all(&[&a, &b], |values| {
        for value in values.iter_mut() {
            **value = value.mul_scalar(10.0)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!((a.value().to_vec().unwrap(), b.value().to_vec().unwrap()), (vec![10.0], vec![20.0, 30.0]));
    assert!(matches!(Var::update_all(&[&a, &a], |_| Ok(())), Err(AutogradError::DuplicateUpdate)));
    let hidden = a.relu().unwrap();
    assert!(matches!(Var::update_all(&[&a, &hidden], |_| Ok(())), Err(AutogradError::NotALeaf)));
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let w = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2], &Device::Cpu).unwrap());
    let x = Var::constant(Tensor::from_vec(vec![3.0, 5.0], &[2], &Device::Cpu).unwrap());
    for _ in 0..2 {
        w.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![6.0, 10.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
    // A parameter used twice in one expression gets both contributions.
    w.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![2.0, 4.0]);
}

#[test]
fn detach_and_no_grad_stop_the_gradient() {
    let w = Var::parameter(Tensor::ones(&[2], &Device::Cpu).unwrap());
    let frozen = w.detach();
    assert!(!frozen.requires_grad() && frozen.is_leaf());
    let loss = w.mul(&frozen).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![1.0, 1.0], "only the tracked factor contributes");

    let untracked = no_grad(|| w.mul(&w).unwrap().sum_all().unwrap());
    assert!(!untracked.requires_grad() && untracked.is_leaf(), "nothing recorded under no_grad");
    assert!(matches!(untracked.backward(), Err(AutogradError::NoGradient)));
    assert!(kiln_autograd::is_grad_enabled(), "recording resumes after no_grad");
}

#[test]
fn a_graph_is_differentiated_once() {
    let w = Var::parameter(Tensor::ones(&[2], &Device::Cpu).unwrap());
    let hidden = w.relu().unwrap();
    let loss = hidden.sum_all().unwrap();
    loss.backward().unwrap();
    assert!(matches!(loss.backward(), Err(AutogradError::GraphConsumed)));
    assert!(matches!(hidden.sum_all().unwrap().backward(), Err(AutogradError::GraphConsumed)));
    let not_scalar = w.mul_scalar(2.0).unwrap();
    assert!(matches!(not_scalar.backward(), Err(AutogradError::NotScalar(_))));
}

#[test]
fn leaves_update_in_place_and_recorded_graphs_keep_their_values() {
    let w = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2], &Device::Cpu).unwrap());
    let x = Var::constant(Tensor::from_vec(vec![3.0, 4.0], &[2], &Device::Cpu).unwrap());
    let loss = x.mul(&w).unwrap().sum_all().unwrap();
    w.update(|t| {
        *t = t.add_scalar(10.0)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(w.value().to_vec().unwrap(), vec![11.0, 12.0]);
    loss.backward().unwrap();
    // The recorded product used x, whose value did not change; w's gradient is x.
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![3.0, 4.0]);
    assert_eq!(loss.value().to_scalar().unwrap(), 11.0, "the loss was computed before the update");
    let hidden = w.relu().unwrap();
    assert!(matches!(hidden.update(|_| Ok(())), Err(AutogradError::NotALeaf)));
}

/// A layer whose input wants no gradient (a first layer, fed the data) skips the product
/// that would make one; with an input that does, the product runs. Counted by the profiler.
#[test]
fn a_first_layer_computes_no_input_gradient() {
    use kiln_tensor::profile;
    let x = Tensor::randn(&[4, 6], 1, &Device::Cpu).unwrap();
    let (w, b) = (
        Var::parameter(Tensor::randn(&[3, 6], 2, &Device::Cpu).unwrap()),
        Var::parameter(Tensor::zeros(&[3], &Device::Cpu).unwrap()),
    );
    let backward_ops = |input: &Var| {
        let loss = input.linear_relu(&w, Some(&b)).unwrap().sum_all().unwrap();
        profile::enable(true);
        profile::take();
        profile::set_phase("backward");
        loss.backward().unwrap();
        let recorded = profile::take();
        profile::enable(false);
        let phase = recorded.phase("backward").expect("ops ran").ops.clone();
        phase.into_iter().map(|op| op.name).collect::<Vec<_>>()
    };
    let data = backward_ops(&Var::constant(x.clone()));
    assert!(data.contains(&"linear_parameter_backward") && !data.contains(&"matmul"), "{data:?}");
    let parameter = Var::parameter(x);
    let with_input = backward_ops(&parameter);
    assert!(with_input.contains(&"matmul"), "{with_input:?}");
    assert_eq!(parameter.grad().unwrap().shape(), &[4, 6]);
}
