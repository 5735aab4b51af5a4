//! The tutorial models' layer ops: conv2d forward and backward (input and weight gradients)
//! for every convolution of the ASL CNN (batch 32), the Fashion-MNIST CNN (batch 256) and
//! LeNet (batch 4); and at the ASL CNN's shapes batch norm (training forward + backward),
//! max pooling, the fused cross-entropy with its gradient and an Adam step on its largest
//! weight — on the GPU adapter and on the CPU. Each GPU op is checked against the CPU once
//! before timing.
//!
//! `cargo bench --bench layers -- gpu` (or `cpu`, `conv`, `batch_norm`, `cross_entropy`, …). On
//! a software adapter the convolutions are timed with both kernel classes ("gpu", the
//! software kernels; "gpu portable"). With the portable kernels (a hardware GPU's) they
//! are also timed the way those ran before their tiled kernels ("… columns"): the batch's
//! column matrix and matrix products, so that a hardware run (benches/gpu/run.sh) shows
//! which way is faster there.

mod support;

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln::wgsl::kernels::conv::{ConvShape, col2im, im2col};
use kiln::wgsl::kernels::matmul::{BiasAxis, Epilogue, MatmulShape, matmul, matmul_sum, matmul_with};
use kiln::wgsl::{GpuBuffer, GpuContext, KernelClass};
use kiln::{AdamConfig, BatchNormConfig, Conv2d, Device, Pool2d, Reduction, Tensor};

/// (label, input [N, C, H, W], output channels, kernel, padding), stride 1.
const CONVS: [(&str, [usize; 4], usize, usize, usize); 7] = [
    ("asl conv1 1→25 28×28", [32, 1, 28, 28], 25, 3, 1),
    ("asl conv2 25→50 14×14", [32, 25, 14, 14], 50, 3, 1),
    ("asl conv3 50→75 7×7", [32, 50, 7, 7], 75, 3, 1),
    ("fashion conv1 1→32 28×28 5×5", [256, 1, 28, 28], 32, 5, 0),
    ("fashion conv2 32→64 12×12 5×5", [256, 32, 12, 12], 64, 5, 0),
    ("lenet conv1 3→6 32×32 5×5", [4, 3, 32, 32], 6, 5, 0),
    ("lenet conv2 6→16 14×14 5×5", [4, 6, 14, 14], 16, 5, 0),
];

struct ConvCase {
    x: Tensor,
    w: Tensor,
    b: Tensor,
    grad: Tensor,
}

fn conv_case(input: [usize; 4], out: usize, kernel: usize, conv: &Conv2d, device: &Device) -> ConvCase {
    let x = Tensor::randn(&input, 1, device).unwrap();
    let w = Tensor::randn(&[out, input[1], kernel, kernel], 2, device).unwrap();
    let b = Tensor::randn(&[out], 3, device).unwrap();
    let y_shape = x.conv2d(&w, Some(&b), conv).unwrap().shape().to_vec();
    let grad = Tensor::randn(&y_shape, 4, device).unwrap();
    ConvCase { x, w, b, grad }
}

/// A convolution's operands on the GPU as raw buffers, for the column path below.
struct ColumnCase {
    x: GpuBuffer,
    w: GpuBuffer,
    b: GpuBuffer,
    grad: GpuBuffer,
    shape: ConvShape,
    out: usize,
}

impl ColumnCase {
    fn new(ctx: &GpuContext, cpu: &ConvCase, conv: &Conv2d, out: usize) -> Self {
        let upload = |t: &Tensor| ctx.upload(&t.to_vec().unwrap()).unwrap();
        let [batch, channels, height, width] = cpu.x.shape().try_into().unwrap();
        let [_, _, kh, kw] = cpu.w.shape().try_into().unwrap();
        let shape = ConvShape {
            batch,
            channels,
            height,
            width,
            kernel: [kh, kw],
            stride: conv.stride,
            padding: conv.padding,
            dilation: conv.dilation,
        };
        ColumnCase { x: upload(&cpu.x), w: upload(&cpu.w), b: upload(&cpu.b), grad: upload(&cpu.grad), shape, out }
    }

    fn pixels(&self) -> usize {
        let [oh, ow] = self.shape.output().unwrap();
        oh * ow
    }

    /// The output: the weight [O, P] times each image's columns [P, S], the bias added.
    fn forward(&self, ctx: &GpuContext) -> GpuBuffer {
        let (p, s) = (self.shape.patch_len(), self.pixels());
        let columns = im2col(ctx, &self.x, &self.shape).unwrap();
        let product = MatmulShape { a_batch_stride: 0, ..MatmulShape::new(self.shape.batch, self.out, s, p) };
        let epilogue = Epilogue { bias: Some((&self.b, BiasAxis::Row)), relu: false };
        matmul_with(ctx, &self.w, &columns, product, epilogue).unwrap()
    }

    /// The weight gradient Σ grad[n] · columns[n]ᵀ and the input gradient, each image's
    /// weightᵀ · grad[n] added back into place.
    fn backward(&self, ctx: &GpuContext) -> (GpuBuffer, GpuBuffer) {
        let (batch, p, s, o) = (self.shape.batch, self.shape.patch_len(), self.pixels(), self.out);
        let columns = im2col(ctx, &self.x, &self.shape).unwrap();
        let weight = MatmulShape { trans_b: true, b_batch_stride: p * s, ..MatmulShape::new(batch, o, p, s) };
        let weight_grad = matmul_sum(ctx, &self.grad, &columns, weight).unwrap();
        let input = MatmulShape { trans_a: true, a_batch_stride: 0, ..MatmulShape::new(batch, p, s, o) };
        let input_columns = matmul(ctx, &self.w, &self.grad, input).unwrap();
        (weight_grad, col2im(ctx, &input_columns, &self.shape).unwrap())
    }
}

fn bench_conv(c: &mut Criterion) {
    let gpus = support::gpu_each_class("layers bench");
    let mut group = c.benchmark_group("conv2d");
    let (warm_up, measurement) = support::times(Duration::from_millis(500), Duration::from_secs(3));
    group.sample_size(10).warm_up_time(warm_up).measurement_time(measurement);
    for (label, input, out, kernel, padding) in CONVS {
        let conv = Conv2d::default().padding(padding);
        let [n, ci, h, w] = input;
        let (ho, wo) = (h + 2 * padding + 1 - kernel, w + 2 * padding + 1 - kernel);
        // Forward: 2·N·O·Ho·Wo·C·k² FLOPs; the backward computes two products of that size.
        group.throughput(Throughput::Elements((2 * n * out * ho * wo * ci * kernel * kernel) as u64));
        let cpu = conv_case(input, out, kernel, &conv, &Device::Cpu);
        if support::cpu() {
            group.bench_function(BenchmarkId::new("cpu forward", label), |bench| {
                bench.iter(|| cpu.x.conv2d(&cpu.w, Some(&cpu.b), &conv).unwrap())
            });
            group.bench_function(BenchmarkId::new("cpu backward", label), |bench| {
                bench.iter(|| cpu.grad.conv2d_backward(&cpu.x, &cpu.w, &conv, true).unwrap())
            });
        }
        for (name, device, ctx) in &gpus {
            let on_gpu = conv_case(input, out, kernel, &conv, device);
            let patch = (ci * kernel * kernel) as f32;
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
                1e-4 * ((n * ho * wo) as f32).sqrt(),
            );
            group.bench_function(BenchmarkId::new(format!("{name} forward"), label), |bench| {
                bench.iter_custom(|iterations| {
                    support::time_on_gpu(ctx, iterations, || {
                        drop(on_gpu.x.conv2d(&on_gpu.w, Some(&on_gpu.b), &conv).unwrap())
                    })
                })
            });
            group.bench_function(BenchmarkId::new(format!("{name} backward"), label), |bench| {
                bench.iter_custom(|iterations| {
                    support::time_on_gpu(ctx, iterations, || {
                        drop(on_gpu.grad.conv2d_backward(&on_gpu.x, &on_gpu.w, &conv, true).unwrap())
                    })
                })
            });
            if ctx.kernel_class() != KernelClass::Hardware {
                continue;
            }
            let columns = ColumnCase::new(ctx, &cpu, &conv, out);
            let weight_grad = ctx.read::<f32>(&columns.backward(ctx).0, out * ci * kernel * kernel).unwrap();
            support::check_close(
                "conv2d weight gradient by columns",
                &weight_grad,
                &cpu.grad.conv2d_backward(&cpu.x, &cpu.w, &conv, true).unwrap().weight.to_vec().unwrap(),
                1e-4 * ((n * ho * wo) as f32).sqrt(),
            );
            group.bench_function(BenchmarkId::new(format!("{name} columns forward"), label), |bench| {
                bench.iter_custom(|iterations| support::time_on_gpu(ctx, iterations, || drop(columns.forward(ctx))))
            });
            group.bench_function(BenchmarkId::new(format!("{name} columns backward"), label), |bench| {
                bench.iter_custom(|iterations| support::time_on_gpu(ctx, iterations, || drop(columns.backward(ctx))))
            });
        }
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

/// Batch norm's training forward and backward with its fused ReLU, as the ASL CNN runs it
/// after each convolution (`[32, 25, 28, 28]` and the third layer's `[32, 75, 7, 7]`, whose
/// small planes cost the most per element), and 2×2 max pooling of the first; elements per
/// second.
fn bench_norm_and_pool(c: &mut Criterion) {
    let gpu = support::gpu("layers bench");
    let mut group = c.benchmark_group("batch_norm_and_pool");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let config = BatchNormConfig { relu: true, ..BatchNormConfig::default() };
    let run_norm = |x: &Tensor, dy: &Tensor| {
        let channels = x.shape()[1];
        let (mut mean, mut var) =
            (Tensor::zeros(&[channels], &x.device()).unwrap(), Tensor::ones(&[channels], &x.device()).unwrap());
        let (y, saved) = x.batch_norm2d_train(None, None, &mut mean, &mut var, &config).unwrap();
        (y, dy.batch_norm2d_backward(x, None, false, &saved, true).unwrap().input)
    };
    for shape in [[32, 25, 28, 28], [32, 75, 7, 7]] {
        group.throughput(Throughput::Elements(shape.iter().product::<usize>() as u64));
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let name = format!("batch_norm2d_relu {}", dims.join("×"));
        let (x, dy) =
            (Tensor::randn(&shape, 8, &Device::Cpu).unwrap(), Tensor::randn(&shape, 9, &Device::Cpu).unwrap());
        if support::cpu() {
            group.bench_function(BenchmarkId::new("cpu", &name), |bench| bench.iter(|| run_norm(&x, &dy)));
        }
        if let Some((device, ctx)) = &gpu {
            let (xg, dyg) = (x.to(device).unwrap(), dy.to(device).unwrap());
            let (want, got) = (run_norm(&x, &dy).1.to_vec().unwrap(), run_norm(&xg, &dyg).1.to_vec().unwrap());
            support::check_close("batch_norm2d backward", &got, &want, 1e-3);
            group.bench_function(BenchmarkId::new("gpu", &name), |bench| {
                bench.iter_custom(|iterations| support::time_on_gpu(ctx, iterations, || drop(run_norm(&xg, &dyg))))
            });
        }
    }
    let shape = [32, 25, 28, 28];
    group.throughput(Throughput::Elements(shape.iter().product::<usize>() as u64));
    let pool = Pool2d::new(2);
    let x = Tensor::randn(&shape, 8, &Device::Cpu).unwrap();
    if support::cpu() {
        group.bench_function(BenchmarkId::new("cpu", "max_pool2d 32×25×28×28"), |bench| {
            bench.iter(|| x.max_pool2d(&pool).unwrap())
        });
    }
    if let Some((device, ctx)) = &gpu {
        let xg = x.to(device).unwrap();
        group.bench_function(BenchmarkId::new("gpu", "max_pool2d 32×25×28×28"), |bench| {
            bench
                .iter_custom(|iterations| support::time_on_gpu(ctx, iterations, || drop(xg.max_pool2d(&pool).unwrap())))
        });
    }
    group.finish();
}

/// One fused Adam step on the CNN's largest weight (675 → 512); parameters per second.
fn bench_adam(c: &mut Criterion) {
    let gpu = support::gpu("layers bench");
    let mut group = c.benchmark_group("adam");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let shape = [512, 675];
    group.throughput(Throughput::Elements((512 * 675) as u64));
    let config = AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    let state = |device: &Device| {
        let zeros = || Tensor::zeros(&shape, device).unwrap();
        (Tensor::randn(&shape, 1, device).unwrap(), Tensor::randn(&shape, 2, device).unwrap(), zeros(), zeros())
    };
    if support::cpu() {
        let (mut w, g, mut m, mut v) = state(&Device::Cpu);
        let mut step = 0;
        group.bench_function(BenchmarkId::new("cpu", "step 512×675"), |bench| {
            bench.iter(|| {
                step += 1;
                w.adam_step(&g, &mut m, &mut v, &config, step).unwrap()
            })
        });
        // A parameter whose gradient stays zero: its moments decay through the subnormal
        // range, where Intel cores compute through slow microcode unless subnormals are
        // flushed (crates/kiln-tensor/src/subnormals.rs). Fresh subnormal moments each step.
        let (zero_grad, tiny) = (Tensor::zeros(&shape, &Device::Cpu).unwrap(), f32::MIN_POSITIVE / 3.0);
        let subnormal = || Tensor::full(&shape, tiny, &Device::Cpu).unwrap();
        group.bench_function(BenchmarkId::new("cpu", "step 512×675, subnormal moments"), |bench| {
            bench.iter_batched_ref(
                || (subnormal(), subnormal()),
                |(m, v)| w.adam_step(&zero_grad, m, v, &config, 10).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    if let Some((device, ctx)) = &gpu {
        let (mut w, g, mut m, mut v) = state(device);
        let (mut wc, gc, mut mc, mut vc) = state(&Device::Cpu);
        w.adam_step(&g, &mut m, &mut v, &config, 1).unwrap();
        wc.adam_step(&gc, &mut mc, &mut vc, &config, 1).unwrap();
        support::check_close("adam step", &w.to_vec().unwrap(), &wc.to_vec().unwrap(), 1e-5);
        let mut step = 1;
        group.bench_function(BenchmarkId::new("gpu", "step 512×675"), |bench| {
            bench.iter_custom(|iterations| {
                support::time_on_gpu(ctx, iterations, || {
                    step += 1;
                    w.adam_step(&g, &mut m, &mut v, &config, step).unwrap()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv, bench_cross_entropy, bench_norm_and_pool, bench_adam);
criterion_main!(benches);
