//! The host's cost of GPU work: microseconds per dispatch of a tiny kernel (1,000 launches
//! recorded, then waited for), and the time to record one ASL CNN training step (forward,
//! loss, backward, Adam step) without waiting for the GPU to run it. On a hardware GPU the
//! tutorial models are a few hundred tiny kernels a step, so these set the speed.
//!
//! `cargo bench --bench dispatch` (or `cargo xtask bench dispatch --device gpu`).

// Shared with the layer benches; this one times the GPU only and checks no values.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln::Tensor;
use kiln::autograd::Var;
use kiln::nn::{CrossEntropyLoss, Module};
use kiln::tutorials::Tutorial;
use kiln::wgsl::kernels::unary::{UnaryOp, unary};

const LAUNCHES: u64 = 1000;

fn bench_tiny_kernel(c: &mut Criterion) {
    let Some((_, ctx)) = support::gpu("dispatch bench") else { return };
    let x = ctx.upload(&[1.0f32; 256]).unwrap();
    let mut group = c.benchmark_group("dispatch");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    // Throughput in launches, so criterion's "elements/s" reads as dispatches per second.
    group.throughput(Throughput::Elements(LAUNCHES));
    group.bench_function("gpu tiny kernel ×1000, synced", |bench| {
        bench.iter_custom(|iterations| {
            support::time_on_gpu(&ctx, iterations, || {
                for _ in 0..LAUNCHES {
                    std::hint::black_box(unary(&ctx, UnaryOp::AddScalar, &x, 256, 1.0).unwrap());
                }
            })
        })
    });
    group.finish();
}

fn bench_record_step(c: &mut Criterion) {
    let Some((device, ctx)) = support::gpu("dispatch bench") else { return };
    let tutorial = Tutorial::AslCnn;
    let mut model = tutorial.model(0).unwrap();
    model.to_device(&device).unwrap();
    let mut optimizer = tutorial.optimizer(&model, tutorial.lr());
    let batch = tutorial.batch_size();
    let images = Tensor::rand(&[batch, 1, 28, 28], 1, &device).unwrap();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % 24).collect();
    let labels = Tensor::from_vec_i32(labels, &[batch], &device).unwrap();
    let loss_fn = CrossEntropyLoss::new();
    let mut step = || {
        optimizer.zero_grad();
        let logits = model.forward(&Var::constant(images.clone())).unwrap();
        let loss = loss_fn.forward(&logits, &labels).unwrap();
        loss.backward().unwrap();
        optimizer.step().unwrap();
    };
    let mut group = c.benchmark_group("dispatch");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    group.bench_function("gpu record one ASL CNN step", |bench| {
        bench.iter_custom(|iterations| {
            let mut recording = Duration::ZERO;
            for _ in 0..iterations {
                ctx.sync().unwrap();
                let start = Instant::now();
                step();
                recording += start.elapsed();
            }
            ctx.sync().unwrap();
            recording
        })
    });
    group.finish();
}

criterion_group!(benches, bench_tiny_kernel, bench_record_step);
criterion_main!(benches);
