use std::fmt;

use kiln_wgsl::GpuContext;

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

    /// The GPU when there is one; otherwise the CPU, after saying so on stderr.
    pub fn best() -> Device {
        match Device::gpu() {
            Ok(device) => device,
            Err(e) => {
                eprintln!("kiln: no GPU available ({e}); running on the CPU");
                Device::Cpu
            }
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
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
