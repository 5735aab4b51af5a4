//! A first look at kiln-tensor: the same computation on the CPU and on the GPU.
//!
//! `cargo run --release --example tensor_basics`

use kiln::{Device, Tensor};

fn main() -> kiln::Result<()> {
    // Any adapter, software ones included: this example is about the GPU path.
    let gpu = Device::gpu().unwrap_or_else(|e| {
        eprintln!("no GPU ({e}); showing the CPU twice");
        Device::Cpu
    });
    println!("device: {gpu}");

    // A batch of 4 inputs through one linear layer: relu(x · Wᵀ + b).
    let x = Tensor::randn(&[4, 3], 0, &gpu)?;
    let w = Tensor::randn(&[2, 3], 1, &gpu)?;
    let b = Tensor::from_vec(vec![0.1, -0.1], &[2], &gpu)?;
    let y = x.matmul_t(&w, false, true)?.add(&b)?.relu()?;

    // Nothing has waited for the GPU so far; reading the values does.
    println!("y = {:?} {:?}", y.shape(), y.to_vec()?);
    println!("class per row = {:?}", y.argmax(-1, false)?.to_vec_i32()?);

    // The CPU gives the same numbers.
    let cpu = Device::Cpu;
    let y_cpu = x.to(&cpu)?.matmul_t(&w.to(&cpu)?, false, true)?.add(&b.to(&cpu)?)?.relu()?;
    println!("on the cpu = {:?}", y_cpu.to_vec()?);
    Ok(())
}
