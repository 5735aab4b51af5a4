//! Every op gives the same result on the GPU as on the CPU reference, over random shapes
//! that include the awkward ones: size 1, primes, sizes just past a workgroup, and empty.
//!
//! Tolerances, relative to max(1, |cpu value|):
//! - elementwise and layout ops: 1e-5 (a few ulps for the transcendental functions);
//! - reductions: 1e-5 · √n, since GPU and CPU add in different orders;
//! - matmul: 1e-5 · √K, for the same reason.

use kiln_tensor::{DType, Device, Tensor};
use kiln_wgsl::testing::context_or_skip;
use proptest::prelude::*;

fn gpu(test: &str) -> Option<Device> {
    context_or_skip(test).map(Device::Gpu)
}

fn assert_parity(cpu: &Tensor, gpu: &Tensor, tolerance: f32) {
    assert_eq!(cpu.shape(), gpu.shape(), "shape");
    assert_eq!(cpu.dtype(), gpu.dtype(), "dtype");
    assert!(gpu.device().is_gpu() && !cpu.device().is_gpu());
    if cpu.dtype() == DType::I32 {
        assert_eq!(cpu.to_vec_i32().unwrap(), gpu.to_vec_i32().unwrap());
        return;
    }
    let (c, g) = (cpu.to_vec().unwrap(), gpu.to_vec().unwrap());
    for (i, (c, g)) in c.iter().zip(&g).enumerate() {
        let ok = (c - g).abs() <= tolerance * c.abs().max(1.0) || (c.is_nan() && g.is_nan()) || c == g;
        assert!(ok, "element {i}: cpu {c}, gpu {g} (shape {:?})", cpu.shape());
    }
}

/// Dimensions that exercise the kernels' edges.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1..=7usize, 1 => Just(13usize), 1 => Just(31), 1 => Just(65), 1 => Just(257)]
}

/// Most elements a generated tensor may have: enough to span many workgroups, small enough
/// for the CPU reference to stay quick.
const MAX_ELEMENTS: usize = 1 << 16;

fn shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dim(), 0..=max_rank).prop_map(|mut shape| {
        while shape.iter().product::<usize>() > MAX_ELEMENTS {
            let largest = (0..shape.len()).max_by_key(|&i| shape[i]).expect("a large shape has axes");
            shape[largest] = (shape[largest] / 4).max(1);
        }
        shape
    })
}

/// The same random tensor on the CPU and on the GPU.
fn pair(shape: &[usize], seed: u64, gpu: &Device) -> (Tensor, Tensor) {
    let cpu = Tensor::randn(shape, seed, &Device::Cpu).unwrap();
    let on_gpu = cpu.to(gpu).unwrap();
    (cpu, on_gpu)
}

type UnaryFn = fn(&Tensor) -> kiln_tensor::Result<Tensor>;

const UNARY: [(&str, UnaryFn); 19] = [
    ("neg", Tensor::neg),
    ("abs", Tensor::abs),
    ("exp", Tensor::exp),
    ("log", |t| t.abs()?.add_scalar(0.01)?.log()),
    ("sqrt", |t| t.abs()?.sqrt()),
    ("relu", Tensor::relu),
    ("sigmoid", Tensor::sigmoid),
    ("tanh", Tensor::tanh),
    ("square", Tensor::square),
    ("recip", |t| t.abs()?.add_scalar(0.5)?.recip()),
    ("scalar arithmetic", |t| t.add_scalar(1.5)?.sub_scalar(0.25)?.mul_scalar(-2.0)?.div_scalar(3.0)?.rsub_scalar(1.0)),
    ("pow_scalar", |t| t.abs()?.pow_scalar(1.7)),
    ("clamp", |t| t.maximum_scalar(-0.5)?.minimum_scalar(0.5)),
    ("leaky_relu and its gradient", |t| t.leaky_relu(0.2)?.leaky_relu_backward(t, 0.2)),
    ("gelu", |t| t.gelu(false)),
    ("gelu, tanh approximation", |t| t.gelu(true)),
    ("gelu's gradients", |t| t.gelu_backward(t, false)?.gelu_backward(t, true)),
    ("sum_all", Tensor::sum_all),
    ("mean_all", Tensor::mean_all),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn unary_and_scalar_ops(shape in shape(4), seed in any::<u64>()) {
        let Some(gpu) = gpu("unary_and_scalar_ops") else { return Ok(()) };
        let (c, g) = pair(&shape, seed, &gpu);
        for (name, op) in UNARY {
            let tolerance = if name.ends_with("_all") { 1e-5 * (c.len() as f32).sqrt().max(1.0) } else { 1e-5 };
            assert_parity(&op(&c).unwrap(), &op(&g).unwrap(), tolerance);
        }
    }

    #[test]
    fn binary_ops_broadcast(shape in shape(4), mask in any::<u8>(), drop_leading in 0..3usize, seed in any::<u64>()) {
        let Some(gpu) = gpu("binary_ops_broadcast") else { return Ok(()) };
        // The right operand is broadcast along the masked axes and may lack leading axes.
        let rhs_shape: Vec<usize> = shape.iter().enumerate()
            .map(|(d, &n)| if mask >> d & 1 == 1 { 1 } else { n })
            .skip(drop_leading.min(shape.len()))
            .collect();
        let (a, ag) = pair(&shape, seed, &gpu);
        let (b, bg) = pair(&rhs_shape, seed ^ 1, &gpu);
        // Keep divisors away from zero.
        let (b, bg) = (b.abs().unwrap().add_scalar(0.5).unwrap(), bg.abs().unwrap().add_scalar(0.5).unwrap());
        for (x, y, xg, yg) in [(&a, &b, &ag, &bg), (&b, &a, &bg, &ag)] {
            assert_parity(&x.add(y).unwrap(), &xg.add(yg).unwrap(), 1e-5);
            assert_parity(&x.sub(y).unwrap(), &xg.sub(yg).unwrap(), 1e-5);
            assert_parity(&x.mul(y).unwrap(), &xg.mul(yg).unwrap(), 1e-5);
            assert_parity(&x.maximum(y).unwrap(), &xg.maximum(yg).unwrap(), 1e-5);
            assert_parity(&x.minimum(y).unwrap(), &xg.minimum(yg).unwrap(), 1e-5);
            // 1 where x is the larger: equal elements exist by construction.
            let (larger, larger_g) = (x.maximum(y).unwrap(), xg.maximum(yg).unwrap());
            assert_parity(&x.eq(&larger).unwrap(), &xg.eq(&larger_g).unwrap(), 0.0);
        }
        assert_parity(&a.div(&b).unwrap(), &ag.div(&bg).unwrap(), 1e-5);
    }

    #[test]
    fn reductions(shape in shape(4).prop_filter("needs an axis", |s| !s.is_empty()), axis in any::<prop::sample::Index>(),
                  keepdim in any::<bool>(), seed in any::<u64>()) {
        let Some(gpu) = gpu("reductions") else { return Ok(()) };
        let axis = axis.index(shape.len()) as isize - shape.len() as isize * (seed % 2) as isize;
        let (c, g) = pair(&shape, seed, &gpu);
        let n = shape[axis.rem_euclid(shape.len() as isize) as usize] as f32;
        let tolerance = 1e-5 * n.sqrt().max(1.0);
        assert_parity(&c.sum(axis, keepdim).unwrap(), &g.sum(axis, keepdim).unwrap(), tolerance);
        assert_parity(&c.mean(axis, keepdim).unwrap(), &g.mean(axis, keepdim).unwrap(), tolerance);
        assert_parity(&c.max(axis, keepdim).unwrap(), &g.max(axis, keepdim).unwrap(), 0.0);
        assert_parity(&c.argmax(axis, keepdim).unwrap(), &g.argmax(axis, keepdim).unwrap(), 0.0);
    }

    #[test]
    fn layout_ops(shape in shape(5), seed in any::<u64>(), perm_seed in any::<u64>()) {
        let Some(gpu) = gpu("layout_ops") else { return Ok(()) };
        let mut dims: Vec<usize> = (0..shape.len()).collect();
        for i in (1..dims.len()).rev() {
            dims.swap(i, (perm_seed >> (6 * i)) as usize % (i + 1));
        }
        let (c, g) = pair(&shape, seed, &gpu);
        assert_parity(&c.permute(&dims).unwrap(), &g.permute(&dims).unwrap(), 0.0);
        if shape.len() >= 2 {
            assert_parity(&c.transpose(0, -1).unwrap(), &g.transpose(0, -1).unwrap(), 0.0);
        }
        // Integer tensors move the same way.
        let labels: Vec<i32> = (0..c.len() as i32).collect();
        let lc = Tensor::from_vec_i32(labels, &shape, &Device::Cpu).unwrap();
        assert_parity(&lc.permute(&dims).unwrap(), &lc.to(&gpu).unwrap().permute(&dims).unwrap(), 0.0);
        // Broadcast a row of the tensor back up to its full shape.
        let mut row_shape = shape.clone();
        if let Some(first) = row_shape.first_mut() { *first = 1; }
        let (r, rg) = pair(&row_shape, seed ^ 7, &gpu);
        assert_parity(&r.broadcast_to(&shape).unwrap(), &rg.broadcast_to(&shape).unwrap(), 0.0);
    }

    #[test]
    fn matmul_variants(batch in prop_oneof![Just(vec![]), Just(vec![1usize]), Just(vec![3usize]), Just(vec![2usize, 2])],
                       m in dim(), n in dim(), k in dim(), trans_a in any::<bool>(), trans_b in any::<bool>(),
                       shared in 0..3usize, seed in any::<u64>()) {
        let Some(gpu) = gpu("matmul_variants") else { return Ok(()) };
        let stored = |rows, cols, trans| if trans { vec![cols, rows] } else { vec![rows, cols] };
        // shared: 0 both batched, 1 the right operand a plain matrix, 2 the left one.
        let a_batch = if shared == 2 { vec![] } else { batch.clone() };
        let b_batch = if shared == 1 { vec![] } else { batch.clone() };
        let a_shape = [a_batch, stored(m, k, trans_a)].concat();
        let b_shape = [b_batch, stored(k, n, trans_b)].concat();
        let (a, ag) = pair(&a_shape, seed, &gpu);
        let (b, bg) = pair(&b_shape, seed ^ 3, &gpu);
        let tolerance = 1e-5 * (k as f32).sqrt() * 4.0;
        assert_parity(&a.matmul_t(&b, trans_a, trans_b).unwrap(), &ag.matmul_t(&bg, trans_a, trans_b).unwrap(), tolerance);
    }

    /// The batch-summed product: on each device it equals the products summed over the
    /// batch, and the devices agree.
    #[test]
    fn matmul_sums_over_the_batch(batch in 1..20usize, m in dim(), n in dim(), k in dim(), trans_b in any::<bool>(),
                                  seed in any::<u64>()) {
        let Some(gpu) = gpu("matmul_sums_over_the_batch") else { return Ok(()) };
        let b_stored = if trans_b { vec![batch, n, k] } else { vec![batch, k, n] };
        let (a, ag) = pair(&[batch, m, k], seed, &gpu);
        let (b, bg) = pair(&b_stored, seed ^ 5, &gpu);
        let tolerance = 1e-5 * ((k * batch) as f32).sqrt() * 4.0;
        let summed = a.matmul_t_sum(&b, false, trans_b).unwrap();
        prop_assert_eq!(summed.shape(), &[m, n]);
        let per_entry = a.matmul_t(&b, false, trans_b).unwrap().sum(0, false).unwrap().to_vec().unwrap();
        for (s, p) in summed.to_vec().unwrap().iter().zip(&per_entry) {
            prop_assert!((s - p).abs() <= tolerance * p.abs().max(1.0), "{s} vs {p}");
        }
        assert_parity(&summed, &ag.matmul_t_sum(&bg, false, trans_b).unwrap(), tolerance);
    }
}

#[test]
fn creation_gives_the_same_tensor_on_both_devices() {
    let Some(gpu) = gpu("creation_gives_the_same_tensor_on_both_devices") else { return };
    for shape in [vec![], vec![0], vec![1], vec![3, 257], vec![2, 0, 5]] {
        for (c, g) in [
            (Tensor::zeros(&shape, &Device::Cpu), Tensor::zeros(&shape, &gpu)),
            (Tensor::ones(&shape, &Device::Cpu), Tensor::ones(&shape, &gpu)),
            (Tensor::full(&shape, -2.5, &Device::Cpu), Tensor::full(&shape, -2.5, &gpu)),
            (Tensor::rand(&shape, 9, &Device::Cpu), Tensor::rand(&shape, 9, &gpu)),
            (Tensor::randn(&shape, 9, &Device::Cpu), Tensor::randn(&shape, 9, &gpu)),
        ] {
            assert_parity(&c.unwrap(), &g.unwrap(), 0.0);
        }
    }
}

#[test]
fn round_trips_through_the_gpu_keep_every_value() {
    let Some(gpu) = gpu("round_trips_through_the_gpu_keep_every_value") else { return };
    let values: Vec<f32> = (0..1001).map(|i| i as f32 * 0.37 - 100.0).collect();
    let t = Tensor::from_vec(values.clone(), &[7, 11, 13], &gpu).unwrap();
    assert_eq!(t.to_vec().unwrap(), values);
    assert_eq!(t.to(&Device::Cpu).unwrap().to(&gpu).unwrap().to_vec().unwrap(), values);
    let labels = Tensor::from_vec_i32(vec![3, -1, 7], &[3], &gpu).unwrap();
    assert_eq!(labels.to_vec_i32().unwrap(), vec![3, -1, 7]);
    assert_eq!(t.reshape(&[1001]).unwrap().to_vec().unwrap(), values);
}

#[test]
fn empty_tensors_flow_through_every_op() {
    let Some(gpu) = gpu("empty_tensors_flow_through_every_op") else { return };
    for device in [Device::Cpu, gpu] {
        let e = Tensor::zeros(&[0, 3], &device).unwrap();
        assert_eq!(e.relu().unwrap().shape(), &[0, 3]);
        assert_eq!(e.add(&Tensor::ones(&[3], &device).unwrap()).unwrap().shape(), &[0, 3]);
        assert_eq!(e.sum(1, false).unwrap().shape(), &[0]);
        assert_eq!(e.sum(0, false).unwrap().to_vec().unwrap(), vec![0.0; 3]);
        assert_eq!(e.t().unwrap().shape(), &[3, 0]);
        let product = e.t().unwrap().matmul(&e).unwrap();
        assert_eq!(product.to_vec().unwrap(), vec![0.0; 9], "an empty inner dimension sums nothing");
        assert!(e.max(0, false).is_err(), "max over an empty axis has no value");
    }
}

#[test]
fn mixing_devices_is_an_error() {
    let Some(gpu) = gpu("mixing_devices_is_an_error") else { return };
    let c = Tensor::ones(&[2, 2], &Device::Cpu).unwrap();
    let g = Tensor::ones(&[2, 2], &gpu).unwrap();
    let err = c.add(&g).unwrap_err().to_string();
    assert!(err.contains("different devices"), "{err}");
    assert!(g.matmul(&c).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Picking rows, and picking, converting and scaling them in one op (the bits of the
    /// three ops apart, on both devices; a byte tensor on the GPU takes one launch).
    #[test]
    fn rows_are_selected_and_converted_alike(rows in 1..20usize, row_shape in prop::collection::vec(1..6usize, 0..3),
                                            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
                                            scale in prop_oneof![Just(1.0f32), Just(1.0 / 255.0), -2.0f32..2.0]) {
        let Some(gpu) = gpu("rows_are_selected_and_converted_alike") else { return Ok(()) };
        let shape = [&[rows], row_shape.as_slice()].concat();
        let len: usize = shape.iter().product();
        let indices: Vec<usize> = picks.iter().map(|p| p.index(rows)).collect();
        let bytes = Tensor::from_vec_u8((0..len).map(|i| (i * 31 % 256) as u8).collect(), &shape, &Device::Cpu).unwrap();
        let ints = Tensor::from_vec_i32((0..len as i32).map(|i| i * 3 - 50).collect(), &shape, &Device::Cpu).unwrap();
        let floats = Tensor::randn(&shape, len as u64, &Device::Cpu).unwrap();
        for t in [&bytes, &ints, &floats] {
            let g = t.to(&gpu).unwrap();
            let (picked, picked_gpu) = (t.index_select(&indices).unwrap(), g.index_select(&indices).unwrap());
            if t.dtype() == DType::U8 {
                prop_assert_eq!(picked.to_vec_u8().unwrap(), picked_gpu.to_vec_u8().unwrap());
            }
            assert_parity(&picked.to_f32().unwrap(), &picked_gpu.to_f32().unwrap(), 0.0);
            let apart = picked.to_f32().unwrap().mul_scalar(scale).unwrap();
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for fused in [t.index_select_to_f32(&indices, scale).unwrap(), g.index_select_to_f32(&indices, scale).unwrap()] {
                prop_assert_eq!(fused.dtype(), DType::F32);
                prop_assert_eq!(fused.shape(), apart.shape());
                prop_assert_eq!(bits(fused.to_vec().unwrap()), bits(apart.to_vec().unwrap()));
            }
        }
    }
}

#[test]
fn byte_tensors_only_move_and_convert() {
    let Some(gpu) = gpu("byte_tensors_only_move_and_convert") else { return };
    for device in [Device::Cpu, gpu] {
        let bytes = Tensor::from_vec_u8(vec![0, 128, 255, 7, 9, 11], &[2, 3], &device).unwrap();
        assert_eq!(bytes.to_vec_u8().unwrap(), vec![0, 128, 255, 7, 9, 11]);
        assert_eq!(bytes.to_f32().unwrap().to_vec().unwrap(), vec![0.0, 128.0, 255.0, 7.0, 9.0, 11.0]);
        assert!(bytes.permute(&[1, 0]).is_err());
        assert!(bytes.relu().is_err());
        let err = bytes.index_select(&[0, 2]).unwrap_err().to_string();
        assert!(err.contains("row 2 is out of range for 2 rows"), "{err}");
        let err = bytes.index_select_to_f32(&[0, 2], 0.5).unwrap_err().to_string();
        assert!(err.contains("row 2 is out of range for 2 rows"), "{err}");
    }
}

/// Large enough for the CPU's parallel loops: per-channel and per-row operands, checked
/// against index arithmetic.
#[test]
fn large_broadcasts_on_the_cpu_follow_the_indices() {
    let (n, c, hw) = (3, 5, 60 * 60);
    let x = Tensor::randn(&[n, c, 60, 60], 1, &Device::Cpu).unwrap();
    let per_channel = Tensor::randn(&[c, 1, 1], 2, &Device::Cpu).unwrap();
    let row = Tensor::randn(&[60], 3, &Device::Cpu).unwrap();
    let (xs, cs, rs) = (x.to_vec().unwrap(), per_channel.to_vec().unwrap(), row.to_vec().unwrap());
    let sum = x.add(&per_channel).unwrap().to_vec().unwrap();
    let difference = per_channel.sub(&x).unwrap().to_vec().unwrap();
    let product = x.mul(&row).unwrap().to_vec().unwrap();
    for i in 0..n * c * hw {
        let channel = (i / hw) % c;
        assert_eq!(sum[i], xs[i] + cs[channel]);
        assert_eq!(difference[i], cs[channel] - xs[i]);
        assert_eq!(product[i], xs[i] * rs[i % 60]);
    }
}

/// An i32 index of `shape` with entries below `extent`, from `seed`.
fn index_tensor(shape: &[usize], extent: usize, seed: u64) -> Tensor {
    let len: usize = shape.iter().product();
    let picks =
        (0..len as u64).map(|e| ((seed.rotate_left(e as u32 % 64) ^ e.wrapping_mul(0x9E37)) % extent as u64) as i32);
    Tensor::from_vec_i32(picks.collect(), shape, &Device::Cpu).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// narrow, cat, gather and the sums returning gathered gradients: the same bits on both
    /// devices (nothing is rounded but the sums, which both add in the same order).
    #[test]
    fn slices_joins_and_gathers_alike(shape in shape(4).prop_filter("needs an axis", |s| !s.is_empty()),
                                      axis in any::<prop::sample::Index>(), along in 1..5usize, seed in any::<u64>()) {
        let Some(gpu) = gpu("slices_joins_and_gathers_alike") else { return Ok(()) };
        let axis = axis.index(shape.len());
        let extent = shape[axis];
        let (x, xg) = pair(&shape, seed, &gpu);
        let ints = Tensor::from_vec_i32((0..x.len() as i32).collect(), &shape, &Device::Cpu).unwrap();
        // Three pieces along the axis (some maybe empty), joined back into the whole.
        let cuts = [(seed as usize) % (extent + 1), (seed as usize >> 8) % (extent + 1)];
        let (a, b) = (cuts[0].min(cuts[1]), cuts[0].max(cuts[1]));
        for (t, tg) in [(x.clone(), xg.clone()), (ints.clone(), ints.to(&gpu).unwrap())] {
            let pieces: Vec<(Tensor, Tensor)> = [(0, a), (a, b - a), (b, extent - b)]
                .iter()
                .map(|&(start, len)| (t.narrow(axis as isize, start, len).unwrap(), tg.narrow(axis as isize, start, len).unwrap()))
                .collect();
            for (piece, piece_gpu) in &pieces {
                assert_parity(piece, piece_gpu, 0.0);
            }
            let joined = Tensor::cat(&pieces.iter().map(|(p, _)| p).collect::<Vec<_>>(), axis as isize).unwrap();
            let joined_gpu = Tensor::cat(&pieces.iter().map(|(_, p)| p).collect::<Vec<_>>(), axis as isize).unwrap();
            assert_parity(&joined, &joined_gpu, 0.0);
            prop_assert_eq!(joined.to_f32().unwrap().to_vec().unwrap(), t.to_f32().unwrap().to_vec().unwrap());
        }
        let mut index_shape = shape.clone();
        index_shape[axis] = along;
        let index = index_tensor(&index_shape, extent, seed);
        let index_gpu = index.to(&gpu).unwrap();
        let gathered = x.gather(axis as isize, &index).unwrap();
        assert_parity(&gathered, &xg.gather(axis as isize, &index_gpu).unwrap(), 0.0);
        let grad = Tensor::randn(&index_shape, seed ^ 5, &Device::Cpu).unwrap();
        let summed = grad.gather_backward(axis as isize, &index, &shape).unwrap();
        let summed_gpu = grad.to(&gpu).unwrap().gather_backward(axis as isize, &index_gpu, &shape).unwrap();
        assert_parity(&summed, &summed_gpu, 0.0);
        // Rows picked with repeats, and their gradient summed back into the rows.
        let rows: Vec<usize> = index.to_vec_i32().unwrap().iter().take(7).map(|&k| k as usize % shape[0]).collect();
        let grad = Tensor::randn(&[&[rows.len()], &shape[1..]].concat(), seed ^ 6, &Device::Cpu).unwrap();
        let back = grad.index_select_backward(&rows, shape[0]).unwrap();
        assert_parity(&back, &grad.to(&gpu).unwrap().index_select_backward(&rows, shape[0]).unwrap(), 0.0);
    }
}

/// torch.gather's documented example, its gradient, and index_select's gradient, by hand.
#[test]
fn gathers_and_their_gradients_by_hand() {
    let mut devices = vec![Device::Cpu];
    devices.extend(gpu("gathers_and_their_gradients_by_hand"));
    for device in devices {
        let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], &device).unwrap();
        let index = Tensor::from_vec_i32(vec![0, 0, 1, 0], &[2, 2], &device).unwrap();
        assert_eq!(t.gather(1, &index).unwrap().to_vec().unwrap(), [1.0, 1.0, 4.0, 3.0]);
        let grad = Tensor::from_vec(vec![1.0, 10.0, 100.0, 1000.0], &[2, 2], &device).unwrap();
        assert_eq!(grad.gather_backward(1, &index, &[2, 2]).unwrap().to_vec().unwrap(), [11.0, 0.0, 1000.0, 100.0]);
        let rows = Tensor::from_vec(vec![1.0, 2.0, 10.0, 20.0, 100.0, 200.0], &[3, 2], &device).unwrap();
        let back = rows.index_select_backward(&[2, 0, 2], 4).unwrap();
        assert_eq!(back.to_vec().unwrap(), [10.0, 20.0, 0.0, 0.0, 101.0, 202.0, 0.0, 0.0]);
    }
}

#[test]
fn bad_slices_joins_and_indices_are_errors() {
    let x = Tensor::zeros(&[2, 3], &Device::Cpu).unwrap();
    let err = |r: kiln_tensor::Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(x.narrow(1, 2, 2)).contains("entries 2..4 past the 3 of axis 1"));
    assert!(err(x.narrow(2, 0, 1)).contains("axis 2 is out of range"));
    assert!(err(Tensor::cat(&[], 0)).contains("needs at least one tensor"));
    let other = Tensor::zeros(&[3, 3], &Device::Cpu).unwrap();
    assert!(err(Tensor::cat(&[&x, &other], 1)).contains("the shapes must agree but along the joined axis"));
    let ints = Tensor::from_vec_i32(vec![0; 6], &[2, 3], &Device::Cpu).unwrap();
    assert!(Tensor::cat(&[&x, &ints], 0).is_err(), "f32 with i32");
    let out_of_range = Tensor::from_vec_i32(vec![0, 3], &[2, 1], &Device::Cpu).unwrap();
    assert!(err(x.gather(1, &out_of_range)).contains("index 3 is out of range for an axis of 3"));
    assert!(err(x.gather(1, &x)).contains("I32"), "a float index");
    let misshapen = Tensor::from_vec_i32(vec![0; 3], &[3, 1], &Device::Cpu).unwrap();
    assert!(err(x.gather(1, &misshapen)).contains("the index must have the source's shape"));
    assert!(err(x.index_select_backward(&[0, 5], 4)).contains("a gradient [2, 3] for 2 indices below 4"));
}
