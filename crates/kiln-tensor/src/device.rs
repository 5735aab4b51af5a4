use std::fmt;

use kiln_wgsl::{ADAPTER_ENV, GpuContext};

use crate::Result;

/// Where a tensor's data lives and its ops run: the host (ndarray) or a wgpu adapter.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(GpuContext),
}

impl Device {
    /// The process-wide GPU, on the adapter `KILN_ADAPTER` picks (the best one by default).
    pub fn gpu() -> Result<Device> {
        Ok(Device::Gpu(GpuContext::global()?))
    }

    /// The hardware GPU when there is one; otherwise the CPU, after saying why on stderr.
    /// A software adapter (lavapipe and the like) runs on the same CPU cores far slower than
    /// Kiln's CPU path, so it is chosen only when `KILN_ADAPTER` asks for it.
    pub fn best() -> Device {
        match GpuContext::global() {
            Ok(ctx) if !ctx.adapter().is_software() || std::env::var_os(ADAPTER_ENV).is_some() => Device::Gpu(ctx),
            Ok(ctx) => {
                eprintln!(
                    "kiln: the only GPU adapter is a software one ({}); running on the CPU, which is faster \
                     (set {ADAPTER_ENV}=software to use it anyway)",
                    ctx.adapter().name
                );
                Device::Cpu
            }
            Err(e) => {
                eprintln!("kiln: no GPU available ({e}); running on the CPU");
                Device::Cpu
            }
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// Returns the GPU's idle pooled buffers to the driver (a no-op on the CPU): what a run
    /// does when it ends, so a process that goes on does not hold the last model's memory.
    /// Tensors still alive keep theirs.
    pub fn release_idle_memory(&self) {
        if let Device::Gpu(ctx) = self {
            ctx.trim_pool();
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => a.same_device(b),
            _ => false,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(ctx) => write!(f, "gpu: {}", ctx.adapter()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
