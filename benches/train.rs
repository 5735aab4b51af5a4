//! End-to-end training throughput: steps/s and samples/s of each tutorial's training loop
//! (its model, optimizer, batch size and data loader on the real dataset) on the CPU and
//! the GPU adapter, after a warm-up, with peak memory.
//!
//! `cargo xtask bench --train` runs this and prints its table; directly:
//! `cargo bench --bench train -- [TUTORIAL...] [--device cpu|gpu|all] [--seconds S] [--profile] [--json PATH]`.
//! `--profile` also prints where each timed run spent its time, per phase of the step and
//! per op (`kiln_tensor::profile`); the throughput of a profiled run includes its overhead.
//! The datasets come from `KILN_DATA_DIR` (default `../shared/data` beside the checkout).
//!
//! A measurement trains from the start of an epoch until the epoch ends or `--seconds`
//! (default 30) have passed, and ends by reading the loss, so GPU timings include all the
//! queued work. Each (tutorial, device) runs in a fresh process of its own, so memory is its
//! own: the process's peak resident set (dataset included) and, on the GPU, the peak bytes
//! of device buffers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln::Device;
use kiln::nn::{CrossEntropyLoss, Module};
use kiln::profile;
use kiln::training;
use kiln::tutorials::Tutorial;
use kiln::wgsl::{KernelTime, RuntimeStats};
use serde_json::json;

/// As the examples and asl-app: see examples/support/mod.rs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    tutorials: Vec<Tutorial>,
    devices: Vec<String>,
    seconds: f64,
    json: Option<PathBuf>,
    profile: bool,
    /// Set in the child processes: measure the one pair asked, print its row only.
    isolated: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        tutorials: Vec::new(),
        devices: vec!["cpu".into(), "gpu".into()],
        seconds: 30.0,
        json: None,
        profile: false,
        isolated: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--device" => {
                options.devices = match args.next().as_deref() {
                    Some("all") => vec!["cpu".into(), "gpu".into()],
                    Some(d @ ("cpu" | "gpu")) => vec![d.to_string()],
                    other => return Err(format!("--device {other:?}: expected cpu, gpu or all")),
                }
            }
            "--seconds" => {
                options.seconds =
                    args.next().and_then(|s| s.parse().ok()).ok_or("--seconds needs a number of seconds")?
            }
            "--json" => options.json = Some(args.next().ok_or("--json needs a path")?.into()),
            "--isolated" => options.isolated = true,
            "--profile" => options.profile = true,
            // What cargo bench passes to every bench target.
            "--bench" => {}
            name => options.tutorials.push(name.parse()?),
        }
    }
    if options.tutorials.is_empty() {
        options.tutorials = Tutorial::ALL.to_vec();
    }
    Ok(options)
}

const HEADER: &str =
    "tutorial           device                              batch   steps/s  samples/s   peak RSS peak GPU mem";

/// Runs every (tutorial, device) pair in a child process of this bench and gathers their rows.
fn run_isolated(options: &Options) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    println!("{HEADER}");
    let mut rows = Vec::new();
    let scratch = std::env::temp_dir().join(format!("kiln-train-bench-{}.json", std::process::id()));
    for tutorial in &options.tutorials {
        for device in &options.devices {
            let status = std::process::Command::new(std::env::current_exe()?)
                .args([tutorial.name(), "--device", device, "--isolated", "--seconds"])
                .arg(options.seconds.to_string())
                .arg("--json")
                .arg(&scratch)
                .args(options.profile.then_some("--profile"))
                .status()?;
            if !status.success() {
                return Err(format!("{tutorial} on {device}: the measurement failed").into());
            }
            let child: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&scratch)?)?;
            rows.extend(child);
        }
    }
    let _ = std::fs::remove_file(&scratch);
    Ok(rows)
}

struct Measurement {
    steps: usize,
    samples: usize,
    seconds: f64,
    full_epoch: bool,
    loss: f32,
    /// The GPU runtime's counters over the timed steps.
    runtime: Option<RuntimeStats>,
    profile: Option<kiln::profile::Profile>,
    /// With `--profile` on a GPU that has timestamp queries: each kernel's GPU time.
    kernel_times: Option<Vec<KernelTime>>,
}

fn measure(
    tutorial: Tutorial,
    device: &Device,
    data: &(kiln::data::ImageDataset, kiln::data::ImageDataset),
    budget: Duration,
    profile: bool,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    let mut model = tutorial.model(0)?;
    model.to_device(device)?;
    let mut optimizer = tutorial.optimizer(&model, tutorial.lr());
    let (train, _) = tutorial.loaders(&data.0, &data.1, device, 0, false)?;
    let loss_fn = CrossEntropyLoss::new();

    // Warm-up: pipelines compiled, buffer pool and allocator filled, caches warm.
    let warm_up = Instant::now();
    let batches = train
        .epoch(0)?
        .enumerate()
        .take_while(|(i, _)| *i < 3 || (*i < 50 && warm_up.elapsed() < Duration::from_secs(3)));
    training::train_epoch(&mut model, optimizer.as_mut(), &loss_fn, batches.map(|(_, b)| b), |_| {})?;

    let stats = || match device {
        Device::Gpu(ctx) => Some(ctx.stats()),
        Device::Cpu => None,
    };
    let before = stats();
    profile::enable(profile);
    profile::take();
    let timed_gpu = match device {
        Device::Gpu(ctx) if profile && ctx.can_time_kernels() => Some(ctx),
        _ => None,
    };
    if let Some(ctx) = timed_gpu {
        ctx.time_kernels(true)?;
    }
    let started = Instant::now();
    let batches = train.epoch(1)?;
    let total = train.len();
    let mut steps = 0;
    let timed = batches.take_while(|_| started.elapsed() < budget).inspect(|_| steps += 1);
    let metrics = training::train_epoch(&mut model, optimizer.as_mut(), &loss_fn, timed, |_| {})?;
    let recorded = profile.then(profile::take);
    profile::enable(false);
    let kernel_times = timed_gpu.map(|ctx| ctx.take_kernel_times());
    if let Some(ctx) = timed_gpu {
        ctx.time_kernels(false)?;
    }
    Ok(Measurement {
        steps,
        samples: metrics.samples,
        seconds: started.elapsed().as_secs_f64(),
        full_epoch: steps == total,
        loss: metrics.loss,
        runtime: before.zip(stats()).map(|(before, after)| after.since(&before)),
        profile: recorded,
        kernel_times,
    })
}

/// Each kernel's share of the GPU time of the timed steps, per step, longest first.
fn print_kernel_times(times: &[KernelTime], steps: usize, seconds: f64) {
    let steps = steps.max(1) as f64;
    let gpu: f64 = times.iter().map(|t| t.total.as_secs_f64()).sum();
    println!(
        "GPU time {:.2} ms a step of {:.2} ms (kernels timed one pass each, so the step ran slower than untimed):",
        gpu * 1e3 / steps,
        seconds * 1e3 / steps
    );
    println!("{:>9} {:>7} {:>9}  kernel", "ms/step", "share", "launches");
    for t in times {
        let total = t.total.as_secs_f64();
        println!(
            "{:>9.3} {:>6.1}% {:>9.1}  {}",
            total * 1e3 / steps,
            100.0 * total / gpu.max(f64::MIN_POSITIVE),
            t.launches as f64 / steps,
            t.kernel
        );
    }
    println!();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // This thread trains: it computes beside rayon's threads instead of handing work to them.
    kiln::threads::compute_on_this_thread(None);
    let options = options()?;
    if !options.isolated {
        let rows = run_isolated(&options)?;
        if let Some(path) = options.json {
            std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        return Ok(());
    }
    let root = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    // The cores Kiln's CPU ops spread over (RAYON_NUM_THREADS when set).
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for tutorial in &options.tutorials {
        let dir = root.join(tutorial.dataset_dir());
        let data = tutorial.datasets(&dir).map_err(|e| format!("{tutorial}: {e} (set KILN_DATA_DIR)"))?;
        for device_name in &options.devices {
            let device = match device_name.as_str() {
                "cpu" => Device::Cpu,
                _ => match Device::gpu() {
                    Ok(device) => device,
                    Err(e) => {
                        eprintln!("{tutorial}: no GPU ({e}); skipping the GPU");
                        continue;
                    }
                },
            };
            let m = measure(*tutorial, &device, &data, Duration::from_secs_f64(options.seconds), options.profile)?;
            let gpu_peak = match &device {
                Device::Gpu(ctx) => Some(ctx.stats().peak_buffer_bytes),
                Device::Cpu => None,
            };
            let rss = training::peak_resident_bytes();
            let device_label = match &device {
                Device::Gpu(ctx) => format!("gpu: {}", ctx.adapter().name),
                Device::Cpu => format!("cpu ({threads} threads)"),
            };
            let mib = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{} MiB", b >> 20));
            println!(
                "{:<18} {:<34} {:>6} {:>9.1} {:>10.0} {:>10} {:>12}{}",
                tutorial.name(),
                device_label.chars().take(34).collect::<String>(),
                tutorial.batch_size(),
                m.steps as f64 / m.seconds,
                m.samples as f64 / m.seconds,
                mib(rss),
                mib(gpu_peak),
                if m.full_epoch { "" } else { "  (part of an epoch)" }
            );
            let per_step = |n: u64| n as f64 / m.steps.max(1) as f64;
            if let Some(r) = &m.runtime {
                println!(
                    "{:<18} per step: {:.1} dispatches, {:.2} submits, {:.2} bind groups and {:.2} buffers created",
                    "",
                    per_step(r.dispatches),
                    per_step(r.submits),
                    per_step(r.bind_groups_created),
                    per_step(r.buffers_created)
                );
            }
            if let Some(recorded) = &m.profile {
                println!("\n{tutorial} on {device_label}, {} steps:\n{recorded}", m.steps);
            }
            if let Some(times) = &m.kernel_times {
                print_kernel_times(times, m.steps, m.seconds);
            }
            rows.push(json!({
                "tutorial": tutorial.name(),
                "framework": "kiln",
                "device": device_label,
                "batch_size": tutorial.batch_size(),
                "threads": threads,
                "steps": m.steps,
                "seconds": m.seconds,
                "steps_per_second": m.steps as f64 / m.seconds,
                "samples_per_second": m.samples as f64 / m.seconds,
                "full_epoch": m.full_epoch,
                "mean_loss": m.loss,
                "peak_rss_bytes": rss,
                "peak_gpu_buffer_bytes": gpu_peak,
                "per_step": m.runtime.map(|r| json!({
                    "dispatches": per_step(r.dispatches),
                    "submits": per_step(r.submits),
                    "bind_groups_created": per_step(r.bind_groups_created),
                    "buffers_created": per_step(r.buffers_created),
                })),
            }));
        }
    }
    if let Some(path) = options.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
