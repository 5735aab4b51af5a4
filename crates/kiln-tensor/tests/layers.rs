//! The layer ops (linear, convolution, max and average pooling, batch norm): GPU against the CPU reference over random shapes and
//! parameters, CPU gradients against central differences, known values, bad input.

use kiln_tensor::{BatchNormConfig, BatchNormSaved, Conv2d, Device, Pool2d, Tensor};
use kiln_wgsl::testing::{context_or_skip, contexts_of_each_class};
use proptest::prelude::*;

fn gpu(test: &str) -> Option<Device> {
    context_or_skip(test).map(Device::Gpu)
}

/// The test adapter once per kernel class, for ops with a variant per class.
fn gpu_each_class(test: &str) -> Vec<Device> {
    contexts_of_each_class(test).into_iter().map(Device::Gpu).collect()
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// 2×2 windows with stride 2, the tutorials' pooling, have their own CPU loop; their
    /// GPU backward writes a cell per output, odd sizes' last row and column included.
    #[test]
    fn two_by_two_pooling_matches(n in 1..3usize, c in 1..4usize, h in 2..15usize, w in 2..15usize, seed in any::<u64>()) {
        let Some(gpu) = gpu("two_by_two_pooling_matches") else { return Ok(()) };
        let x = Tensor::randn(&[n, c, h, w], seed, &Device::Cpu).unwrap().relu().unwrap().minimum_scalar(0.5).unwrap();
        let (y, at) = x.max_pool2d(&Pool2d::new(2)).unwrap();
        let (yg, atg) = x.to(&gpu).unwrap().max_pool2d(&Pool2d::new(2)).unwrap();
        prop_assert_eq!(yg.to_vec().unwrap(), y.to_vec().unwrap());
        prop_assert_eq!(atg.to_vec_i32().unwrap(), at.to_vec_i32().unwrap());
        // The GPU's buffers are reused: one filled with garbage first, so a cell left
        // unwritten cannot pass as a zero.
        drop(Tensor::full(&[n, c, h, w], f32::NAN, &gpu).unwrap().to_vec().unwrap());
        let grad_out = Tensor::randn(y.shape(), seed ^ 5, &Device::Cpu).unwrap();
        let grad = grad_out.max_pool2d_backward(&at, x.shape(), &Pool2d::new(2)).unwrap();
        let grad_gpu = grad_out.to(&gpu).unwrap().max_pool2d_backward(&atg, x.shape(), &Pool2d::new(2)).unwrap();
        prop_assert_eq!(grad_gpu.to_vec().unwrap(), grad.to_vec().unwrap());
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Strided windows (padding counted in the divisor) and adaptive ones, forward and back.
    #[test]
    fn average_pooling_matches((shape, pool) in pool_case(), out_h in 1..7usize, out_w in 1..7usize, seed in any::<u64>()) {
        let Some(gpu) = gpu("average_pooling_matches") else { return Ok(()) };
        let x = Tensor::randn(&shape, seed, &Device::Cpu).unwrap();
        let xg = x.to(&gpu).unwrap();
        let y = x.avg_pool2d(&pool).unwrap();
        prop_assert!(close(&xg.avg_pool2d(&pool).unwrap().to_vec().unwrap(), &y.to_vec().unwrap(), 1e-6));
        let grad_out = Tensor::randn(y.shape(), seed ^ 9, &Device::Cpu).unwrap();
        let grad = grad_out.avg_pool2d_backward(&shape, &pool).unwrap();
        let grad_gpu = grad_out.to(&gpu).unwrap().avg_pool2d_backward(&shape, &pool).unwrap();
        prop_assert!(close(&grad_gpu.to_vec().unwrap(), &grad.to_vec().unwrap(), 1e-6));
        let y = x.adaptive_avg_pool2d([out_h, out_w]).unwrap();
        prop_assert!(close(&xg.adaptive_avg_pool2d([out_h, out_w]).unwrap().to_vec().unwrap(), &y.to_vec().unwrap(), 1e-6));
        let grad_out = Tensor::randn(y.shape(), seed ^ 10, &Device::Cpu).unwrap();
        let grad = grad_out.adaptive_avg_pool2d_backward(&shape).unwrap();
        let grad_gpu = grad_out.to(&gpu).unwrap().adaptive_avg_pool2d_backward(&shape).unwrap();
        prop_assert!(close(&grad_gpu.to_vec().unwrap(), &grad.to_vec().unwrap(), 1e-6));
    }
}

#[test]
fn average_pooling_known_values_and_gradients() {
    let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4], &Device::Cpu).unwrap();
    assert_eq!(x.avg_pool2d(&Pool2d::new(2)).unwrap().to_vec().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
    // 3×3 windows, stride 2, padding 1: the corner window holds 0, 1, 4, 5 and five zeros.
    let padded = x.avg_pool2d(&Pool2d::new(3).stride(2).padding(1)).unwrap().to_vec().unwrap();
    assert_eq!(padded[0], 10.0 / 9.0);
    assert_eq!(x.adaptive_avg_pool2d([1, 1]).unwrap().to_vec().unwrap(), vec![7.5], "global average");
    // 4 rows into 3 windows: rows 0–1, 1–2, 2–3.
    let rows = x.adaptive_avg_pool2d([3, 1]).unwrap().to_vec().unwrap();
    assert_eq!(rows, vec![3.5, 7.5, 11.5]);
    let x = Tensor::randn(&[2, 2, 5, 6], 3, &Device::Cpu).unwrap();
    for pool in [Pool2d::new(2), Pool2d::new(3).stride(2).padding(1)] {
        let r = Tensor::randn(x.avg_pool2d(&pool).unwrap().shape(), 5, &Device::Cpu).unwrap();
        let grad = r.avg_pool2d_backward(x.shape(), &pool).unwrap().to_vec().unwrap();
        assert!(close(&grad, &numerical_grad(&x, &r, |t| t.avg_pool2d(&pool).unwrap()), 1e-2), "{pool:?}");
    }
    for output in [[1, 1], [2, 4], [4, 4], [7, 9]] {
        let r = Tensor::randn(&[2, 2, output[0], output[1]], 6, &Device::Cpu).unwrap();
        let grad = r.adaptive_avg_pool2d_backward(x.shape()).unwrap().to_vec().unwrap();
        assert!(close(&grad, &numerical_grad(&x, &r, |t| t.adaptive_avg_pool2d(output).unwrap()), 1e-2), "{output:?}");
    }
}

#[test]
fn average_pooling_input_errors() {
    let x = Tensor::zeros(&[1, 1, 4, 4], &Device::Cpu).unwrap();
    assert!(x.avg_pool2d(&Pool2d::new(5)).unwrap_err().to_string().contains("does not fit"));
    assert!(Tensor::zeros(&[4, 4], &Device::Cpu).unwrap().adaptive_avg_pool2d([1, 1]).is_err());
    assert!(x.adaptive_avg_pool2d([0, 2]).unwrap_err().to_string().contains("cannot pool a 4×4 plane into 0×2"));
    let y = x.avg_pool2d(&Pool2d::new(2)).unwrap();
    assert!(y.avg_pool2d_backward(&[1, 1, 6, 6], &Pool2d::new(2)).unwrap_err().to_string().contains("output shape"));
}

/// A convolution problem: input shape, weight shape, geometry, bias or not.
fn conv_case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Conv2d, bool)> {
    // Output channels on both sides of the portable kernels' direct-kernel threshold (16)
    // and of the software kernel's 32-channel blocks.
    let out_channels = prop_oneof![1..5usize, Just(16usize), Just(17), Just(25), Just(33)];
    (
        1..3usize,
        1..4usize,
        1..10usize,
        1..10usize,
        out_channels,
        1..4usize,
        1..3usize,
        0..3usize,
        1..3usize,
        any::<bool>(),
    )
        .prop_filter_map("the kernel must fit", |(n, c, h, w, o, k, s, p, d, bias)| {
            let span = d * (k - 1) + 1;
            (h + 2 * p >= span && w + 2 * p >= span).then_some((
                vec![n, c, h, w],
                vec![o, c, k, k],
                Conv2d::default().stride(s).padding(p).dilation(d),
                bias,
            ))
        })
}

/// Convolution straight from its definition, as an independent reference.
fn naive_conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, conv: &Conv2d) -> Vec<f32> {
    let (xs, ws) = (x.to_vec().unwrap(), weight.to_vec().unwrap());
    let bs = bias.map(|b| b.to_vec().unwrap());
    let (&[n, c, h, w], &[o, _, kh, kw]) = (x.shape(), weight.shape()) else { unreachable!() };
    let out = |size: usize, k: usize, d: usize| {
        (size + 2 * conv.padding[d] - conv.dilation[d] * (k - 1) - 1) / conv.stride[d] + 1
    };
    let (oh, ow) = (out(h, kh, 0), out(w, kw, 1));
    let mut y = Vec::new();
    for b in 0..n {
        for f in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bs.as_ref().map_or(0.0, |bs| bs[f]);
                    for ch in 0..c {
                        for a in 0..kh {
                            for e in 0..kw {
                                let hh =
                                    (i * conv.stride[0] + a * conv.dilation[0]) as isize - conv.padding[0] as isize;
                                let ww =
                                    (j * conv.stride[1] + e * conv.dilation[1]) as isize - conv.padding[1] as isize;
                                if hh >= 0 && ww >= 0 && (hh as usize) < h && (ww as usize) < w {
                                    acc += xs[((b * c + ch) * h + hh as usize) * w + ww as usize]
                                        * ws[((f * c + ch) * kh + a) * kw + e];
                                }
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// A convolution's random input, weight and bias on the CPU.
fn conv_inputs(x_shape: &[usize], w_shape: &[usize], seed: u64) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn(x_shape, seed, &Device::Cpu).unwrap();
    let weight = Tensor::randn(w_shape, seed ^ 1, &Device::Cpu).unwrap();
    (x, weight, Tensor::randn(&[w_shape[0]], seed ^ 2, &Device::Cpu).unwrap())
}

/// The CPU convolution against its definition, and the GPU's forward and backward against
/// the CPU's.
fn check_conv(
    gpu: &Device,
    x_shape: &[usize],
    w_shape: &[usize],
    conv: Conv2d,
    with_bias: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let (x, weight, bias) = conv_inputs(x_shape, w_shape, seed);
    let bias = with_bias.then_some(&bias);
    let y = x.conv2d(&weight, bias, &conv).unwrap();
    let patch = (w_shape[1] * w_shape[2] * w_shape[3]) as f32;
    let tolerance = 1e-5 * patch.sqrt() * 4.0;
    prop_assert!(
        close(&y.to_vec().unwrap(), &naive_conv(&x, &weight, bias, &conv), tolerance),
        "CPU against the definition"
    );
    let (xg, wg) = (x.to(gpu).unwrap(), weight.to(gpu).unwrap());
    let bg = bias.map(|b| b.to(gpu).unwrap());
    let yg = xg.conv2d(&wg, bg.as_ref(), &conv).unwrap();
    prop_assert!(close(&yg.to_vec().unwrap(), &y.to_vec().unwrap(), tolerance));

    let grad_out = Tensor::randn(y.shape(), seed ^ 3, &Device::Cpu).unwrap();
    let grads = grad_out.conv2d_backward(&x, &weight, &conv, with_bias).unwrap();
    let grads_gpu = grad_out.to(gpu).unwrap().conv2d_backward(&xg, &wg, &conv, with_bias).unwrap();
    let spatial = (y.shape()[2] * y.shape()[3] * y.shape()[0]) as f32;
    let wide = 1e-5 * spatial.sqrt().max(patch.sqrt()) * 8.0;
    prop_assert!(close(&grads_gpu.input.to_vec().unwrap(), &grads.input.to_vec().unwrap(), wide));
    prop_assert!(close(&grads_gpu.weight.to_vec().unwrap(), &grads.weight.to_vec().unwrap(), wide));
    if with_bias {
        let (b, bg) = (grads.bias.unwrap(), grads_gpu.bias.unwrap());
        prop_assert!(close(&bg.to_vec().unwrap(), &b.to_vec().unwrap(), wide));
    }

    // The fused ReLU: max(conv, 0) on both devices, its backward through the mask.
    let relu = y.relu().unwrap().to_vec().unwrap();
    prop_assert_eq!(&x.conv2d_relu(&weight, bias, &conv).unwrap().to_vec().unwrap(), &relu);
    let (yg_relu, columns) = xg.conv2d_keeping_columns(&wg, bg.as_ref(), &conv, true).unwrap();
    prop_assert!(close(&yg_relu.to_vec().unwrap(), &relu, tolerance));
    let (masked, sums) = grad_out.relu_backward_sum_per_channel(&y.relu().unwrap()).unwrap();
    let (masked_g, sums_g) = grad_out.to(gpu).unwrap().relu_backward_sum_per_channel(&yg_relu).unwrap();
    prop_assert!(close(&masked_g.to_vec().unwrap(), &masked.to_vec().unwrap(), tolerance));
    prop_assert!(close(&sums_g.to_vec().unwrap(), &sums.to_vec().unwrap(), wide));
    // The weight gradient from the forward's column matrix is the one built afresh.
    let masked_g = masked.to(gpu).unwrap();
    let (input, weight_grad, _) =
        masked_g.conv2d_backward_reusing(&xg, &wg, &conv, false, columns.as_ref(), true).unwrap();
    let fresh = masked_g.conv2d_backward(&xg, &wg, &conv, false).unwrap();
    prop_assert_eq!(weight_grad.to_vec().unwrap(), fresh.weight.to_vec().unwrap());
    prop_assert_eq!(input.unwrap().to_vec().unwrap(), fresh.input.to_vec().unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn conv_matches((x_shape, w_shape, conv, with_bias) in conv_case(), seed in any::<u64>()) {
        for gpu in gpu_each_class("conv_matches") {
            check_conv(&gpu, &x_shape, &w_shape, conv, with_bias, seed)?;
        }
    }
}

/// Windows that lie wholly or mostly over the padding: whole rows of the column matrix
/// without a single input pixel.
#[test]
fn convs_mostly_over_padding_match() {
    let gpus = gpu_each_class("convs_mostly_over_padding_match");
    let cases = [
        ([1, 1, 1, 1], [1, 1, 3, 3], Conv2d::default().padding(2)),
        ([2, 2, 1, 3], [2, 2, 3, 3], Conv2d::default().padding(2).stride(2)),
        ([1, 1, 2, 2], [1, 1, 2, 2], Conv2d::default().padding(2).dilation(2)),
        ([1, 2, 3, 1], [3, 2, 3, 3], Conv2d::default().padding(2).stride(3).dilation(2)),
    ];
    for (gpu, (x_shape, w_shape, conv)) in gpus.iter().flat_map(|gpu| cases.iter().map(move |case| (gpu, case))) {
        check_conv(gpu, x_shape, w_shape, *conv, true, 5).unwrap_or_else(|e| panic!("{x_shape:?} {conv:?}: {e}"));
    }
}

#[test]
fn conv_gradients_match_central_differences() {
    for conv in [Conv2d::default(), Conv2d::default().stride(2).padding(1), Conv2d::default().dilation(2).padding(2)] {
        let x = Tensor::randn(&[2, 2, 5, 5], 1, &Device::Cpu).unwrap();
        let weight = Tensor::randn(&[3, 2, 3, 3], 2, &Device::Cpu).unwrap();
        let bias = Tensor::randn(&[3], 3, &Device::Cpu).unwrap();
        let y = x.conv2d(&weight, Some(&bias), &conv).unwrap();
        let r = Tensor::randn(y.shape(), 4, &Device::Cpu).unwrap();
        let grads = r.conv2d_backward(&x, &weight, &conv, true).unwrap();
        let by_input = numerical_grad(&x, &r, |t| t.conv2d(&weight, Some(&bias), &conv).unwrap());
        let by_weight = numerical_grad(&weight, &r, |t| x.conv2d(t, Some(&bias), &conv).unwrap());
        let by_bias = numerical_grad(&bias, &r, |t| x.conv2d(&weight, Some(t), &conv).unwrap());
        assert!(close(&grads.input.to_vec().unwrap(), &by_input, 2e-2), "input, {conv:?}");
        assert!(close(&grads.weight.to_vec().unwrap(), &by_weight, 2e-2), "weight, {conv:?}");
        assert!(close(&grads.bias.unwrap().to_vec().unwrap(), &by_bias, 2e-2), "bias, {conv:?}");
    }
}

#[test]
fn conv_known_values() {
    // A 3×3 ramp convolved with a 2×2 box and bias 1: each output is its window's sum + 1.
    let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3], &Device::Cpu).unwrap();
    let w = Tensor::ones(&[1, 1, 2, 2], &Device::Cpu).unwrap();
    let b = Tensor::ones(&[1], &Device::Cpu).unwrap();
    let y = x.conv2d(&w, Some(&b), &Conv2d::default()).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.to_vec().unwrap(), vec![13.0, 17.0, 25.0, 29.0]);
    let padded = x.conv2d(&w, None, &Conv2d::default().padding(1).stride(2)).unwrap();
    assert_eq!(padded.to_vec().unwrap(), vec![1.0, 5.0, 11.0, 28.0]);
}

#[test]
fn conv_input_errors() {
    let x = Tensor::zeros(&[1, 2, 5, 5], &Device::Cpu).unwrap();
    let conv = Conv2d::default();
    assert!(
        x.conv2d(&Tensor::zeros(&[3, 1, 3, 3], &Device::Cpu).unwrap(), None, &conv)
            .unwrap_err()
            .to_string()
            .contains("input channels")
    );
    assert!(x.conv2d(&Tensor::zeros(&[3, 2, 7, 7], &Device::Cpu).unwrap(), None, &conv).is_err());
    assert!(x.conv2d(&Tensor::zeros(&[3, 2, 3], &Device::Cpu).unwrap(), None, &conv).is_err());
    let w = Tensor::zeros(&[3, 2, 3, 3], &Device::Cpu).unwrap();
    assert!(x.conv2d(&w, Some(&Tensor::zeros(&[2], &Device::Cpu).unwrap()), &conv).is_err());
    assert!(x.conv2d(&w, None, &Conv2d::default().stride(0)).is_err());
    let wrong_grad = Tensor::zeros(&[1, 3, 2, 2], &Device::Cpu).unwrap();
    assert!(wrong_grad.conv2d_backward(&x, &w, &conv, true).is_err());
}

/// Convolution → ReLU → max pooling as one op against the three ops in turn, on the CPU
/// (forward, positions and the input and weight gradients to the bit: the same products
/// and the same scatter, only masked before it rather than after; the bias gradient, summed
/// over the pooled gradient instead of the full one, to rounding), then the GPU's against
/// the CPU's.
fn check_conv_relu_pool(
    gpu: Option<&Device>,
    x_shape: &[usize],
    w_shape: &[usize],
    conv: Conv2d,
    pool: Pool2d,
    with_bias: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let (x, weight, bias) = conv_inputs(x_shape, w_shape, seed);
    let bias = with_bias.then_some(&bias);
    let fused = x.conv2d_relu_max_pool2d(&weight, bias, &conv, &pool).unwrap();
    let convolved = x.conv2d_relu(&weight, bias, &conv).unwrap();
    let (pooled, positions) = convolved.max_pool2d(&pool).unwrap();
    prop_assert_eq!(fused.output().to_vec().unwrap(), pooled.to_vec().unwrap());
    prop_assert_eq!(fused.positions().to_vec_i32().unwrap(), positions.to_vec_i32().unwrap());

    let grad_out = Tensor::randn(pooled.shape(), seed ^ 3, &Device::Cpu).unwrap();
    let (input, weight_grad, bias_grad) =
        grad_out.conv2d_relu_max_pool2d_backward(&fused, &x, &weight, &conv, &pool, with_bias, true).unwrap();
    let full = grad_out.max_pool2d_backward(&positions, convolved.shape(), &pool).unwrap();
    let (masked, sums) = full.relu_backward_sum_per_channel(&convolved).unwrap();
    let unfused = masked.conv2d_backward(&x, &weight, &conv, false).unwrap();
    prop_assert_eq!(input.unwrap().to_vec().unwrap(), unfused.input.to_vec().unwrap());
    prop_assert_eq!(weight_grad.to_vec().unwrap(), unfused.weight.to_vec().unwrap());
    let spatial = (convolved.shape()[0] * convolved.shape()[2] * convolved.shape()[3]) as f32;
    let sum_tolerance = 1e-6 * spatial.sqrt() * 4.0;
    prop_assert_eq!(bias_grad.is_some(), with_bias);
    if let Some(bias_grad) = &bias_grad {
        prop_assert!(close(&bias_grad.to_vec().unwrap(), &sums.to_vec().unwrap(), sum_tolerance));
    }
    // A first layer: no input gradient, the same weight gradient.
    let (none, first_layer, _) =
        grad_out.conv2d_relu_max_pool2d_backward(&fused, &x, &weight, &conv, &pool, with_bias, false).unwrap();
    prop_assert!(none.is_none());
    prop_assert_eq!(first_layer.to_vec().unwrap(), weight_grad.to_vec().unwrap());

    let Some(gpu) = gpu else { return Ok(()) };
    let (xg, wg) = (x.to(gpu).unwrap(), weight.to(gpu).unwrap());
    let bg = bias.map(|b| b.to(gpu).unwrap());
    let on_gpu = xg.conv2d_relu_max_pool2d(&wg, bg.as_ref(), &conv, &pool).unwrap();
    let patch = (w_shape[1] * w_shape[2] * w_shape[3]) as f32;
    let tolerance = 1e-5 * patch.sqrt() * 4.0;
    prop_assert!(close(&on_gpu.output().to_vec().unwrap(), &pooled.to_vec().unwrap(), tolerance));
    let grad_gpu = grad_out.to(gpu).unwrap();
    let (input_g, weight_g, bias_g) =
        grad_gpu.conv2d_relu_max_pool2d_backward(&on_gpu, &xg, &wg, &conv, &pool, with_bias, true).unwrap();
    // A near-tie of a window's maximum, rounded differently on the two devices, may pick
    // another position: rare with random inputs, and the gradients are then compared only
    // when every position agrees.
    let (at_gpu, at_cpu) = (on_gpu.positions().to_vec_i32().unwrap(), positions.to_vec_i32().unwrap());
    let differing = at_gpu.iter().zip(&at_cpu).filter(|(g, c)| g != c).count();
    prop_assert!(differing * 100 <= at_cpu.len(), "{differing} of {} positions differ", at_cpu.len());
    if differing == 0 {
        let wide = 1e-5 * spatial.sqrt().max(patch.sqrt()) * 8.0;
        prop_assert!(close(&input_g.unwrap().to_vec().unwrap(), &unfused.input.to_vec().unwrap(), wide));
        prop_assert!(close(&weight_g.to_vec().unwrap(), &unfused.weight.to_vec().unwrap(), wide));
        if let (Some(b), Some(bg)) = (&bias_grad, &bias_g) {
            prop_assert!(close(&bg.to_vec().unwrap(), &b.to_vec().unwrap(), wide));
        }
    }
    Ok(())
}

/// A pooling whose window fits a convolution's output (from [`conv_case`]).
fn conv_pool_case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Conv2d, Pool2d, bool)> {
    (conv_case(), 1..4usize, 1..3usize, 0..2usize).prop_filter_map(
        "the window must fit the convolution's output",
        |((x_shape, w_shape, conv, bias), k, s, p)| {
            let out = |d: usize| {
                (x_shape[2 + d] + 2 * conv.padding[d] - conv.dilation[d] * (w_shape[2 + d] - 1) - 1) / conv.stride[d]
                    + 1
            };
            let p = p.min(k / 2);
            (out(0) + 2 * p >= k && out(1) + 2 * p >= k).then_some((
                x_shape,
                w_shape,
                conv,
                Pool2d::new(k).stride(s).padding(p),
                bias,
            ))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn conv_relu_pool_matches_the_three_ops(
        (x_shape, w_shape, conv, pool, with_bias) in conv_pool_case(),
        seed in any::<u64>(),
    ) {
        let gpu = gpu("conv_relu_pool_matches_the_three_ops");
        check_conv_relu_pool(gpu.as_ref(), &x_shape, &w_shape, conv, pool, with_bias, seed)?;
    }
}

/// The two tutorials' blocks at their own sizes (a batch of 3 and of 1): the Fashion-MNIST
/// CNN's two 5×5 convolutions and LeNet's, each with 2×2 pooling.
#[test]
fn conv_relu_pool_matches_at_the_tutorials_sizes() {
    let gpu = gpu("conv_relu_pool_matches_at_the_tutorials_sizes");
    let cases = [
        ([3, 1, 28, 28], [32, 1, 5, 5]),
        ([3, 32, 12, 12], [64, 32, 5, 5]),
        ([1, 3, 32, 32], [6, 3, 5, 5]),
        ([1, 6, 14, 14], [16, 6, 5, 5]),
    ];
    for (x_shape, w_shape) in cases {
        check_conv_relu_pool(gpu.as_ref(), &x_shape, &w_shape, Conv2d::default(), Pool2d::new(2), true, 7)
            .unwrap_or_else(|e| panic!("{x_shape:?} {w_shape:?}: {e}"));
    }
}

#[test]
fn conv_relu_pool_input_errors() {
    let x = Tensor::randn(&[2, 2, 6, 6], 1, &Device::Cpu).unwrap();
    let w = Tensor::randn(&[3, 2, 3, 3], 2, &Device::Cpu).unwrap();
    let (conv, pool) = (Conv2d::default(), Pool2d::new(2));
    let saved = x.conv2d_relu_max_pool2d(&w, None, &conv, &pool).unwrap();
    assert_eq!(saved.output().shape(), &[2, 3, 2, 2]);
    let too_big = Pool2d::new(5);
    assert!(x.conv2d_relu_max_pool2d(&w, None, &conv, &too_big).unwrap_err().to_string().contains("window"));
    let wrong_bias = Tensor::zeros(&[2], &Device::Cpu).unwrap();
    assert!(x.conv2d_relu_max_pool2d(&w, Some(&wrong_bias), &conv, &pool).is_err());
    let g = Tensor::ones(&[2, 3, 2, 2], &Device::Cpu).unwrap();
    assert!(g.conv2d_relu_max_pool2d_backward(&saved, &x, &w, &conv, &pool, false, true).is_ok());
    // A gradient of another shape, and a forward pass of another geometry, are refused.
    let wrong_grad = Tensor::ones(&[2, 3, 1, 1], &Device::Cpu).unwrap();
    assert!(wrong_grad.conv2d_relu_max_pool2d_backward(&saved, &x, &w, &conv, &pool, false, true).is_err());
    let padded = Conv2d::default().padding(1);
    let error = g.conv2d_relu_max_pool2d_backward(&saved, &x, &w, &padded, &Pool2d::new(3), false, true).unwrap_err();
    assert!(error.to_string().contains("another op"), "{error}");
}

/// A batch norm problem's tensors: input, weight, bias, running mean and var.
fn batch_norm_inputs(shape: &[usize], seed: u64) -> [Tensor; 5] {
    let c = shape[1];
    [
        Tensor::randn(shape, seed, &Device::Cpu).unwrap().mul_scalar(3.0).unwrap().add_scalar(1.0).unwrap(),
        Tensor::randn(&[c], seed ^ 1, &Device::Cpu).unwrap(),
        Tensor::randn(&[c], seed ^ 2, &Device::Cpu).unwrap(),
        Tensor::randn(&[c], seed ^ 3, &Device::Cpu).unwrap(),
        Tensor::rand(&[c], seed ^ 4, &Device::Cpu).unwrap().add_scalar(0.5).unwrap(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn batch_norm_matches(n in 1..5usize, c in 1..6usize, h in prop_oneof![1..8usize, Just(23)], w in prop_oneof![1..8usize, Just(19)], affine in any::<bool>(),
                          relu in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(n * h * w > 1);
        // Each class's context: batch norm's sums go through both workgroup_sum variants.
        for gpu in gpu_each_class("batch_norm_matches") {
            let config = BatchNormConfig { relu, ..BatchNormConfig::default() };
            let [x, weight, bias, mut rm, mut rv] = batch_norm_inputs(&[n, c, h, w], seed);
            let on_gpu = |t: &Tensor| t.to(&gpu).unwrap();
            let (xg, wg, bg, mut rmg, mut rvg) = (on_gpu(&x), on_gpu(&weight), on_gpu(&bias), on_gpu(&rm), on_gpu(&rv));
            let (w_opt, b_opt) = (affine.then_some(&weight), affine.then_some(&bias));
            let (wg_opt, bg_opt) = (affine.then_some(&wg), affine.then_some(&bg));
            let (y, saved) = x.batch_norm2d_train(w_opt, b_opt, &mut rm, &mut rv, &config).unwrap();
            let (yg, saved_g) = xg.batch_norm2d_train(wg_opt, bg_opt, &mut rmg, &mut rvg, &config).unwrap();
            let count = (n * h * w) as f32;
            let tolerance = 1e-5 * count.sqrt() * 8.0;
            prop_assert!(close(&yg.to_vec().unwrap(), &y.to_vec().unwrap(), tolerance));
            prop_assert!(close(&rmg.to_vec().unwrap(), &rm.to_vec().unwrap(), tolerance));
            prop_assert!(close(&rvg.to_vec().unwrap(), &rv.to_vec().unwrap(), tolerance));
            let dy = Tensor::randn(x.shape(), seed ^ 5, &Device::Cpu).unwrap();
            let grads = dy.batch_norm2d_backward(&x, w_opt, affine, &saved, true).unwrap();
            let grads_g = on_gpu(&dy).batch_norm2d_backward(&xg, wg_opt, affine, &saved_g, true).unwrap();
            prop_assert!(close(&grads_g.input.to_vec().unwrap(), &grads.input.to_vec().unwrap(), tolerance * 4.0));
            if affine {
                prop_assert!(close(&grads_g.weight.unwrap().to_vec().unwrap(), &grads.weight.unwrap().to_vec().unwrap(), tolerance));
                prop_assert!(close(&grads_g.bias.unwrap().to_vec().unwrap(), &grads.bias.unwrap().to_vec().unwrap(), tolerance));
            }
            let eval = x.batch_norm2d_eval(w_opt, b_opt, &rm, &rv, &config).unwrap();
            let eval_g = xg.batch_norm2d_eval(wg_opt, bg_opt, &rmg, &rvg, &config).unwrap();
            prop_assert!(close(&eval_g.to_vec().unwrap(), &eval.to_vec().unwrap(), tolerance));
            // Evaluation mode's backward, through the running statistics.
            let fixed = |mean: &Tensor, var: &Tensor, output: &Tensor| {
                let mut saved = BatchNormSaved::from_running(mean, var, &config).unwrap();
                saved.relu_output = relu.then(|| output.clone());
                saved
            };
            let grads = dy.batch_norm2d_backward(&x, w_opt, affine, &fixed(&rm, &rv, &eval), false).unwrap();
            let grads_g = on_gpu(&dy).batch_norm2d_backward(&xg, wg_opt, affine, &fixed(&rmg, &rvg, &eval_g), false).unwrap();
            prop_assert!(close(&grads_g.input.to_vec().unwrap(), &grads.input.to_vec().unwrap(), tolerance));
            if affine {
                prop_assert!(close(&grads_g.weight.unwrap().to_vec().unwrap(), &grads.weight.unwrap().to_vec().unwrap(), tolerance));
            }
        }
    }
}

#[test]
fn batch_norm_with_relu_is_relu_after_batch_norm() {
    let [x, weight, bias, rm, rv] = batch_norm_inputs(&[3, 4, 3, 5], 11);
    let dy = Tensor::randn(x.shape(), 12, &Device::Cpu).unwrap();
    let plain = BatchNormConfig::default();
    let fused = BatchNormConfig { relu: true, ..plain };
    let run = |config: &BatchNormConfig| {
        let (mut rm, mut rv) = (rm.clone(), rv.clone());
        x.batch_norm2d_train(Some(&weight), Some(&bias), &mut rm, &mut rv, config).unwrap()
    };
    let ((y, saved), (y_fused, saved_fused)) = (run(&plain), run(&fused));
    let relu = y.relu().unwrap();
    assert_eq!(y_fused.to_vec().unwrap(), relu.to_vec().unwrap());
    assert!(relu.to_vec().unwrap().contains(&0.0), "the ReLU cuts something");
    let composed = dy.relu_backward(&y).unwrap().batch_norm2d_backward(&x, Some(&weight), true, &saved, true).unwrap();
    let fused_grads = dy.batch_norm2d_backward(&x, Some(&weight), true, &saved_fused, true).unwrap();
    assert_eq!(fused_grads.input.to_vec().unwrap(), composed.input.to_vec().unwrap());
    assert_eq!(fused_grads.weight.unwrap().to_vec().unwrap(), composed.weight.unwrap().to_vec().unwrap());
    assert_eq!(fused_grads.bias.unwrap().to_vec().unwrap(), composed.bias.unwrap().to_vec().unwrap());
    let eval = x.batch_norm2d_eval(Some(&weight), Some(&bias), &rm, &rv, &fused).unwrap();
    let eval_plain = x.batch_norm2d_eval(Some(&weight), Some(&bias), &rm, &rv, &plain).unwrap();
    assert_eq!(eval.to_vec().unwrap(), eval_plain.relu().unwrap().to_vec().unwrap());
}

/// Training batch norm with a ReLU, then max pooling, fused ([`Tensor::batch_norm2d_relu_max_pool2d`])
/// against the three ops in turn: the same bits on the CPU (output, positions, running
/// statistics, every gradient), and the GPU's fused op against the CPU's.
#[allow(clippy::too_many_arguments)]
fn check_batch_norm_relu_pool(
    gpu: Option<&Device>,
    shape: &[usize],
    pool: Pool2d,
    affine: bool,
    with_bias: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let [x, weight, bias, rm, rv] = batch_norm_inputs(shape, seed);
    let (w, b) = (affine.then_some(&weight), affine.then_some(&bias));
    let config = BatchNormConfig { relu: true, ..BatchNormConfig::default() };
    let (mut rm_fused, mut rv_fused) = (rm.clone(), rv.clone());
    // `config.relu` is implied: a config without it gives the same op.
    let plain = BatchNormConfig::default();
    let fused = x.batch_norm2d_relu_max_pool2d(w, b, &mut rm_fused, &mut rv_fused, &plain, &pool).unwrap();
    let (mut rm_three, mut rv_three) = (rm.clone(), rv.clone());
    let (normalized, saved) = x.batch_norm2d_train(w, b, &mut rm_three, &mut rv_three, &config).unwrap();
    let (pooled, positions) = normalized.max_pool2d(&pool).unwrap();
    prop_assert_eq!(fused.output().to_vec().unwrap(), pooled.to_vec().unwrap());
    prop_assert_eq!(fused.positions().to_vec_i32().unwrap(), positions.to_vec_i32().unwrap());
    prop_assert_eq!(rm_fused.to_vec().unwrap(), rm_three.to_vec().unwrap());
    prop_assert_eq!(rv_fused.to_vec().unwrap(), rv_three.to_vec().unwrap());
    prop_assert_eq!(fused.statistics().invstd.to_vec().unwrap(), saved.invstd.to_vec().unwrap());

    let grad_out = Tensor::randn(pooled.shape(), seed ^ 7, &Device::Cpu).unwrap();
    let grads = grad_out.batch_norm2d_relu_max_pool2d_backward(&fused, &x, w, with_bias, &pool).unwrap();
    let full = grad_out.max_pool2d_backward(&positions, x.shape(), &pool).unwrap();
    let three = full.batch_norm2d_backward(&x, w, with_bias, &saved, true).unwrap();
    prop_assert_eq!(grads.input.to_vec().unwrap(), three.input.to_vec().unwrap());
    prop_assert_eq!(grads.weight.is_some(), affine);
    prop_assert_eq!(grads.bias.is_some(), with_bias);
    if let (Some(got), Some(want)) = (&grads.weight, &three.weight) {
        prop_assert_eq!(got.to_vec().unwrap(), want.to_vec().unwrap());
    }
    if let (Some(got), Some(want)) = (&grads.bias, &three.bias) {
        prop_assert_eq!(got.to_vec().unwrap(), want.to_vec().unwrap());
    }

    let Some(gpu) = gpu else { return Ok(()) };
    let on_gpu = |t: &Tensor| t.to(gpu).unwrap();
    let (xg, wg, bg) = (on_gpu(&x), on_gpu(&weight), on_gpu(&bias));
    let (wg, bg) = (affine.then_some(&wg), affine.then_some(&bg));
    let (mut rmg, mut rvg) = (on_gpu(&rm), on_gpu(&rv));
    let fused_g = xg.batch_norm2d_relu_max_pool2d(wg, bg, &mut rmg, &mut rvg, &config, &pool).unwrap();
    let count = (shape[0] * shape[2] * shape[3]) as f32;
    let tolerance = 1e-5 * count.sqrt() * 8.0;
    prop_assert!(close(&fused_g.output().to_vec().unwrap(), &pooled.to_vec().unwrap(), tolerance));
    prop_assert!(close(&rmg.to_vec().unwrap(), &rm_three.to_vec().unwrap(), tolerance));
    prop_assert!(close(&rvg.to_vec().unwrap(), &rv_three.to_vec().unwrap(), tolerance));
    let grads_g = on_gpu(&grad_out).batch_norm2d_relu_max_pool2d_backward(&fused_g, &xg, wg, with_bias, &pool).unwrap();
    // As for the convolution's block: gradients are compared only where every maximum
    // was found at the same position on both devices.
    let (at_gpu, at_cpu) = (fused_g.positions().to_vec_i32().unwrap(), positions.to_vec_i32().unwrap());
    let differing = at_gpu.iter().zip(&at_cpu).filter(|(g, c)| g != c).count();
    prop_assert!(differing * 100 <= at_cpu.len(), "{differing} of {} positions differ", at_cpu.len());
    if differing == 0 {
        prop_assert!(close(&grads_g.input.to_vec().unwrap(), &three.input.to_vec().unwrap(), tolerance * 4.0));
        if let (Some(got), Some(want)) = (&grads_g.weight, &three.weight) {
            prop_assert!(close(&got.to_vec().unwrap(), &want.to_vec().unwrap(), tolerance));
        }
        if let (Some(got), Some(want)) = (&grads_g.bias, &three.bias) {
            prop_assert!(close(&got.to_vec().unwrap(), &want.to_vec().unwrap(), tolerance));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn batch_norm_relu_pool_matches_the_three_ops(
        n in 1..4usize, c in 1..5usize, h in 1..10usize, w in 1..10usize,
        k in 1..4usize, stride in 1..3usize, padding in 0..2usize,
        affine in any::<bool>(), with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let padding = padding.min(k / 2);
        prop_assume!(h + 2 * padding >= k && w + 2 * padding >= k && n * h * w > 1);
        let gpu = gpu("batch_norm_relu_pool_matches_the_three_ops");
        let pool = Pool2d::new(k).stride(stride).padding(padding);
        check_batch_norm_relu_pool(gpu.as_ref(), &[n, c, h, w], pool, affine, with_bias, seed)?;
    }
}

/// The ASL CNN's three blocks at their own channels and sizes (batches of 3, 2 and 1; 7×7
/// pooled by 2×2 leaves a row and a column out of every window).
#[test]
fn batch_norm_relu_pool_matches_at_the_tutorial_sizes() {
    let gpus = gpu_each_class("batch_norm_relu_pool_matches_at_the_tutorial_sizes");
    // The CPU's checks run once even where no GPU is tested.
    let gpus: Vec<Option<&Device>> = if gpus.is_empty() { vec![None] } else { gpus.iter().map(Some).collect() };
    for gpu in gpus {
        for (i, shape) in [[3, 25, 28, 28], [2, 50, 14, 14], [1, 75, 7, 7]].into_iter().enumerate() {
            check_batch_norm_relu_pool(gpu, &shape, Pool2d::new(2), true, true, 40 + i as u64).unwrap();
        }
    }
}

#[test]
fn batch_norm_relu_pool_refuses_bad_input() {
    let [x, weight, bias, mut rm, mut rv] = batch_norm_inputs(&[2, 3, 4, 4], 1);
    let config = BatchNormConfig::default();
    let pool = Pool2d::new(2);
    let saved = x.batch_norm2d_relu_max_pool2d(Some(&weight), Some(&bias), &mut rm, &mut rv, &config, &pool).unwrap();
    assert_eq!(saved.output().shape(), &[2, 3, 2, 2]);
    fn error<T>(result: kiln_tensor::Result<T>) -> String {
        result.map(|_| ()).unwrap_err().to_string()
    }
    let too_big = Pool2d::new(5);
    let refused = error(x.batch_norm2d_relu_max_pool2d(None, None, &mut rm, &mut rv, &config, &too_big));
    assert!(refused.contains("window"), "{refused}");
    let one_value = Tensor::ones(&[1, 3, 1, 1], &Device::Cpu).unwrap();
    let refused = error(one_value.batch_norm2d_relu_max_pool2d(None, None, &mut rm, &mut rv, &config, &Pool2d::new(1)));
    assert!(refused.contains("more than one value per channel"), "{refused}");
    let wrong_weight = Tensor::ones(&[2], &Device::Cpu).unwrap();
    assert!(x.batch_norm2d_relu_max_pool2d(Some(&wrong_weight), None, &mut rm, &mut rv, &config, &pool).is_err());
    // A gradient of another shape, and a forward pass of another input, are refused.
    let g = Tensor::ones(&[2, 3, 2, 2], &Device::Cpu).unwrap();
    assert!(g.batch_norm2d_relu_max_pool2d_backward(&saved, &x, Some(&weight), true, &pool).is_ok());
    let wrong_grad = Tensor::ones(&[2, 3, 1, 1], &Device::Cpu).unwrap();
    let refused = error(wrong_grad.batch_norm2d_relu_max_pool2d_backward(&saved, &x, Some(&weight), true, &pool));
    assert!(refused.contains("pooled output"), "{refused}");
    let other = Tensor::ones(&[2, 3, 6, 6], &Device::Cpu).unwrap();
    let refused = error(g.batch_norm2d_relu_max_pool2d_backward(&saved, &other, Some(&weight), true, &pool));
    assert!(refused.contains("another op"), "{refused}");
    // A forward pass saved on another device is refused, not read as this one's.
    let Some(gpu) = gpu("batch_norm_relu_pool_refuses_bad_input") else { return };
    let (xg, mut rmg, mut rvg) = (x.to(&gpu).unwrap(), rm.to(&gpu).unwrap(), rv.to(&gpu).unwrap());
    let on_gpu = xg.batch_norm2d_relu_max_pool2d(None, None, &mut rmg, &mut rvg, &config, &pool).unwrap();
    let refused = error(g.batch_norm2d_relu_max_pool2d_backward(&on_gpu, &x, None, true, &pool));
    assert!(refused.to_lowercase().contains("device"), "{refused}");
}

#[test]
fn batch_norm_known_values_and_running_statistics() {
    // Channel 0 holds 1, 3 (mean 2, biased var 1); channel 1 holds 10, 10 (var 0).
    let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 10.0], &[2, 2, 1, 1], &Device::Cpu).unwrap();
    let (mut rm, mut rv) = (Tensor::zeros(&[2], &Device::Cpu).unwrap(), Tensor::ones(&[2], &Device::Cpu).unwrap());
    let config = BatchNormConfig { momentum: 0.1, eps: 0.0, relu: false };
    let (y, saved) =
        x.batch_norm2d_train(None, None, &mut rm, &mut rv, &BatchNormConfig { eps: 1e-5, ..config }).unwrap();
    let y = y.to_vec().unwrap();
    assert!((y[0] + 1.0).abs() < 1e-4 && (y[2] - 1.0).abs() < 1e-4 && y[1] == 0.0 && y[3] == 0.0, "{y:?}");
    assert_eq!(saved.mean.to_vec().unwrap(), vec![2.0, 10.0]);
    // running_mean = 0.9·0 + 0.1·mean; running_var = 0.9·1 + 0.1·unbiased var (2 and 0).
    assert!(close(&rm.to_vec().unwrap(), &[0.2, 1.0], 1e-6));
    assert!(close(&rv.to_vec().unwrap(), &[1.1, 0.9], 1e-6));
    let eval = x.batch_norm2d_eval(None, None, &rm, &rv, &config).unwrap().to_vec().unwrap();
    assert!((eval[0] - (1.0 - 0.2) / 1.1f32.sqrt()).abs() < 1e-6);
}

#[test]
fn batch_norm_gradients_match_central_differences() {
    let config = BatchNormConfig::default();
    let [x, weight, bias, rm, rv] = batch_norm_inputs(&[3, 2, 2, 3], 7);
    let r = Tensor::randn(x.shape(), 8, &Device::Cpu).unwrap();
    let train = |x: &Tensor, w: &Tensor, b: &Tensor| {
        let (mut rm, mut rv) = (rm.clone(), rv.clone());
        x.batch_norm2d_train(Some(w), Some(b), &mut rm, &mut rv, &config).unwrap().0
    };
    let (_, saved) =
        x.batch_norm2d_train(Some(&weight), Some(&bias), &mut rm.clone(), &mut rv.clone(), &config).unwrap();
    let grads = r.batch_norm2d_backward(&x, Some(&weight), true, &saved, true).unwrap();
    assert!(close(&grads.input.to_vec().unwrap(), &numerical_grad(&x, &r, |t| train(t, &weight, &bias)), 2e-2));
    assert!(close(
        &grads.weight.unwrap().to_vec().unwrap(),
        &numerical_grad(&weight, &r, |t| train(&x, t, &bias)),
        2e-2
    ));
    assert!(close(&grads.bias.unwrap().to_vec().unwrap(), &numerical_grad(&bias, &r, |t| train(&x, &weight, t)), 2e-2));
    // Evaluation mode is affine in the input.
    let eval = |t: &Tensor| t.batch_norm2d_eval(Some(&weight), Some(&bias), &rm, &rv, &config).unwrap();
    let saved = BatchNormSaved::from_running(&rm, &rv, &config).unwrap();
    let grads = r.batch_norm2d_backward(&x, Some(&weight), true, &saved, false).unwrap();
    assert!(close(&grads.input.to_vec().unwrap(), &numerical_grad(&x, &r, eval), 2e-2));
}

#[test]
fn batch_norm_input_errors() {
    let config = BatchNormConfig::default();
    let (mut rm, mut rv) = (Tensor::zeros(&[2], &Device::Cpu).unwrap(), Tensor::ones(&[2], &Device::Cpu).unwrap());
    let one_value = Tensor::zeros(&[1, 2, 1, 1], &Device::Cpu).unwrap();
    assert!(
        one_value
            .batch_norm2d_train(None, None, &mut rm, &mut rv, &config)
            .unwrap_err()
            .to_string()
            .contains("more than one value")
    );
    let x = Tensor::zeros(&[2, 3, 2, 2], &Device::Cpu).unwrap();
    assert!(
        x.batch_norm2d_train(None, None, &mut rm, &mut rv, &config).unwrap_err().to_string().contains("must be [C]")
    );
    assert!(Tensor::zeros(&[2, 2], &Device::Cpu).unwrap().batch_norm2d_eval(None, None, &rm, &rv, &config).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn linear_matches(batch in 1..40usize, inputs in 1..70usize, outputs in 1..30usize, with_bias in any::<bool>(), seed in any::<u64>()) {
        let Some(gpu) = gpu("linear_matches") else { return Ok(()) };
        let x = Tensor::randn(&[batch, inputs], seed, &Device::Cpu).unwrap();
        let w = Tensor::randn(&[outputs, inputs], seed ^ 1, &Device::Cpu).unwrap();
        let b = Tensor::randn(&[outputs], seed ^ 2, &Device::Cpu).unwrap();
        let bias = with_bias.then_some(&b);
        let y = x.linear(&w, bias).unwrap();
        let (xg, wg, bg) = (x.to(&gpu).unwrap(), w.to(&gpu).unwrap(), b.to(&gpu).unwrap());
        let yg = xg.linear(&wg, with_bias.then_some(&bg)).unwrap();
        let tolerance = 1e-5 * (inputs.max(batch) as f32).sqrt() * 4.0;
        prop_assert!(close(&yg.to_vec().unwrap(), &y.to_vec().unwrap(), tolerance));
        let dy = Tensor::randn(y.shape(), seed ^ 3, &Device::Cpu).unwrap();
        let grads = dy.linear_backward(&x, &w, with_bias).unwrap();
        let grads_g = dy.to(&gpu).unwrap().linear_backward(&xg, &wg, with_bias).unwrap();
        prop_assert!(close(&grads_g.input.to_vec().unwrap(), &grads.input.to_vec().unwrap(), tolerance));
        prop_assert!(close(&grads_g.weight.to_vec().unwrap(), &grads.weight.to_vec().unwrap(), tolerance));
        prop_assert_eq!(grads.bias.is_some(), with_bias);
        if let (Some(b), Some(bg)) = (grads.bias, grads_g.bias) {
            prop_assert!(close(&bg.to_vec().unwrap(), &b.to_vec().unwrap(), tolerance));
        }
        // The fused ReLU, forward and (mask and bias gradient in one) backward.
        let relu = y.relu().unwrap();
        prop_assert_eq!(x.linear_relu(&w, bias).unwrap().to_vec().unwrap(), relu.to_vec().unwrap());
        let relu_g = xg.linear_relu(&wg, with_bias.then_some(&bg)).unwrap();
        prop_assert!(close(&relu_g.to_vec().unwrap(), &relu.to_vec().unwrap(), tolerance));
        let (masked, sums) = dy.relu_backward_sum_per_channel(&relu).unwrap();
        let (masked_g, sums_g) = dy.to(&gpu).unwrap().relu_backward_sum_per_channel(&relu_g).unwrap();
        prop_assert_eq!(masked.to_vec().unwrap(), dy.relu_backward(&relu).unwrap().to_vec().unwrap());
        // One pass on the CPU, adding in the bias gradient's order: its bits.
        prop_assert_eq!(sums.to_vec().unwrap(), masked.sum_per_channel().unwrap().to_vec().unwrap());
        prop_assert!(close(&masked_g.to_vec().unwrap(), &masked.to_vec().unwrap(), tolerance));
        prop_assert!(close(&sums_g.to_vec().unwrap(), &sums.to_vec().unwrap(), tolerance));
        // The same sums as the generic reduction, in another order of addition.
        prop_assert!(close(&sums.to_vec().unwrap(), &masked.sum(0, false).unwrap().to_vec().unwrap(), tolerance));
    }
}

#[test]
fn linear_gradients_match_central_differences() {
    let x = Tensor::randn(&[4, 5], 1, &Device::Cpu).unwrap();
    let w = Tensor::randn(&[3, 5], 2, &Device::Cpu).unwrap();
    let b = Tensor::randn(&[3], 3, &Device::Cpu).unwrap();
    let r = Tensor::randn(&[4, 3], 4, &Device::Cpu).unwrap();
    let grads = r.linear_backward(&x, &w, true).unwrap();
    assert!(close(&grads.input.to_vec().unwrap(), &numerical_grad(&x, &r, |t| t.linear(&w, Some(&b)).unwrap()), 1e-2));
    assert!(close(&grads.weight.to_vec().unwrap(), &numerical_grad(&w, &r, |t| x.linear(t, Some(&b)).unwrap()), 1e-2));
    assert!(close(
        &grads.bias.unwrap().to_vec().unwrap(),
        &numerical_grad(&b, &r, |t| x.linear(&w, Some(t)).unwrap()),
        1e-2
    ));
}

#[test]
fn linear_and_flatten_input_errors() {
    let x = Tensor::zeros(&[4, 5], &Device::Cpu).unwrap();
    assert!(x.linear(&Tensor::zeros(&[3, 4], &Device::Cpu).unwrap(), None).is_err());
    assert!(
        x.linear(&Tensor::zeros(&[3, 5], &Device::Cpu).unwrap(), Some(&Tensor::zeros(&[4], &Device::Cpu).unwrap()))
            .is_err()
    );
    let grad = Tensor::zeros(&[4, 2], &Device::Cpu).unwrap();
    assert!(grad.linear_backward(&x, &Tensor::zeros(&[3, 5], &Device::Cpu).unwrap(), true).is_err());
    let images = Tensor::zeros(&[2, 75, 3, 3], &Device::Cpu).unwrap();
    assert_eq!(images.flatten(1).unwrap().shape(), &[2, 675]);
    assert_eq!(images.flatten(0).unwrap().shape(), &[1350]);
    assert!(images.flatten(4).is_err());
}
