//! Freezing for fine-tuning: a frozen parameter gets no gradient, a frozen body on the
//! data records nothing, a frozen layer in the middle passes gradients through without
//! computing its own, and an optimizer holding frozen parameters leaves them bit-identical.

mod common;

use std::sync::Mutex;

use common::{asl_mlp, mini_cnn};
use kiln_autograd::{AutogradError, Var};
use kiln_nn::{CrossEntropyLoss, Module, Sequential};
use kiln_optim::{Adam, Optimizer};
use kiln_tensor::{Device, Tensor, profile};
use kiln_wgsl::testing::context_or_skip;

/// The op profile counts every thread's ops: tests that read it take turns.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn loss(model: &mut Sequential, images: &Tensor, labels: &Tensor) -> Var {
    let logits = model.forward(&Var::constant(images.clone())).unwrap();
    CrossEntropyLoss::new().forward(&logits, labels).unwrap()
}

fn values(model: &Sequential) -> Vec<(String, Vec<f32>)> {
    model.parameters().into_iter().map(|(name, p)| (name, p.value().to_vec().unwrap())).collect()
}

#[test]
fn a_frozen_body_records_nothing_and_the_optimizer_leaves_it_as_it_was() {
    let _turn = turn();
    let mut devices = vec![Device::Cpu];
    devices.extend(context_or_skip("a_frozen_body_records_nothing").map(Device::Gpu));
    for device in devices {
        let images = Tensor::rand(&[4, 1, 28, 28], 1, &device).unwrap();
        let labels = Tensor::from_vec_i32(vec![0, 3, 7, 9], &[4], &device).unwrap();
        let mut model = mini_cnn(0);
        model.to_device(&device).unwrap();
        let everything = loss(&mut model, &images, &labels).recorded_ops().unwrap();

        // Conv2d and BatchNorm2d frozen: the body on the data needs no gradient at all.
        model.get_mut(0).unwrap().freeze().unwrap();
        model.get_mut(1).unwrap().freeze().unwrap();
        let frozen: Vec<String> =
            model.parameters().into_iter().filter(|(_, p)| !p.requires_grad()).map(|(n, _)| n).collect();
        assert_eq!(frozen, ["0.weight", "0.bias", "1.weight", "1.bias"], "{device:?}");
        let step_loss = loss(&mut model, &images, &labels);
        assert_eq!(step_loss.recorded_ops().unwrap(), 2, "{device:?}: only the head's linear layer and the loss");
        assert!(everything > 2, "{device:?}: {everything} ops unfrozen");

        let before = values(&model);
        let mut optimizer = Adam::new(model.parameters().into_iter().map(|(_, p)| p).collect(), 1e-2);
        for _ in 0..3 {
            optimizer.zero_grad();
            loss(&mut model, &images, &labels).backward().unwrap();
            for (name, p) in model.parameters() {
                assert_eq!(p.grad().is_some(), !frozen.contains(&name), "{device:?}: {name}");
            }
            optimizer.step().unwrap();
        }
        for ((name, was), (_, now)) in before.iter().zip(values(&model)) {
            let same = was.iter().zip(&now).all(|(a, b)| a.to_bits() == b.to_bits());
            assert_eq!(same, frozen.contains(name), "{device:?}: {name} changed: {}", !same);
        }

        model.unfreeze().unwrap();
        assert_eq!(loss(&mut model, &images, &labels).recorded_ops().unwrap(), everything, "{device:?}");
    }
}

/// A frozen middle layer of the ASL MLP: the first layer's gradient is exactly the
/// unfrozen model's (the gradient passes through), the frozen layer's is never computed.
#[test]
fn a_frozen_middle_layer_passes_gradients_through_without_computing_its_own() {
    let _turn = turn();
    let images = Tensor::rand(&[8, 1, 28, 28], 2, &Device::Cpu).unwrap();
    let labels = Tensor::from_vec_i32((0..8).collect(), &[8], &Device::Cpu).unwrap();
    let grads = |freeze_middle: bool| {
        let mut model = asl_mlp(0);
        if freeze_middle {
            model.get_mut(3).unwrap().freeze().unwrap();
        }
        profile::enable(true);
        profile::take();
        loss(&mut model, &images, &labels).backward().unwrap();
        let recorded = profile::take();
        profile::enable(false);
        let weight_grads: u64 = recorded
            .phases
            .iter()
            .flat_map(|phase| &phase.ops)
            .filter(|op| op.name == "linear_parameter_backward")
            .map(|op| op.calls)
            .sum();
        let by_name: Vec<(String, Option<Vec<f32>>)> =
            model.parameters().into_iter().map(|(n, p)| (n, p.grad().map(|g| g.to_vec().unwrap()))).collect();
        (by_name, weight_grads)
    };
    let (all, all_weight_grads) = grads(false);
    let (frozen, frozen_weight_grads) = grads(true);
    assert_eq!(model_names(&all), ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"]);
    for ((name, want), (_, got)) in all.iter().zip(&frozen) {
        if name.starts_with("3.") {
            assert!(got.is_none(), "{name}: a frozen parameter got a gradient");
        } else {
            assert_eq!(got, want, "{name}");
        }
    }
    assert_eq!((all_weight_grads, frozen_weight_grads), (3, 2), "the frozen layer's weight gradient was computed");
}

fn model_names(grads: &[(String, Option<Vec<f32>>)]) -> Vec<&str> {
    grads.iter().map(|(name, _)| name.as_str()).collect()
}

#[test]
fn only_leaves_switch_requires_grad() {
    let x = Var::parameter(Tensor::ones(&[2, 2], &Device::Cpu).unwrap());
    let y = x.mul_scalar(3.0).unwrap();
    assert!(matches!(y.set_requires_grad(false), Err(AutogradError::RequiresGradOfOp)));
    let data = Var::constant(Tensor::ones(&[2], &Device::Cpu).unwrap());
    data.set_requires_grad(true).unwrap();
    data.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(data.grad().unwrap().to_vec().unwrap(), [3.0; 2], "an input that asks for its gradient");
}
