//! Each differentiable op: `backward` against central differences on the CPU, and the GPU's
//! loss and gradients against the CPU's. Every loss weighs the op's output with fixed random
//! values, so each output element's gradient matters.

mod common;

use common::{check_op, randn};
use kiln_autograd::Var;
use kiln_tensor::{Device, Pool2d, Reduction, Tensor};

/// Σ output · r for fixed random `r` shaped as the output, on the output's device.
fn weighed(output: Var, seed: u64) -> Var {
    let value = output.value();
    let r = Var::constant(randn(value.shape(), seed).to(&value.device()).unwrap());
    output.mul(&r).unwrap().sum_all().unwrap()
}

/// Values at least 0.5 away from zero, keeping their signs: divisors.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let values = randn(shape, seed).to_vec().unwrap().into_iter().map(|v| v + 0.5f32.copysign(v)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn positive(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, seed).abs().unwrap().add_scalar(0.5).unwrap()
}

#[test]
fn elementwise_ops() {
    let test = "elementwise_ops";
    // Quotients broadcast both ways: [3, 4] / [4] and [4] / [3, 4].
    check_op(test, &[randn(&[3, 4], 1), away_from_zero(&[4], 2)], |p, _| weighed(p[0].div(&p[1]).unwrap(), 3));
    check_op(test, &[away_from_zero(&[4], 4), away_from_zero(&[3, 4], 5)], |p, _| weighed(p[0].div(&p[1]).unwrap(), 6));
    check_op(test, &[randn(&[2, 5], 7)], |p, _| weighed(p[0].neg().unwrap().div_scalar(4.0).unwrap(), 8));
    check_op(test, &[randn(&[2, 5], 9)], |p, _| weighed(p[0].exp().unwrap(), 10));
    check_op(test, &[positive(&[2, 5], 11)], |p, _| weighed(p[0].log().unwrap(), 12));
    check_op(test, &[positive(&[2, 5], 13)], |p, _| weighed(p[0].sqrt().unwrap(), 14));
    for exponent in [2.5, -1.5, 3.0] {
        check_op(test, &[positive(&[2, 5], 15)], |p, _| weighed(p[0].pow_scalar(exponent).unwrap(), 16));
    }
    check_op(test, &[randn(&[2, 5], 17).mul_scalar(2.0).unwrap()], |p, _| weighed(p[0].sigmoid().unwrap(), 18));
    check_op(test, &[randn(&[2, 5], 19)], |p, _| weighed(p[0].tanh().unwrap(), 20));
    check_op(test, &[away_from_zero(&[3, 5], 57)], |p, _| weighed(p[0].leaky_relu(0.1).unwrap(), 58));
    for tanh in [false, true] {
        check_op(test, &[randn(&[3, 5], 59).mul_scalar(2.0).unwrap()], |p, _| weighed(p[0].gelu(tanh).unwrap(), 60));
    }
}

#[test]
fn reductions_along_an_axis() {
    let test = "reductions_along_an_axis";
    for (axis, keepdim) in [(0, false), (1, true), (-1, false), (-3, true)] {
        check_op(test, &[randn(&[3, 4, 5], 21)], |p, _| weighed(p[0].sum(axis, keepdim).unwrap(), 22));
        check_op(test, &[randn(&[3, 4, 5], 23)], |p, _| weighed(p[0].mean(axis, keepdim).unwrap(), 24));
        // Distinct values 0.1 apart: one maximum per row, and central differences (±0.01) that
        // never move it to another element.
        let spread: Vec<f32> = (0..60).map(|i| (i * 37 % 60) as f32 * 0.1 - 3.0).collect();
        let x = Tensor::from_vec(spread, &[3, 4, 5], &Device::Cpu).unwrap();
        check_op(test, &[x], |p, _| weighed(p[0].max(axis, keepdim).unwrap(), 26));
    }
    for axis in [0, -1] {
        check_op(test, &[randn(&[4, 6], 27)], |p, _| weighed(p[0].softmax(axis).unwrap(), 28));
        check_op(test, &[randn(&[4, 6], 29)], |p, _| weighed(p[0].log_softmax(axis).unwrap(), 30));
    }
}

#[test]
fn tied_maxima_share_the_gradient_as_in_torch_amax() {
    for device in devices("tied_maxima_share_the_gradient_as_in_torch_amax") {
        let x = Var::parameter(Tensor::from_vec(vec![1.0, 3.0, 3.0, 0.0, 2.0, 5.0], &[2, 3], &device).unwrap());
        let m = x.max(1, false).unwrap();
        assert_eq!(m.value().to_vec().unwrap(), [3.0, 5.0]);
        m.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec().unwrap(), [0.0, 0.5, 0.5, 0.0, 0.0, 1.0], "on {device}");
    }
}

#[test]
fn layout_ops() {
    let test = "layout_ops";
    check_op(test, &[randn(&[2, 3, 4], 31)], |p, _| weighed(p[0].view(&[6, 4]).unwrap(), 32));
    check_op(test, &[randn(&[2, 3, 4], 33)], |p, _| weighed(p[0].permute(&[2, 0, 1]).unwrap(), 34));
    check_op(test, &[randn(&[2, 3, 4], 35)], |p, _| weighed(p[0].transpose(0, -1).unwrap(), 36));
}

#[test]
fn slicing_and_joining() {
    let test = "slicing_and_joining";
    check_op(test, &[randn(&[3, 5, 2], 41)], |p, _| weighed(p[0].narrow(1, 1, 3).unwrap(), 42));
    check_op(test, &[randn(&[3, 5], 43)], |p, _| weighed(p[0].narrow(-1, 0, 5).unwrap(), 44));
    // Three pieces of different lengths along the middle axis; one value used twice.
    check_op(test, &[randn(&[2, 1, 3], 45), randn(&[2, 4, 3], 46)], |p, _| {
        weighed(Var::cat(&[&p[0], &p[1], &p[0]], 1).unwrap(), 47)
    });
    for axis in [0, 1, 2] {
        check_op(test, &[randn(&[2, 3], 48), randn(&[2, 3], 49)], |p, _| {
            weighed(Var::stack(&[&p[0], &p[1]], axis).unwrap(), 50)
        });
    }
}

#[test]
fn picking_by_index() {
    let test = "picking_by_index";
    // Rows picked with repeats: a repeated row's gradient adds up.
    check_op(test, &[randn(&[4, 3], 51)], |p, _| weighed(p[0].index_select(&[3, 0, 3, 1, 3]).unwrap(), 52));
    for axis in [0, 1] {
        let mut index_shape = vec![3, 4];
        index_shape[axis] = 5;
        let extent = [3, 4][axis];
        let len: usize = index_shape.iter().product();
        let picks = (0..len as i32).map(|i| (i * 7 + axis as i32) % extent).collect();
        let index = Tensor::from_vec_i32(picks, &index_shape, &Device::Cpu).unwrap();
        check_op(test, &[randn(&[3, 4], 53)], |p, device| {
            weighed(p[0].gather(axis as isize, &index.to(device).unwrap()).unwrap(), 54)
        });
    }
}

#[test]
fn bad_joins_are_errors() {
    let (a, b) = (Var::parameter(randn(&[2, 3], 55)), Var::parameter(randn(&[3, 3], 56)));
    assert!(Var::stack(&[], 0).unwrap_err().to_string().contains("needs at least one value"));
    assert!(Var::stack(&[&a, &b], 0).unwrap_err().to_string().contains("must all have one shape"));
    assert!(Var::stack(&[&a], 3).unwrap_err().to_string().contains("axis 3 is out of range"));
    assert!(Var::cat(&[&a, &b], 1).is_err(), "rows differ");
    assert_eq!(Var::cat(&[&a, &b], 0).unwrap().value().shape(), [5, 3]);
}

#[test]
fn average_pooling() {
    let test = "average_pooling";
    for pool in [Pool2d::new(2), Pool2d::new(3).stride(2).padding(1)] {
        check_op(test, &[randn(&[2, 3, 5, 6], 61)], |p, _| weighed(p[0].avg_pool2d(&pool).unwrap(), 62));
    }
    for output in [[1, 1], [2, 4], [6, 7]] {
        check_op(test, &[randn(&[2, 3, 5, 6], 63)], |p, _| weighed(p[0].adaptive_avg_pool2d(output).unwrap(), 64));
    }
}

#[test]
fn batched_matrix_products() {
    let test = "batched_matrix_products";
    // Equal batches, then a plain matrix shared by every batch entry on either side.
    for (a, b) in [(vec![2, 3, 4], vec![2, 4, 5]), (vec![2, 3, 4], vec![4, 5]), (vec![3, 4], vec![2, 4, 5])] {
        check_op(test, &[randn(&a, 37), randn(&b, 38)], |p, _| weighed(p[0].matmul(&p[1]).unwrap(), 39));
    }
}

#[test]
fn bad_axes_are_errors() {
    let x = Var::parameter(randn(&[2, 3], 40));
    for err in [x.sum(2, false).err(), x.mean(-3, true).err(), x.max(5, false).err()] {
        let err = err.expect("an axis past the rank is refused").to_string();
        assert!(err.contains("is out of range for a tensor of rank 2"), "{err}");
    }
}

fn devices(test: &str) -> Vec<Device> {
    // A context of its own, whose launch counter no other test moves.
    let own = |_| kiln_wgsl::GpuContext::new(&kiln_wgsl::AdapterPreference::from_env()).unwrap();
    let mut devices = vec![Device::Cpu];
    devices.extend(kiln_wgsl::testing::context_or_skip(test).map(own).map(Device::Gpu));
    devices
}

/// A loss is what `backward` usually starts from: there its gradient, computed with it,
/// passes on as it is — bit for bit the fused kernel's, and on the GPU with no launch at
/// all (no tensor of ones, no multiplication) — and below the root it scales with the
/// gradient flowing into it. A custom op at the root still gets a gradient of ones.
#[test]
fn a_loss_passes_its_gradient_on_unscaled_at_the_root() {
    let test = "a_loss_passes_its_gradient_on_unscaled_at_the_root";
    // A context of its own, whose launch counter no other test moves.
    let own = |_| kiln_wgsl::GpuContext::new(&kiln_wgsl::AdapterPreference::from_env()).unwrap();
    let mut devices = vec![Device::Cpu];
    devices.extend(kiln_wgsl::testing::context_or_skip(test).map(own).map(Device::Gpu));
    for device in devices {
        let logits = randn(&[4, 5], 1).to(&device).unwrap();
        let labels = Tensor::from_vec_i32(vec![0, 3, 4, 1], &[4], &device).unwrap();
        let (_, fused) = logits.cross_entropy_with_grad(&labels, None, Reduction::Mean).unwrap();
        let fused = fused.to_vec().unwrap();

        let x = Var::parameter(logits.clone());
        let loss = x.cross_entropy(&labels, None, Reduction::Mean).unwrap();
        let launches = |run: &dyn Fn()| match &device {
            Device::Gpu(ctx) => {
                let before = ctx.stats().dispatches;
                run();
                ctx.stats().dispatches - before
            }
            Device::Cpu => {
                run();
                0
            }
        };
        assert_eq!(launches(&|| loss.backward().unwrap()), 0, "{device:?}: the root's backward launched work");
        let bits = |v: Vec<f32>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(x.grad().unwrap().to_vec().unwrap()), bits(fused.clone()), "{device:?}");

        let x = Var::parameter(logits.clone());
        x.cross_entropy(&labels, None, Reduction::Mean).unwrap().mul_scalar(3.0).unwrap().backward().unwrap();
        let tripled: Vec<f32> = fused.iter().map(|g| g * 3.0).collect();
        assert_eq!(bits(x.grad().unwrap().to_vec().unwrap()), bits(tripled), "{device:?}: below the root");

        let x = Var::parameter(Tensor::from_vec(vec![1.5], &[1], &device).unwrap());
        let value = x.value().mul_scalar(2.0).unwrap();
        Var::custom(value, &[&x], |g| Ok(vec![Some(g.mul_scalar(2.0)?)])).backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![2.0], "{device:?}: a custom op's seed");
    }
}
