//! Matrix-product throughput on the GPU adapter and on the CPU (ndarray), in GFLOP/s:
//! criterion's "elements" here are floating-point operations.
//!
//! `cargo bench --bench matmul -- gpu` (or `cpu`, or a shape such as `512x512x512`). On a
//! software adapter "gpu" times the software kernels and "gpu portable" the portable ones.

mod support;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln::{Device, Tensor};

/// (label, M, N, K, A transposed, B transposed): square sizes, then the ASL MLP's Linear
/// layers at batch 32 (x · Wᵀ with W stored [out, in]), then the Fashion-MNIST MLP's
/// products at batch 64: its first layer's forward product, the weight gradients gᵀ · x
/// of its first two layers (the batch summed) and its second layer's input gradient g · W.
const SHAPES: [(&str, usize, usize, usize, bool, bool); 11] = [
    ("square", 256, 256, 256, false, false),
    ("square", 512, 512, 512, false, false),
    ("square", 1024, 1024, 1024, false, false),
    ("square", 2048, 2048, 2048, false, false),
    ("asl-mlp fc1", 32, 512, 784, false, true),
    ("asl-mlp fc2", 32, 512, 512, false, true),
    ("asl-mlp fc3", 32, 24, 512, false, true),
    ("fashion-mlp fc1", 64, 512, 784, false, true),
    ("fashion-mlp fc1 weight grad", 512, 784, 64, true, false),
    ("fashion-mlp fc2 weight grad", 512, 512, 64, true, false),
    ("fashion-mlp fc2 input grad", 64, 512, 512, false, false),
];

fn operands(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool, device: &Device) -> (Tensor, Tensor) {
    let a_shape = if trans_a { [k, m] } else { [m, k] };
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    (Tensor::randn(&a_shape, 1, device).unwrap(), Tensor::randn(&b_shape, 2, device).unwrap())
}

/// Fails the bench before timing when the GPU result disagrees with the CPU reference.
fn check_against_cpu(gpu: &Device, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) {
    let (a, b) = operands(m, n, k, trans_a, trans_b, &Device::Cpu);
    let want = a.matmul_t(&b, trans_a, trans_b).unwrap().to_vec().unwrap();
    let (ag, bg) = (a.to(gpu).unwrap(), b.to(gpu).unwrap());
    let got = ag.matmul_t(&bg, trans_a, trans_b).unwrap().to_vec().unwrap();
    support::check_close("matmul", &got, &want, 1e-4 * (k as f32).sqrt());
}

fn bench_matmul(c: &mut Criterion) {
    let gpus = support::gpu_each_class("matmul bench");
    let mut group = c.benchmark_group("matmul");
    let (warm_up, measurement) = support::times(Duration::from_millis(500), Duration::from_secs(3));
    group.sample_size(10).warm_up_time(warm_up).measurement_time(measurement);
    for (label, m, n, k, trans_a, trans_b) in SHAPES {
        let id = format!("{label} {m}x{n}x{k}");
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));

        if support::cpu() {
            let (a, b) = operands(m, n, k, trans_a, trans_b, &Device::Cpu);
            group.bench_function(BenchmarkId::new("cpu", &id), |bench| {
                bench.iter(|| a.matmul_t(&b, trans_a, trans_b).unwrap());
            });
        }

        for (name, device, ctx) in &gpus {
            check_against_cpu(device, m, n, k, trans_a, trans_b);
            let (a, b) = operands(m, n, k, trans_a, trans_b, device);
            group.bench_function(BenchmarkId::new(*name, &id), |bench| {
                bench.iter_custom(|iterations| {
                    support::time_on_gpu(ctx, iterations, || drop(a.matmul_t(&b, trans_a, trans_b).unwrap()))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
