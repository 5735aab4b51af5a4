//! Kiln's GPU runtime and WGSL kernels.
//!
//! This crate knows buffers, kernels and shapes as plain numbers; it knows nothing of
//! tensors. [`GpuContext`] owns the device, a pool of buffers, a cache of pipelines and the
//! batch of queued launches; the [`kernels`] modules record launches into that batch. See
//! ARCHITECTURE.md at the repository root for how queued execution stays ordered.

mod adapter;
mod context;
mod error;
pub mod kernels;
mod pipeline;
mod pool;
pub mod testing;
mod timing;

pub use adapter::{ADAPTER_ENV, AdapterPreference, AdapterSummary, hardware_adapter_count, quiet_headless_vulkan};
pub use context::{
    ContextOptions, GpuBuffer, GpuContext, KernelClass, MAX_BINDINGS, MAX_PARAMS_BYTES, MAX_QUEUED_DISPATCHES,
    MIN_STORAGE_BUFFERS_PER_STAGE, RuntimeStats, SOFTWARE_MIN_SUBGROUP, fault_code,
};
pub use error::{GpuError, Result};
pub use pipeline::{Access, KernelFamily, KernelSpec, MAX_CONSTANTS, Slot, WorkgroupSums};
pub use timing::KernelTime;
pub use wgpu;
