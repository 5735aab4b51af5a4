//! softmax, the fused cross-entropy, the correct count and ReLU's backward: GPU against the
//! CPU reference, the CPU gradients against central differences, and bad labels.

use kiln_tensor::{DType, Device, Reduction, Tensor};
use kiln_wgsl::testing::context_or_skip;
use kiln_wgsl::{AdapterPreference, GpuContext};
use proptest::prelude::*;

fn gpu(test: &str) -> Option<Device> {
    context_or_skip(test).map(Device::Gpu)
}

fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance * y.abs().max(1.0))
}

fn labels(rows: usize, classes: usize, seed: u64) -> Vec<i32> {
    (0..rows).map(|i| (kiln_tensor::random::bits(seed, i as u64) % classes as u64) as i32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn softmax_matches(shape in prop::collection::vec(1..9usize, 1..4), axis in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let Some(gpu) = gpu("softmax_matches") else { return Ok(()) };
        let axis = axis.index(shape.len()) as isize;
        let x = Tensor::randn(&shape, seed, &Device::Cpu).unwrap().mul_scalar(5.0).unwrap();
        let xg = x.to(&gpu).unwrap();
        for log in [false, true] {
            let (c, g) = if log {
                (x.log_softmax(axis).unwrap(), xg.log_softmax(axis).unwrap())
            } else {
                (x.softmax(axis).unwrap(), xg.softmax(axis).unwrap())
            };
            prop_assert!(close(&g.to_vec().unwrap(), &c.to_vec().unwrap(), 1e-5));
        }
        // Each softmax lane sums to one.
        let sums = x.softmax(axis).unwrap().sum(axis, false).unwrap().to_vec().unwrap();
        prop_assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    }

    #[test]
    fn cross_entropy_matches(rows in 1..70usize, classes in prop_oneof![1..5usize, Just(10usize), Just(24), Just(300)],
                             weighted in any::<bool>(), sum in any::<bool>(), seed in any::<u64>()) {
        let Some(gpu) = gpu("cross_entropy_matches") else { return Ok(()) };
        let logits = Tensor::randn(&[rows, classes], seed, &Device::Cpu).unwrap().mul_scalar(3.0).unwrap();
        let y = Tensor::from_vec_i32(labels(rows, classes, seed), &[rows], &Device::Cpu).unwrap();
        let w = Tensor::rand(&[classes], seed ^ 5, &Device::Cpu).unwrap().add_scalar(0.1).unwrap();
        let weight = weighted.then_some(&w);
        let reduction = if sum { Reduction::Sum } else { Reduction::Mean };
        let (loss, grad) = logits.cross_entropy_with_grad(&y, weight, reduction).unwrap();
        let (lg, yg, wg) = (logits.to(&gpu).unwrap(), y.to(&gpu).unwrap(), w.to(&gpu).unwrap());
        let (loss_g, grad_g) = lg.cross_entropy_with_grad(&yg, weighted.then_some(&wg), reduction).unwrap();
        let tolerance = 1e-5 * (rows as f32).sqrt() * 4.0;
        prop_assert_eq!(loss_g.shape(), &[] as &[usize]);
        prop_assert!(close(&loss_g.to_vec().unwrap(), &loss.to_vec().unwrap(), tolerance));
        prop_assert!(close(&grad_g.to_vec().unwrap(), &grad.to_vec().unwrap(), tolerance));
        // The loss-only form agrees with the fused one.
        let only = lg.cross_entropy(&yg, weighted.then_some(&wg), reduction).unwrap();
        prop_assert!(close(&only.to_vec().unwrap(), &loss_g.to_vec().unwrap(), 1e-6));
        let hits = logits.count_correct(&y).unwrap().to_scalar().unwrap();
        prop_assert_eq!(lg.count_correct(&yg).unwrap().to_scalar().unwrap(), hits);
        let argmax = logits.argmax(-1, false).unwrap().to_vec_i32().unwrap();
        let want = argmax.iter().zip(y.to_vec_i32().unwrap()).filter(|(a, b)| **a == *b).count();
        prop_assert_eq!(hits, want as f32);
    }

    #[test]
    fn running_sums_accumulate_in_place(rows in 1..70usize, classes in 2..12usize, seed in any::<u64>()) {
        let Some(gpu) = gpu("running_sums_accumulate_in_place") else { return Ok(()) };
        let logits = Tensor::randn(&[rows, classes], seed, &Device::Cpu).unwrap();
        let labels: Vec<i32> = (0..rows).map(|r| ((r as u64 ^ seed) % classes as u64) as i32).collect();
        let y = Tensor::from_vec_i32(labels, &[rows], &Device::Cpu).unwrap();
        let hits = logits.count_correct(&y).unwrap().to_scalar().unwrap();
        for device in [Device::Cpu, gpu] {
            let (l, y) = (logits.to(&device).unwrap(), y.to(&device).unwrap());
            let mut count = l.count_correct(&y).unwrap();
            let shared = count.clone();
            l.count_correct_into(&y, &mut count).unwrap();
            l.count_correct_into(&y, &mut count).unwrap();
            prop_assert_eq!(count.to_scalar().unwrap(), 3.0 * hits);
            prop_assert_eq!(shared.to_scalar().unwrap(), hits, "another handle keeps its value");
            let row = l.sum(1, false).unwrap();
            let mut total = row.mul_scalar(2.0).unwrap();
            total.accumulate(&row, 0.5).unwrap();
            prop_assert!(close(&total.to_vec().unwrap(), &row.mul_scalar(2.5).unwrap().to_vec().unwrap(), 1e-6));
            prop_assert!(total.accumulate(&l, 1.0).is_err(), "shapes must match");
        }
    }

    #[test]
    fn relu_backward_matches(shape in prop::collection::vec(1..40usize, 1..4), seed in any::<u64>()) {
        let Some(gpu) = gpu("relu_backward_matches") else { return Ok(()) };
        let (x, g) = (Tensor::randn(&shape, seed, &Device::Cpu).unwrap(), Tensor::randn(&shape, seed ^ 1, &Device::Cpu).unwrap());
        let c = g.relu_backward(&x).unwrap().to_vec().unwrap();
        let on_gpu = g.to(&gpu).unwrap().relu_backward(&x.to(&gpu).unwrap()).unwrap().to_vec().unwrap();
        prop_assert_eq!(&on_gpu, &c);
        let (xs, gs) = (x.to_vec().unwrap(), g.to_vec().unwrap());
        let want: Vec<f32> = xs.iter().zip(&gs).map(|(&x, &g)| if x > 0.0 { g } else { 0.0 }).collect();
        prop_assert_eq!(c, want);
    }
}

/// d loss / d logits by central differences, on the CPU.
fn numerical_grad(
    logits: &[f32],
    shape: [usize; 2],
    y: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Vec<f32> {
    let loss = |values: Vec<f32>| {
        let t = Tensor::from_vec(values, &shape, &Device::Cpu).unwrap();
        t.cross_entropy(y, weight, reduction).unwrap().to_scalar().unwrap() as f64
    };
    let h = 1e-2f32;
    (0..logits.len())
        .map(|i| {
            let (mut up, mut down) = (logits.to_vec(), logits.to_vec());
            up[i] += h;
            down[i] -= h;
            ((loss(up) - loss(down)) / (2.0 * h as f64)) as f32
        })
        .collect()
}

#[test]
fn cross_entropy_gradient_matches_central_differences() {
    let (rows, classes) = (5, 4);
    let logits = Tensor::randn(&[rows, classes], 3, &Device::Cpu).unwrap();
    let y = Tensor::from_vec_i32(vec![0, 3, 1, 1, 2], &[rows], &Device::Cpu).unwrap();
    let w = Tensor::from_vec(vec![0.2, 1.0, 2.0, 0.7], &[classes], &Device::Cpu).unwrap();
    for weight in [None, Some(&w)] {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let (_, grad) = logits.cross_entropy_with_grad(&y, weight, reduction).unwrap();
            let numeric = numerical_grad(&logits.to_vec().unwrap(), [rows, classes], &y, weight, reduction);
            assert!(close(&grad.to_vec().unwrap(), &numeric, 2e-3), "{weight:?} {reduction:?}");
        }
    }
}

#[test]
fn cross_entropy_known_values() {
    // Two rows, three classes: by hand, loss_i = logsumexp(x_i) − x_i[y_i].
    let logits = Tensor::from_vec(vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[2, 3], &Device::Cpu).unwrap();
    let y = Tensor::from_vec_i32(vec![2, 0], &[2], &Device::Cpu).unwrap();
    let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
    let (l0, l1) = (lse - 3.0, 3f32.ln());
    let mean = logits.cross_entropy(&y, None, Reduction::Mean).unwrap().to_scalar().unwrap();
    assert!((mean - (l0 + l1) / 2.0).abs() < 1e-6);
    let w = Tensor::from_vec(vec![2.0, 1.0, 0.5], &[3], &Device::Cpu).unwrap();
    let weighted = logits.cross_entropy(&y, Some(&w), Reduction::Mean).unwrap().to_scalar().unwrap();
    assert!((weighted - (0.5 * l0 + 2.0 * l1) / 2.5).abs() < 1e-6, "PyTorch's weighted mean");
    let sum = logits.cross_entropy(&y, Some(&w), Reduction::Sum).unwrap().to_scalar().unwrap();
    assert!((sum - (0.5 * l0 + 2.0 * l1)).abs() < 1e-6);
    // Large logits stay finite.
    let big = Tensor::from_vec(vec![1000.0, -1000.0], &[1, 2], &Device::Cpu).unwrap();
    let y0 = Tensor::from_vec_i32(vec![1], &[1], &Device::Cpu).unwrap();
    assert_eq!(big.cross_entropy(&y0, None, Reduction::Mean).unwrap().to_scalar().unwrap(), 2000.0);
}

#[test]
fn bad_labels_and_shapes_are_errors() {
    let logits = Tensor::zeros(&[2, 3], &Device::Cpu).unwrap();
    let y = |v: Vec<i32>| Tensor::from_vec_i32(v, &[2], &Device::Cpu).unwrap();
    let err = logits.cross_entropy(&y(vec![0, 3]), None, Reduction::Mean).unwrap_err().to_string();
    assert!(err.contains("label 3 at row 1 is outside the classes [0, 3)"), "{err}");
    assert!(logits.cross_entropy(&y(vec![-1, 0]), None, Reduction::Mean).is_err());
    let three = Tensor::from_vec_i32(vec![0, 1, 2], &[3], &Device::Cpu).unwrap();
    assert!(logits.cross_entropy(&three, None, Reduction::Mean).unwrap_err().to_string().contains("one per row"));
    let float_labels = Tensor::zeros(&[2], &Device::Cpu).unwrap();
    assert!(matches!(
        logits.cross_entropy(&float_labels, None, Reduction::Mean),
        Err(kiln_tensor::TensorError::DTypeMismatch { .. })
    ));
    let bad_weight = Tensor::ones(&[2], &Device::Cpu).unwrap();
    assert!(logits.cross_entropy(&y(vec![0, 1]), Some(&bad_weight), Reduction::Mean).is_err());
    assert!(
        Tensor::zeros(&[2, 3, 1], &Device::Cpu).unwrap().cross_entropy(&y(vec![0, 1]), None, Reduction::Mean).is_err()
    );
}

#[test]
fn a_bad_label_on_the_gpu_is_an_error_at_the_next_read() {
    let Some(_) = gpu("a_bad_label_on_the_gpu_is_an_error_at_the_next_read") else { return };
    // A private device, so the fault cannot surface in a test running beside this one.
    let gpu = Device::Gpu(GpuContext::new(&AdapterPreference::from_env()).unwrap());
    let logits = Tensor::zeros(&[4, 24], &gpu).unwrap();
    let y = Tensor::from_vec_i32(vec![0, 5, 24, 1], &[4], &gpu).unwrap();
    let loss = logits.cross_entropy(&y, None, Reduction::Mean).unwrap(); // queued, not yet run
    let err = loss.to_vec().unwrap_err().to_string();
    assert!(err.contains("label 24 at row 2 is outside the classes [0, 24)"), "{err}");
    let good = Tensor::from_vec_i32(vec![0, 5, 23, 1], &[4], &gpu).unwrap();
    let loss = logits.cross_entropy(&good, None, Reduction::Mean).unwrap().to_scalar().unwrap();
    assert!((loss - 24f32.ln()).abs() < 1e-5);
    assert_eq!(logits.count_correct(&good).unwrap().dtype(), DType::F32);
}
