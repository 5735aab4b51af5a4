//! What the criterion benches share: finding the GPU, and timing GPU work to completion.

use std::time::{Duration, Instant};

use kiln::Device;
use kiln::wgsl::{AdapterPreference, GpuContext, KernelClass};

/// As the examples and asl-app (see examples/support/mod.rs), so op timings include the
/// allocator training runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `KILN_BENCH_DEVICE` (set by `cargo xtask bench --device`): cpu, gpu or all (default).
pub fn wanted(device: &str) -> bool {
    std::env::var("KILN_BENCH_DEVICE").map_or(true, |wanted| wanted == "all" || wanted == device)
}

/// Whether to time the CPU. When so, the bench's thread first joins the compute pool, as a
/// training program's does (`kiln::threads::compute_on_this_thread`): otherwise every op
/// is handed to the pool's sleeping threads and waited for, which on a 2-core Intel Xeon VM
/// cost a 512×784×64 product half its speed (130 → 60–77 GFLOP/s).
pub fn cpu() -> bool {
    let wanted = wanted("cpu");
    if wanted {
        kiln::threads::compute_on_this_thread(None);
    }
    wanted
}

/// The GPU device, or `None` when it is not wanted or there is none (after a notice).
pub fn gpu(bench: &str) -> Option<(Device, GpuContext)> {
    if !wanted("gpu") {
        return None;
    }
    match Device::gpu() {
        Ok(device @ Device::Gpu(_)) => {
            let Device::Gpu(ctx) = &device else { unreachable!() };
            eprintln!("{bench}: GPU adapter {}", ctx.adapter());
            let ctx = ctx.clone();
            Some((device, ctx))
        }
        Ok(Device::Cpu) => None,
        Err(e) => {
            eprintln!("{bench}: no GPU ({e}); timing the CPU only");
            None
        }
    }
}

/// The GPU once per kernel class: `gpu`'s context (labelled "gpu") and, when that one runs
/// the software kernels, a context of the portable ones on the same adapter ("gpu
/// portable"), so a bench shows what the software kernels gain.
pub fn gpu_each_class(bench: &str) -> Vec<(&'static str, Device, GpuContext)> {
    let Some((device, ctx)) = gpu(bench) else { return Vec::new() };
    let mut each = vec![("gpu", device, ctx.clone())];
    if ctx.kernel_class() == KernelClass::Software {
        match GpuContext::with_kernel_class(&AdapterPreference::from_env(), KernelClass::Hardware) {
            Ok(portable) => each.push(("gpu portable", Device::Gpu(portable.clone()), portable)),
            Err(e) => eprintln!("{bench}: no context with the portable kernels ({e})"),
        }
    }
    each
}

/// A group's warm-up and measurement times (the matrix products' and the convolutions'):
/// as given, or 0.2 s and 1 s where `KILN_BENCH_QUICK` is set — benches/gpu/run.sh's
/// hardware run, which must fit in one call of the device tool.
pub fn times(warm_up: Duration, measurement: Duration) -> (Duration, Duration) {
    match std::env::var_os("KILN_BENCH_QUICK") {
        Some(_) => (Duration::from_millis(200), Duration::from_secs(1)),
        None => (warm_up, measurement),
    }
}

/// Runs `work` `iterations` times and returns the time until the GPU has finished all of it:
/// launches are only queued, so timing them alone would measure recording, not execution.
pub fn time_on_gpu(ctx: &GpuContext, iterations: u64, mut work: impl FnMut()) -> Duration {
    ctx.sync().expect("GPU idle before timing");
    let start = Instant::now();
    for _ in 0..iterations {
        work();
    }
    ctx.sync().expect("GPU finished");
    start.elapsed()
}

/// Panics unless `got` equals the CPU reference `want` within `tolerance` (relative).
pub fn check_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{what}: GPU {g} disagrees with CPU {w}");
    }
}
