//! How the CPU path runs its ops: subnormals flushed on the threads that compute and only
//! while an op runs on the caller's; the profiler's per-phase, per-op accounting; the
//! optimizer step split into pieces over threads without changing a bit.

use std::sync::{Mutex, MutexGuard};

use kiln_tensor::profile::{self, OVERLAPPING};
use kiln_tensor::{
    AdamConfig, AdamParameter, Device, SgdConfig, SgdParameter, Tensor, adam_steps, sgd_steps, subnormals,
};
use kiln_wgsl::testing::context_or_skip;

/// The profiler is process-wide and counts every thread's ops, so a test's ops would show
/// in another's profile: the tests in this file take turns.
static PROFILER: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    PROFILER.lock().unwrap_or_else(|p| p.into_inner())
}

const ADAM: AdamConfig =
    AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: false };

fn cpu(values: Vec<f32>) -> Tensor {
    let len = values.len();
    Tensor::from_vec(values, &[len], &Device::Cpu).unwrap()
}

#[test]
fn subnormals_are_flushed_inside_ops_only() {
    let _turn = turn();
    let tiny = f32::MIN_POSITIVE / 4.0;
    assert!(tiny > 0.0 && !tiny.is_normal());
    // Small enough to run on the calling thread, large enough for rayon's workers.
    for len in [8, 1 << 16] {
        let x = cpu(vec![tiny; len]);
        assert!(x.to_vec().unwrap().iter().all(|&v| v == tiny), "moving data keeps it");
        let doubled = x.mul_scalar(2.0).unwrap().to_vec().unwrap();
        assert!(doubled.iter().all(|&v| v == 0.0), "{len} elements: a subnormal input reads as zero");
        let (mut w, mut m, mut v) = (cpu(vec![1.0; len]), cpu(vec![tiny; len]), cpu(vec![tiny; len]));
        let no_decay = AdamConfig { weight_decay: 0.0, ..ADAM };
        w.adam_step(&cpu(vec![0.0; len]), &mut m, &mut v, &no_decay, 3).unwrap();
        assert!(m.to_vec().unwrap().iter().all(|&v| v == 0.0), "{len} elements: decaying moments stop at zero");
    }
    assert!(!subnormals::flushing_on_this_thread(), "the caller's float mode is restored after each op");
    let doubled_here = std::hint::black_box(tiny) * 2.0;
    assert_eq!(doubled_here, tiny * 2.0);
    assert!(doubled_here > 0.0);
    let workers = rayon::broadcast(|_| subnormals::flushing_on_this_thread());
    assert!(workers.iter().all(|&on| on), "every worker flushes: {workers:?}");
}

#[test]
fn the_profile_counts_each_outermost_op_in_its_phase() {
    let _turn = turn();
    let x = Tensor::randn(&[4, 3], 1, &Device::Cpu).unwrap();
    let w = Tensor::randn(&[5, 3], 2, &Device::Cpu).unwrap();
    x.relu().unwrap();
    profile::enable(true);
    profile::take();
    profile::set_phase("forward");
    for _ in 0..3 {
        // linear calls matmul_t and add inside: only linear is counted.
        x.linear(&w, None).unwrap();
    }
    x.relu().unwrap();
    profile::set_phase("backward");
    x.sum_all().unwrap();
    std::thread::spawn(move || x.exp().unwrap()).join().unwrap();
    let recorded = profile::take();
    profile::enable(false);
    x_after_disable_is_not_recorded();

    let names: Vec<&str> = recorded.phases.iter().map(|p| p.name).collect();
    assert_eq!(names, ["forward", "backward", OVERLAPPING], "{recorded}");
    let forward = recorded.phase("forward").unwrap();
    let calls: Vec<(&str, u64)> = forward.ops.iter().map(|op| (op.name, op.calls)).collect();
    assert!(calls.contains(&("linear", 3)) && calls.contains(&("relu", 1)), "{calls:?}");
    assert!(!calls.iter().any(|(name, _)| *name == "matmul_t" || *name == "add"), "{calls:?}");
    let ops_time: std::time::Duration = forward.ops.iter().map(|op| op.time).sum();
    assert!(ops_time <= forward.wall && forward.outside_ops() == forward.wall - ops_time);
    assert_eq!(recorded.phase("backward").unwrap().ops[0].name, "sum_all");
    let other = recorded.phase(OVERLAPPING).unwrap();
    assert_eq!((other.ops[0].name, other.ops[0].calls, other.wall), ("exp", 1, std::time::Duration::ZERO));
    assert_eq!(recorded.wall(), forward.wall + recorded.phase("backward").unwrap().wall);
    let table = recorded.to_string();
    assert!(table.contains("linear") && table.contains("(outside ops)"), "{table}");
}

fn x_after_disable_is_not_recorded() {
    Tensor::ones(&[3], &Device::Cpu).unwrap().exp().unwrap();
    profile::set_phase("ignored");
    assert_eq!(profile::take().phases.iter().map(|p| p.ops.len()).sum::<usize>(), 0);
}

/// Adam, one element at a time in the order of adam.wgsl: the reference the pieces match.
fn adam_reference(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: u64) {
    let (step_size, bc2) = ADAM.bias_corrections(step);
    for i in 0..w.len() {
        let grad = g[i] + ADAM.weight_decay * w[i];
        m[i] += (1.0 - ADAM.beta1) * (grad - m[i]);
        v[i] = v[i] * ADAM.beta2 + (1.0 - ADAM.beta2) * grad * grad;
        w[i] -= step_size * (m[i] / (v[i].sqrt() / bc2 + ADAM.eps));
    }
}

#[test]
fn a_multi_tensor_step_over_many_pieces_changes_no_bit() {
    let _turn = turn();
    // One tiny tensor, one just over a piece, one of several pieces: a parallel step.
    let sizes = [3, (1 << 14) + 1, 50_000];
    let gpu = context_or_skip("a_multi_tensor_step_over_many_pieces_changes_no_bit").map(Device::Gpu);
    let tensor = |len: usize, seed: u64| Tensor::randn(&[len], seed, &Device::Cpu).unwrap();
    let mut params: Vec<Tensor> = sizes.iter().map(|&n| tensor(n, n as u64)).collect();
    let mut moments: Vec<(Tensor, Tensor)> =
        sizes.iter().map(|&n| (tensor(n, 1), tensor(n, 2).abs().unwrap())).collect();
    let mut expected: Vec<[Vec<f32>; 3]> = params
        .iter()
        .zip(&moments)
        .map(|(p, (m, v))| [p.to_vec().unwrap(), m.to_vec().unwrap(), v.to_vec().unwrap()])
        .collect();
    let mut on_gpu: Option<Vec<[Tensor; 3]>> = gpu
        .as_ref()
        .map(|gpu| params.iter().zip(&moments).map(|(p, (m, v))| [p, m, v].map(|t| t.to(gpu).unwrap())).collect());
    for step in 1..=3u64 {
        let grads: Vec<Tensor> = sizes.iter().map(|&n| tensor(n, 100 + step)).collect();
        let mut parameters: Vec<AdamParameter> = params
            .iter_mut()
            .zip(&mut moments)
            .zip(&grads)
            .map(|((param, (exp_avg, exp_avg_sq)), grad)| AdamParameter { param, grad, exp_avg, exp_avg_sq, step })
            .collect();
        adam_steps(&mut parameters, &ADAM).unwrap();
        for ([w, m, v], g) in expected.iter_mut().zip(&grads) {
            adam_reference(w, &g.to_vec().unwrap(), m, v, step);
        }
        if let (Some(gpu), Some(tensors)) = (&gpu, &mut on_gpu) {
            let grads: Vec<Tensor> = grads.iter().map(|g| g.to(gpu).unwrap()).collect();
            let mut parameters: Vec<AdamParameter> = tensors
                .iter_mut()
                .zip(&grads)
                .map(|([param, exp_avg, exp_avg_sq], grad)| AdamParameter { param, grad, exp_avg, exp_avg_sq, step })
                .collect();
            adam_steps(&mut parameters, &ADAM).unwrap();
        }
    }
    for (i, ((p, (m, v)), [w, em, ev])) in params.iter().zip(&moments).zip(&expected).enumerate() {
        assert!(p.to_vec().unwrap() == *w, "parameter {i}: the pieces changed the result");
        assert!(m.to_vec().unwrap() == *em && v.to_vec().unwrap() == *ev, "parameter {i}: moments");
    }
    if let Some(tensors) = on_gpu {
        for (i, ([p, _, v], [w, _, ev])) in tensors.iter().zip(&expected).enumerate() {
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0));
            assert!(close(&p.to_vec().unwrap(), w) && close(&v.to_vec().unwrap(), ev), "parameter {i}: GPU");
        }
    }
}

#[test]
fn a_multi_tensor_sgd_step_with_momentum_matches_the_reference() {
    let _turn = turn();
    let config = SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 1e-3, nesterov: true };
    let sizes = [7, 40_000];
    let mut params: Vec<Tensor> = sizes.iter().map(|&n| Tensor::randn(&[n], n as u64, &Device::Cpu).unwrap()).collect();
    let mut buffers: Vec<Tensor> = sizes.iter().map(|&n| Tensor::zeros(&[n], &Device::Cpu).unwrap()).collect();
    let mut expected: Vec<(Vec<f32>, Vec<f32>)> =
        params.iter().map(|p| (p.to_vec().unwrap(), vec![0.0; p.len()])).collect();
    for step in 0..3u64 {
        let grads: Vec<Tensor> = sizes.iter().map(|&n| Tensor::randn(&[n], 50 + step, &Device::Cpu).unwrap()).collect();
        let mut parameters: Vec<SgdParameter> = params
            .iter_mut()
            .zip(&mut buffers)
            .zip(&grads)
            .map(|((param, buffer), grad)| SgdParameter {
                param,
                grad,
                momentum_buffer: Some(buffer),
                first_step: step == 0,
            })
            .collect();
        sgd_steps(&mut parameters, &config).unwrap();
        // sgd.wgsl's element update, one element at a time.
        for ((w, b), g) in expected.iter_mut().zip(&grads) {
            for (i, g) in g.to_vec().unwrap().into_iter().enumerate() {
                let g = g + config.weight_decay * w[i];
                b[i] = if step == 0 { g } else { config.momentum * b[i] + (1.0 - config.dampening) * g };
                w[i] -= config.lr * (g + config.momentum * b[i]);
            }
        }
    }
    for (i, ((p, b), (w, eb))) in params.iter().zip(&buffers).zip(&expected).enumerate() {
        assert!(p.to_vec().unwrap() == *w && b.to_vec().unwrap() == *eb, "parameter {i}");
    }
}

/// Large products are cut into blocks of rows (300 rows) or of columns (40 rows, 300
/// columns) across the cores, others split inside `gemm` (100 × 50) or by batch entry
/// (small ones): every block, transposed operands, a batch of products and a bias added
/// onto the product included, against plain sums. Each product's output is not zeroed
/// before it is written, so memory full of NaN is freed first, for the allocator to hand
/// back: an output left unwritten would show.
#[test]
fn products_cut_into_row_or_column_blocks_match_the_reference() {
    let _turn = turn();
    let shapes = [(1, 300, 130, 70), (1, 40, 300, 70), (2, 40, 300, 70), (1, 100, 50, 100), (3, 5, 7, 9)];
    for (batch, m, n, k) in shapes {
        drop(std::hint::black_box(vec![f32::NAN; batch * m * n]));
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_shape = if trans_a { [batch, k, m] } else { [batch, m, k] };
            let b_shape = if trans_b { [batch, n, k] } else { [batch, k, n] };
            let a = Tensor::randn(&a_shape, 1, &Device::Cpu).unwrap();
            let b = Tensor::randn(&b_shape, 2, &Device::Cpu).unwrap();
            let got = a.matmul_t(&b, trans_a, trans_b).unwrap().to_vec().unwrap();
            let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
            for e in 0..batch {
                let (av, bv) = (&av[e * m * k..], &bv[e * k * n..]);
                let at = |i: usize, p: usize| if trans_a { av[p * m + i] } else { av[i * k + p] };
                let bt = |p: usize, j: usize| if trans_b { bv[j * k + p] } else { bv[p * n + j] };
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
                        let g = got[(e * m + i) * n + j] as f64;
                        assert!(
                            (g - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "{batch}×{m}×{n}×{k} entry {e} ({i}, {j}) {trans_a} {trans_b}: {g} vs {want}"
                        );
                    }
                }
            }
        }
        // No terms: zeros, not whatever the memory held.
        drop(std::hint::black_box(vec![f32::NAN; batch * m * n]));
        let empty = Tensor::zeros(&[batch, m, 0], &Device::Cpu)
            .unwrap()
            .matmul(&Tensor::zeros(&[batch, 0, n], &Device::Cpu).unwrap());
        assert_eq!(empty.unwrap().to_vec().unwrap(), vec![0.0; batch * m * n]);
        // A linear layer at batch m: the bias is the product's starting value.
        let x = Tensor::randn(&[m, k], 3, &Device::Cpu).unwrap();
        let w = Tensor::randn(&[n, k], 4, &Device::Cpu).unwrap();
        let bias = Tensor::randn(&[n], 5, &Device::Cpu).unwrap();
        let fused = x.linear_relu(&w, Some(&bias)).unwrap().to_vec().unwrap();
        let plain = x.matmul_t(&w, false, true).unwrap().add(&bias).unwrap().relu().unwrap().to_vec().unwrap();
        assert_eq!(fused, plain, "{m}×{n}×{k}");
    }
}
