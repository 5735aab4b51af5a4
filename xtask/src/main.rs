//! Project tasks: `cargo xtask <task>`.
//!
//! - `adapter`: the GPU adapter Kiln would use here, and its limits.
//! - `bench [FILTER] [--device cpu|gpu|all] [--json PATH]`: runs the criterion benches of
//!   the `kiln` package (those whose name matches FILTER), then prints one table — bench,
//!   device, median time, throughput — and with `--json` writes the same rows for tools.
//! - `bench --train [TUTORIAL...] [--device …] [--seconds S] [--compare-torch] [--profile] [--json PATH]`:
//!   training throughput (steps/s, samples/s, peak memory) of each tutorial on each device
//!   (`benches/train.rs`); with `--compare-torch`, the same models in PyTorch on the CPU
//!   (`benches/torch_train.py`, same data, settings and thread count) and the ratio; with
//!   `--profile`, each run's time per phase of the step and per op (`kiln_tensor::profile`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use kiln_wgsl::{AdapterPreference, GpuContext};
use serde_json::{Value, json};

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { kiln_wgsl::quiet_headless_vulkan() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("adapter") => adapter(),
        Some("bench") => bench(&args[1..]),
        _ => Err("usage: cargo xtask adapter | cargo xtask bench [FILTER] [--device cpu|gpu|all] [--json PATH]\n       \
                  cargo xtask bench --train [TUTORIAL...] [--device cpu|gpu|all] [--seconds S] [--compare-torch] [--profile] [--json PATH]"
            .into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn adapter() -> Result<(), String> {
    let ctx = GpuContext::new(&AdapterPreference::from_env()).map_err(|e| format!("no GPU: {e}"))?;
    let limits = ctx.limits();
    println!("adapter: {}", ctx.adapter());
    println!("kernels: {:?} class, {:?} workgroup sums", ctx.kernel_class(), ctx.workgroup_sums());
    println!("max storage binding: {} MiB", limits.max_storage_buffer_binding_size >> 20);
    println!("max buffer: {} MiB", limits.max_buffer_size >> 20);
    println!("max workgroups per dimension: {}", limits.max_compute_workgroups_per_dimension);
    println!("max invocations per workgroup: {}", limits.max_compute_invocations_per_workgroup);
    println!("workgroup memory: {} KiB", limits.max_compute_workgroup_storage_size >> 10);
    Ok(())
}

struct BenchArgs {
    filter: Vec<String>,
    device: String,
    json: Option<PathBuf>,
    train: bool,
    compare_torch: bool,
    profile: bool,
    seconds: Option<String>,
}

fn parse_bench_args(args: &[String]) -> Result<BenchArgs, String> {
    let mut parsed = BenchArgs {
        filter: Vec::new(),
        device: "all".into(),
        json: None,
        train: false,
        compare_torch: false,
        profile: false,
        seconds: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--device" => {
                parsed.device = args.next().ok_or("--device needs cpu, gpu or all")?.clone();
                if !["cpu", "gpu", "all"].contains(&parsed.device.as_str()) {
                    return Err(format!("--device {}: expected cpu, gpu or all", parsed.device));
                }
            }
            "--json" => parsed.json = Some(args.next().ok_or("--json needs a path")?.into()),
            "--train" => parsed.train = true,
            "--compare-torch" => parsed.compare_torch = true,
            "--profile" => parsed.profile = true,
            "--seconds" => parsed.seconds = Some(args.next().ok_or("--seconds needs a number")?.clone()),
            other => parsed.filter.push(other.to_string()),
        }
    }
    if (parsed.compare_torch || parsed.profile || parsed.seconds.is_some()) && !parsed.train {
        return Err("--compare-torch, --profile and --seconds go with --train".into());
    }
    Ok(parsed)
}

fn bench(args: &[String]) -> Result<(), String> {
    let args = parse_bench_args(args)?;
    if args.train {
        return bench_train(&args);
    }
    let started = SystemTime::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The benches read KILN_BENCH_DEVICE to time only the devices asked for.
    let status = Command::new(cargo)
        // The criterion benches only: the training bench has its own arguments (`--train`).
        .args([
            "bench",
            "-p",
            "kiln",
            "--bench",
            "matmul",
            "--bench",
            "layers",
            "--bench",
            "dispatch",
            "--bench",
            "launch_params",
            "--",
        ])
        .args(&args.filter)
        .env("KILN_BENCH_DEVICE", &args.device)
        .status()
        .map_err(|e| format!("could not run cargo bench: {e}"))?;
    if !status.success() {
        return Err("cargo bench failed".into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let rows = collect(&root, started)?;
    print_table(&rows);
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&json!({ "machine": machine(), "results": rows })).expect("valid JSON");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The machine the figures belong to: CPU model and cores, and the GPU adapter if any.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let gpu = GpuContext::new(&AdapterPreference::from_env())
        .map(|c| c.adapter().to_string())
        .unwrap_or_else(|e| format!("none ({e})"));
    json!({ "cpu": format!("{cpu}, {cores} cores"), "gpu": gpu })
}

/// Every benchmark criterion measured since `since`, from its report files.
fn collect(root: &Path, since: SystemTime) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if !path.ends_with("new/benchmark.json") {
                continue;
            }
            let fresh = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let read = |p: &Path| -> Result<Value, String> {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
            };
            let info = read(&path)?;
            let estimates = read(&path.with_file_name("estimates.json"))?;
            let nanos = estimates["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
            let elements = info["throughput"]["Elements"].as_f64();
            let function = info["function_id"].as_str().unwrap_or("");
            rows.push(json!({
                "bench": info["full_id"],
                "device": if function.starts_with("gpu") { "gpu" } else { "cpu" },
                "median_ns": nanos,
                "giga_per_second": elements.map(|e| e / nanos),
            }));
        }
    }
    rows.sort_by(|a, b| a["bench"].as_str().cmp(&b["bench"].as_str()));
    Ok(rows)
}

fn print_table(rows: &[Value]) {
    let machine = machine();
    println!("\nCPU: {}\nGPU: {}\n", machine["cpu"].as_str().unwrap_or(""), machine["gpu"].as_str().unwrap_or(""));
    println!("{:<58} {:>6} {:>12} {:>14}", "bench", "device", "median", "throughput");
    for row in rows {
        let nanos = row["median_ns"].as_f64().unwrap_or(f64::NAN);
        let time = if nanos >= 1e6 { format!("{:.2} ms", nanos / 1e6) } else { format!("{:.1} µs", nanos / 1e3) };
        let rate = row["giga_per_second"].as_f64().map_or(String::new(), |g| format!("{g:.2} G/s"));
        println!(
            "{:<58} {:>6} {:>12} {:>14}",
            row["bench"].as_str().unwrap_or(""),
            row["device"].as_str().unwrap_or(""),
            time,
            rate
        );
    }
    println!(
        "\nthroughput: GFLOP/s for matmul and conv2d; billions of elements (or parameters) per second for the rest"
    );
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_rows(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `bench --train`: Kiln's training throughput, and PyTorch's beside it when asked.
fn bench_train(args: &BenchArgs) -> Result<(), String> {
    let target = workspace_root().join("target");
    let kiln_json = target.join("bench-train-kiln.json");
    let mut bench_args = args.filter.clone();
    bench_args.extend(["--device".to_string(), args.device.clone(), "--json".into(), kiln_json.display().to_string()]);
    if let Some(seconds) = &args.seconds {
        bench_args.extend(["--seconds".to_string(), seconds.clone()]);
    }
    if args.profile {
        bench_args.push("--profile".into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["bench", "-p", "kiln", "--bench", "train", "--"])
        .args(&bench_args)
        .status()
        .map_err(|e| format!("could not run cargo bench: {e}"))?;
    if !status.success() {
        return Err("the training bench failed".into());
    }
    let mut rows = read_rows(&kiln_json)?;

    if args.compare_torch {
        let has_torch = Command::new("python3").args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success());
        if has_torch {
            let torch_json = target.join("bench-train-torch.json");
            // As many threads as Kiln's side used: RAYON_NUM_THREADS when set, else every core.
            let threads = std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .to_string();
            let mut script_args = args.filter.clone();
            script_args.extend(["--threads".to_string(), threads, "--json".into(), torch_json.display().to_string()]);
            if let Some(seconds) = &args.seconds {
                script_args.extend(["--seconds".to_string(), seconds.clone()]);
            }
            println!();
            let status = Command::new("python3")
                .arg(workspace_root().join("benches/torch_train.py"))
                .args(&script_args)
                .status()
                .map_err(|e| format!("could not run python3: {e}"))?;
            if !status.success() {
                return Err("benches/torch_train.py failed".into());
            }
            let torch_rows = read_rows(&torch_json)?;
            print_comparison(&rows, &torch_rows);
            rows.extend(torch_rows);
        } else {
            println!("\n--compare-torch: PyTorch is not installed for python3 (pip install torch); skipped");
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json!({ "machine": machine(), "results": rows })).expect("valid JSON");
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Samples/s of Kiln (CPU and GPU) beside PyTorch's CPU figure from the same run.
fn print_comparison(kiln: &[Value], torch: &[Value]) {
    let rate = |rows: &[Value], tutorial: &str, device_prefix: &str| {
        rows.iter()
            .find(|r| r["tutorial"] == tutorial && r["device"].as_str().is_some_and(|d| d.starts_with(device_prefix)))
            .and_then(|r| r["samples_per_second"].as_f64())
    };
    let machine = machine();
    println!("\nCPU: {}\nGPU: {}\n", machine["cpu"].as_str().unwrap_or(""), machine["gpu"].as_str().unwrap_or(""));
    println!("{:<18} {:>16} {:>16} {:>14} {:>16}", "samples/s", "kiln cpu", "pytorch cpu", "kiln/pytorch", "kiln gpu");
    for row in torch {
        let tutorial = row["tutorial"].as_str().unwrap_or("");
        let (k, t, g) = (rate(kiln, tutorial, "cpu"), rate(torch, tutorial, "cpu"), rate(kiln, tutorial, "gpu"));
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let ratio = k.zip(t).map_or("-".to_string(), |(k, t)| format!("{:.2}×", k / t));
        println!("{tutorial:<18} {:>16} {:>16} {ratio:>14} {:>16}", show(k), show(t), show(g));
    }
}
