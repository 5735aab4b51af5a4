//! Project tasks: `cargo xtask <task>`.
//!
//! - `adapter`: the GPU adapter Kiln would use here, and its limits.
//! - `bench [FILTER]`: the criterion kernel benchmarks (optionally only those whose name
//!   contains FILTER, e.g. `gpu` or `cpu`).

use std::process::{Command, ExitCode};

use kiln_wgsl::{AdapterPreference, GpuContext};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("adapter") => adapter(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask adapter | cargo xtask bench [FILTER]");
            ExitCode::FAILURE
        }
    }
}

fn adapter() -> ExitCode {
    match GpuContext::new(&AdapterPreference::from_env()) {
        Ok(ctx) => {
            let limits = ctx.limits();
            println!("adapter: {}", ctx.adapter());
            println!("max storage binding: {} MiB", limits.max_storage_buffer_binding_size >> 20);
            println!("max buffer: {} MiB", limits.max_buffer_size >> 20);
            println!("max workgroups per dimension: {}", limits.max_compute_workgroups_per_dimension);
            println!("max invocations per workgroup: {}", limits.max_compute_invocations_per_workgroup);
            println!("workgroup memory: {} KiB", limits.max_compute_workgroup_storage_size >> 10);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("no GPU: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(filter: &[String]) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(["bench", "-p", "kiln", "--benches", "--"]).args(filter).status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("could not run cargo bench: {e}");
            ExitCode::FAILURE
        }
    }
}
