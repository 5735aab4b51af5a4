//! Project tasks: `cargo xtask <task>`.
//!
//! - `adapter`: the GPU adapter Kiln would use here, and its limits.
//! - `bench [FILTER] [--device cpu|gpu|all] [--json PATH]`: runs the criterion benches of
//!   the `kiln` package (those whose name matches FILTER), then prints one table — bench,
//!   device, median time, throughput — and with `--json` writes the same rows for tools.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use kiln_wgsl::{AdapterPreference, GpuContext};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("adapter") => adapter(),
        Some("bench") => bench(&args[1..]),
        _ => Err("usage: cargo xtask adapter | cargo xtask bench [FILTER] [--device cpu|gpu|all] [--json PATH]".into()),
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
}

fn parse_bench_args(args: &[String]) -> Result<BenchArgs, String> {
    let mut parsed = BenchArgs { filter: Vec::new(), device: "all".into(), json: None };
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
            other => parsed.filter.push(other.to_string()),
        }
    }
    Ok(parsed)
}

fn bench(args: &[String]) -> Result<(), String> {
    let args = parse_bench_args(args)?;
    let started = SystemTime::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The benches read KILN_BENCH_DEVICE to time only the devices asked for.
    let status = Command::new(cargo)
        .args(["bench", "-p", "kiln", "--benches", "--"])
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
