//! The layer ops (max pooling, …): GPU against the CPU reference over random shapes and
//! parameters, CPU gradients against central differences, known values, bad input.

use kiln_tensor::{Device, Pool2d, Tensor};
use kiln_wgsl::testing::context_or_skip;
use proptest::prelude::*;

fn gpu(test: &str) -> Option<Device> {
    context_or_skip(test).map(Device::Gpu)
}

fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance * y.abs().max(1.0))
}

/// d Σ(f(x)·r) / dx by central differences, for a function of one CPU tensor.
fn numerical_grad(x: &Tensor, r: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Vec<f32> {
    let values = x.to_vec().unwrap();
    let objective = |v: Vec<f32>| -> f64 {
        let out = f(&Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap());
        out.mul(r).unwrap().to_vec().unwrap().iter().map(|&v| v as f64).sum()
    };
    let h = 1e-3f32;
    (0..values.len())
        .map(|i| {
            let (mut up, mut down) = (values.clone(), values.clone());
            up[i] += h;
            down[i] -= h;
            ((objective(up) - objective(down)) / (2.0 * h as f64)) as f32
        })
        .collect()
}

fn pool_case() -> impl Strategy<Value = (Vec<usize>, Pool2d)> {
    (1..3usize, 1..4usize, 1..13usize, 1..13usize, 1..5usize, 1..4usize, 0..3usize).prop_filter_map(
        "the window must fit",
        |(n, c, h, w, k, s, p)| {
            let p = p.min(k / 2);
            (h + 2 * p >= k && w + 2 * p >= k).then_some((vec![n, c, h, w], Pool2d::new(k).stride(s).padding(p)))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn max_pool_matches((shape, pool) in pool_case(), seed in any::<u64>(), coarse in any::<bool>()) {
        let Some(gpu) = gpu("max_pool_matches") else { return Ok(()) };
        // Coarse values make ties common, so the tie rule is exercised too.
        let x = Tensor::randn(&shape, seed, &Device::Cpu).unwrap();
        let x = if coarse { x.mul_scalar(2.0).unwrap().relu().unwrap().minimum_scalar(1.0).unwrap() } else { x };
        let (y, at) = x.max_pool2d(&pool).unwrap();
        let (yg, atg) = x.to(&gpu).unwrap().max_pool2d(&pool).unwrap();
        prop_assert_eq!(yg.to_vec().unwrap(), y.to_vec().unwrap());
        prop_assert_eq!(atg.to_vec_i32().unwrap(), at.to_vec_i32().unwrap());
        let grad_out = Tensor::randn(y.shape(), seed ^ 9, &Device::Cpu).unwrap();
        let grad = grad_out.max_pool2d_backward(&at, &shape, &pool).unwrap();
        let grad_gpu = grad_out.to(&gpu).unwrap().max_pool2d_backward(&atg, &shape, &pool).unwrap();
        prop_assert!(close(&grad_gpu.to_vec().unwrap(), &grad.to_vec().unwrap(), 1e-6));
    }
}

#[test]
fn max_pool_known_values_and_ties() {
    let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4], &Device::Cpu).unwrap();
    let (y, at) = x.max_pool2d(&Pool2d::new(2)).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    assert_eq!(at.to_vec_i32().unwrap(), vec![5, 7, 13, 15]);
    let (y, _) = x.max_pool2d(&Pool2d::new(3).stride(2).padding(1)).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    let flat = Tensor::ones(&[1, 1, 2, 2], &Device::Cpu).unwrap();
    assert_eq!(flat.max_pool2d(&Pool2d::new(2)).unwrap().1.to_vec_i32().unwrap(), vec![0], "first of equals");
}

#[test]
fn max_pool_gradient_matches_central_differences() {
    // Distinct values 0.1 apart, so no perturbation can change which element is a maximum.
    let order = kiln_tensor::random::permutation(120, 4);
    let x = Tensor::from_vec(order.iter().map(|&i| i as f32 * 0.1).collect(), &[2, 2, 5, 6], &Device::Cpu).unwrap();
    for pool in [Pool2d::new(2), Pool2d::new(3).stride(1).padding(1), Pool2d::new(3).stride(2)] {
        let (y, at) = x.max_pool2d(&pool).unwrap();
        let r = Tensor::randn(y.shape(), 5, &Device::Cpu).unwrap();
        let grad = r.max_pool2d_backward(&at, x.shape(), &pool).unwrap().to_vec().unwrap();
        let numeric = numerical_grad(&x, &r, |t| t.max_pool2d(&pool).unwrap().0);
        assert!(close(&grad, &numeric, 1e-2), "{pool:?}");
    }
}

#[test]
fn max_pool_input_errors() {
    let x = Tensor::zeros(&[1, 1, 4, 4], &Device::Cpu).unwrap();
    assert!(Tensor::zeros(&[4, 4], &Device::Cpu).unwrap().max_pool2d(&Pool2d::new(2)).is_err());
    assert!(x.max_pool2d(&Pool2d::new(0)).is_err());
    assert!(x.max_pool2d(&Pool2d::new(2).stride(0)).is_err());
    assert!(x.max_pool2d(&Pool2d::new(2).padding(2)).unwrap_err().to_string().contains("half the kernel"));
    assert!(x.max_pool2d(&Pool2d::new(5)).unwrap_err().to_string().contains("does not fit"));
    let (y, at) = x.max_pool2d(&Pool2d::new(2)).unwrap();
    assert!(y.max_pool2d_backward(&at, &[1, 1, 6, 6], &Pool2d::new(2)).is_err());
    assert!(y.max_pool2d_backward(&y, &[1, 1, 4, 4], &Pool2d::new(2)).is_err(), "positions must be i32");
}
