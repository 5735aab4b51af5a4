//! Kernel timing: how long each kernel ran on the GPU, from timestamp queries.
//!
//! Off by default, since it changes how work is recorded: while it is on, every launch gets
//! a compute pass of its own whose start and end write timestamps (pass timestamps need only
//! `Features::TIMESTAMP_QUERY`; timestamps inside a pass are missing on some Metal GPUs), and
//! every submission waits for its timestamps to come back. The times are per kernel
//! specialisation (`KernelSpec::label`), summed over its launches.

use std::collections::HashMap;
use std::time::Duration;

use crate::context::MAX_QUEUED_DISPATCHES;

/// A kernel's launches and the GPU time they took, while timing was on.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel specialisation: family, entry point and override constants.
    pub kernel: String,
    pub launches: u64,
    pub total: Duration,
}

/// Bytes of one resolved timestamp.
const TIMESTAMP_BYTES: u64 = 8;

pub(crate) struct KernelTiming {
    /// Two timestamps per launch of a batch: its pass's start and end.
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// The label of each launch in the open batch, in order.
    queued: Vec<String>,
    /// Launches and nanoseconds per label since timing started or was last taken.
    totals: HashMap<String, (u64, f64)>,
}

impl KernelTiming {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        let count = 2 * MAX_QUEUED_DISPATCHES as u32;
        let bytes = u64::from(count) * TIMESTAMP_BYTES;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kiln kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: buffer(
                "kiln resolved timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer("kiln timestamp readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            queued: Vec::with_capacity(MAX_QUEUED_DISPATCHES),
            totals: HashMap::new(),
        }
    }

    /// The timestamp writes of the pass for the next launch, of the kernel `label`.
    pub(crate) fn next_pass(&mut self, label: String) -> wgpu::ComputePassTimestampWrites<'_> {
        let first = 2 * self.queued.len() as u32;
        self.queued.push(label);
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(first),
            end_of_pass_write_index: Some(first + 1),
        }
    }

    /// Records, at the end of a batch, the copy of its timestamps to the host.
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        if self.queued.is_empty() {
            return;
        }
        let count = 2 * self.queued.len() as u32;
        encoder.resolve_query_set(&self.queries, 0..count, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, u64::from(count) * TIMESTAMP_BYTES);
    }

    /// After the batch was submitted: waits for its timestamps and adds each launch's time
    /// to its kernel's total. `period` is nanoseconds per timestamp tick.
    pub(crate) fn collect(&mut self, device: &wgpu::Device, period: f32) -> Result<(), String> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let bytes = 2 * self.queued.len() as u64 * TIMESTAMP_BYTES;
        let (sender, receiver) = std::sync::mpsc::channel();
        self.readback.map_async(wgpu::MapMode::Read, ..bytes, move |result| {
            let _ = sender.send(result);
        });
        device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| e.to_string())?;
        receiver.recv().map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let ticks: Vec<u64> = {
            let view = self.readback.get_mapped_range(..bytes).map_err(|e| e.to_string())?;
            bytemuck::pod_collect_to_vec(&view)
        };
        self.readback.unmap();
        for (label, pair) in self.queued.drain(..).zip(ticks.chunks_exact(2)) {
            let total = self.totals.entry(label).or_default();
            total.0 += 1;
            total.1 += pair[1].saturating_sub(pair[0]) as f64 * f64::from(period);
        }
        Ok(())
    }

    /// The totals so far, longest first; timing starts again from zero.
    pub(crate) fn take(&mut self) -> Vec<KernelTime> {
        let mut times: Vec<KernelTime> = self
            .totals
            .drain()
            .map(|(kernel, (launches, nanos))| KernelTime {
                kernel,
                launches,
                total: Duration::from_nanos(nanos as u64),
            })
            .collect();
        times.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.kernel.cmp(&b.kernel)));
        times
    }
}
