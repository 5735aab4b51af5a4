//! The ASL CNN's layer ops at batch 32 (the DLI notebook's model): conv2d forward and
//! backward for its three convolutions, and the fused cross-entropy with its gradient, on
//! the GPU adapter and on the CPU. Each GPU op is checked against the CPU once before timing.
//!
//! `cargo bench --bench layers -- gpu` (or `cpu`, `conv`, `cross_entropy`).

mod support;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln::{Conv2d, Device, Reduction, Tensor};

/// (label, input [N, C, H, W], output channels): 3×3 kernels, padding 1, stride 1.
const CONVS: [(&str, [usize; 4], usize); 3] = [
    ("conv1 1→25 28×28", [32, 1, 28, 28], 25),
    ("conv2 25→50 14×14", [32, 25, 14, 14], 50),
    ("conv3 50→75 7×7", [32, 50, 7, 7], 75),
];

struct ConvCase {
    x: Tensor,
    w: Tensor,
    b: Tensor,
    grad: Tensor,
}

fn conv_case(input: [usize; 4], out: usize, device: &Device) -> ConvCase {
    let conv = Conv2d::default().padding(1);
    let x = Tensor::randn(&input, 1, device).unwrap();
    let w = Tensor::randn(&[out, input[1], 3, 3], 2, device).unwrap();
    let b = Tensor::randn(&[out], 3, device).unwrap();
    let y_shape = x.conv2d(&w, Some(&b), &conv).unwrap().shape().to_vec();
    let grad = Tensor::randn(&y_shape, 4, device).unwrap();
    ConvCase { x, w, b, grad }
}

fn bench_conv(c: &mut Criterion) {
    let gpu = support::gpu("layers bench");
    let conv = Conv2d::default().padding(1);
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (label, input, out) in CONVS {
        let [n, ci, h, w] = input;
        // Forward: 2·N·O·H·W·C·9 FLOPs (padding keeps H×W); each backward half the same again.
        group.throughput(Throughput::Elements((2 * n * out * h * w * ci * 9) as u64));
        let cpu = conv_case(input, out, &Device::Cpu);
        if support::cpu() {
            group.bench_function(BenchmarkId::new("cpu forward", label), |bench| {
                bench.iter(|| cpu.x.conv2d(&cpu.w, Some(&cpu.b), &conv).unwrap())
            });
            group.bench_function(BenchmarkId::new("cpu backward", label), |bench| {
                bench.iter(|| cpu.grad.conv2d_backward(&cpu.x, &cpu.w, &conv, true).unwrap())
            });
        }
        let Some((device, ctx)) = &gpu else { continue };
        let on_gpu = conv_case(input, out, device);
        let patch = (ci * 9) as f32;
        support::check_close(
            "conv2d forward",
            &on_gpu.x.conv2d(&on_gpu.w, Some(&on_gpu.b), &conv).unwrap().to_vec().unwrap(),
            &cpu.x.conv2d(&cpu.w, Some(&cpu.b), &conv).unwrap().to_vec().unwrap(),
            1e-4 * patch.sqrt(),
        );
        support::check_close(
            "conv2d weight gradient",
            &on_gpu.grad.conv2d_backward(&on_gpu.x, &on_gpu.w, &conv, true).unwrap().weight.to_vec().unwrap(),
            &cpu.grad.conv2d_backward(&cpu.x, &cpu.w, &conv, true).unwrap().weight.to_vec().unwrap(),
            1e-4 * ((n * h * w) as f32).sqrt(),
        );
        group.bench_function(BenchmarkId::new("gpu forward", label), |bench| {
            bench.iter_custom(|iterations| {
                support::time_on_gpu(ctx, iterations, || {
                    drop(on_gpu.x.conv2d(&on_gpu.w, Some(&on_gpu.b), &conv).unwrap())
                })
            })
        });
        group.bench_function(BenchmarkId::new("gpu backward", label), |bench| {
            bench.iter_custom(|iterations| {
                support::time_on_gpu(ctx, iterations, || {
                    drop(on_gpu.grad.conv2d_backward(&on_gpu.x, &on_gpu.w, &conv, true).unwrap())
                })
            })
        });
    }
    group.finish();
}

fn bench_cross_entropy(c: &mut Criterion) {
    let gpu = support::gpu("layers bench");
    let mut group = c.benchmark_group("cross_entropy");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let (rows, classes) = (32, 24);
    group.throughput(Throughput::Elements((rows * classes) as u64));
    let logits = Tensor::randn(&[rows, classes], 5, &Device::Cpu).unwrap();
    let labels: Vec<i32> = (0..rows as i32).map(|i| i % classes as i32).collect();
    let labels = Tensor::from_vec_i32(labels, &[rows], &Device::Cpu).unwrap();
    let id = "asl 32×24 with grad";
    if support::cpu() {
        group.bench_function(BenchmarkId::new("cpu", id), |bench| {
            bench.iter(|| logits.cross_entropy_with_grad(&labels, None, Reduction::Mean).unwrap())
        });
    }
    if let Some((device, ctx)) = &gpu {
        let (lg, yg) = (logits.to(device).unwrap(), labels.to(device).unwrap());
        let (loss, _) = lg.cross_entropy_with_grad(&yg, None, Reduction::Mean).unwrap();
        let (want, _) = logits.cross_entropy_with_grad(&labels, None, Reduction::Mean).unwrap();
        support::check_close("cross_entropy", &loss.to_vec().unwrap(), &want.to_vec().unwrap(), 1e-5);
        group.bench_function(BenchmarkId::new("gpu", id), |bench| {
            bench.iter_custom(|iterations| {
                support::time_on_gpu(ctx, iterations, || {
                    drop(lg.cross_entropy_with_grad(&yg, None, Reduction::Mean).unwrap())
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv, bench_cross_entropy);
criterion_main!(benches);
