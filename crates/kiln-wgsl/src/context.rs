//! The GPU context: one device and queue, the buffer pool, the pipeline and bind-group
//! caches, and the batch of queued work.
//!
//! Kernel launches are recorded into one open compute pass and nothing reaches the GPU until
//! the batch is submitted: when a result is read back, on an explicit [`GpuContext::sync`],
//! or once [`MAX_QUEUED_DISPATCHES`] launches are waiting.
//!
//! A launch is cheap on the host: its parameters are copied into the batch's host-side image
//! of the uniform ring (one `Queue::write_buffer` of the whole ring just before the batch is
//! submitted), the ring is bound at the launch's dynamic offset, and the bind group comes
//! from a cache keyed by the pipeline and the buffers' ids — a training step binds the same
//! pooled buffers every step, so once warm it creates none. One lock, no heap allocation.
//!
//! Host writes go through `Queue::write_buffer`, which wgpu applies at the start of the next
//! submission; the pool (see pool.rs) never hands an upload a buffer that unsubmitted work
//! still references, so a write cannot land in a buffer an earlier kernel has yet to read.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::adapter::{self, AdapterPreference, AdapterSummary};
use crate::error::{GpuError, Result};
use crate::pipeline::{CachedPipeline, FAULT_SLOT, KernelSpec, PipelineCache, WorkgroupSums};
use crate::pool::{BufferPool, PooledBuffer, STORAGE_USAGES, Use, size_class};
use crate::timing::{KernelTime, KernelTiming};

/// Launches queued before the batch is submitted without being asked. Large enough to
/// amortise a submit, small enough that the GPU starts working while the host records more.
pub const MAX_QUEUED_DISPATCHES: usize = 64;

/// The largest kernel parameter block (a WGSL `Params` struct); each launch's block takes a
/// slot of this size (or the adapter's uniform offset alignment, if larger) in the ring.
pub const MAX_PARAMS_BYTES: usize = 256;

/// The most storage buffers one launch binds (the multi-tensor optimizer steps bind the
/// most; they size their groups to the adapter's limit).
pub const MAX_BINDINGS: usize = 32;

/// Storage buffers per shader stage the kernels need at least (batch norm's backward binds
/// nine, and the fault buffer may come on top). Every desktop Vulkan, Metal and DX12 adapter
/// offers more; WebGPU's default of 8 is less.
pub const MIN_STORAGE_BUFFERS_PER_STAGE: u32 = 10;

/// Bind groups the cache keeps in each of its two generations (see `BindGroupCache`).
const BIND_GROUP_GENERATION: usize = 2048;

/// Which variant a context launches where a kernel family has one per adapter class.
///
/// Software adapters (Mesa's llvmpipe) run a workgroup on one CPU thread with each
/// invocation a SIMD lane, and there a storage-buffer or workgroup-memory load is a loop
/// over the lanes. Probes on Mesa 22.3's lavapipe, 2 AMD EPYC cores, wall time per lane:
/// 4.2 ns per f32 loaded (a vec4 load costs four), 0.07 ns per multiply-add; a texture
/// fetch 2.0 ns and a uniform-buffer vec4 1.4 ns, whole vec4s (ways not taken yet: the
/// runtime binds storage buffers only). So their kernels keep many results per invocation
/// in registers and share loads across a subgroup. Hardware GPUs take the portable kernels.
///
/// Apart from the class, a context opened with subgroups (any class, wherever the adapter
/// has them) sums across workgroups with subgroup operations ([`WorkgroupSums`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelClass {
    /// Tuned for software adapters; needs subgroups of at least [`SOFTWARE_MIN_SUBGROUP`].
    Software,
    /// The portable kernels: workgroup tiles.
    Hardware,
}

/// How a context is opened; the default lets the adapter decide everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextOptions {
    /// The kernels to launch, whatever the adapter (to test or time one class against the
    /// other); by default [`KernelClass::Software`] on a software adapter with subgroups,
    /// else `Hardware`.
    pub class: Option<KernelClass>,
    /// Opens the device without subgroup operations even where the adapter has them, so
    /// the kernels' fallbacks run (tests do this). The software class needs subgroups.
    pub without_subgroups: bool,
}

/// The smallest subgroup the software kernels' broadcasts work with.
pub const SOFTWARE_MIN_SUBGROUP: u32 = 8;

/// Counters that show what the runtime did; tests use them to prove work is batched and
/// buffers, bind groups and pipelines are reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    pub dispatches: u64,
    pub submits: u64,
    pub readbacks: u64,
    pub buffers_created: u64,
    pub buffers_reused: u64,
    pub bind_groups_created: u64,
    pub bind_groups_reused: u64,
    pub pipelines_created: u64,
    /// Bytes of device memory held in pooled buffers, in use or idle (the uniform ring and
    /// staging buffers for readback are not counted).
    pub buffer_bytes: u64,
    /// The most `buffer_bytes` has been since the context opened or `reset_peak`.
    pub peak_buffer_bytes: u64,
}

impl RuntimeStats {
    /// What happened between `earlier` and these counters: the counts' differences, with
    /// the memory figures as they are now.
    pub fn since(&self, earlier: &RuntimeStats) -> RuntimeStats {
        RuntimeStats {
            dispatches: self.dispatches - earlier.dispatches,
            submits: self.submits - earlier.submits,
            readbacks: self.readbacks - earlier.readbacks,
            buffers_created: self.buffers_created - earlier.buffers_created,
            buffers_reused: self.buffers_reused - earlier.buffers_reused,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            bind_groups_reused: self.bind_groups_reused - earlier.bind_groups_reused,
            pipelines_created: self.pipelines_created - earlier.pipelines_created,
            ..*self
        }
    }
}

/// A handle to the GPU runtime. Cloning is cheap and shares the device.
#[derive(Clone)]
pub struct GpuContext {
    rt: Arc<Runtime>,
}

struct Runtime {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Where kernels record bad input they find; see `describe_fault`.
    fault: wgpu::Buffer,
    /// Every launch's parameters, at `param_stride` apart; rewritten for each batch.
    ring: wgpu::Buffer,
    param_stride: usize,
    adapter: AdapterSummary,
    limits: wgpu::Limits,
    kernel_class: KernelClass,
    workgroup_sums: WorkgroupSums,
    state: Mutex<State>,
}

/// Everything a launch touches, behind one lock.
#[derive(Default)]
struct State {
    batch: Batch,
    pool: BufferPool,
    pipelines: PipelineCache,
    bind_groups: BindGroupCache,
    stats: RuntimeStats,
    /// The id the next new buffer gets.
    next_buffer_id: u64,
    /// Set while kernels are timed (`GpuContext::time_kernels`).
    timing: Option<KernelTiming>,
}

#[derive(Default)]
struct Batch {
    // Declared before `encoder`: the pass must end before its encoder goes away.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    queued: usize,
    /// The host image of the uniform ring: launch `i`'s parameters at `i · param_stride`.
    params: Vec<u8>,
}

impl Batch {
    fn has_work(&self) -> bool {
        self.encoder.is_some()
    }

    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| device.create_command_encoder(&Default::default()))
    }

    /// A pass of its own for one launch, which writes `timestamps` at its start and end.
    fn timed_pass(
        &mut self,
        device: &wgpu::Device,
        timestamps: wgpu::ComputePassTimestampWrites<'_>,
    ) -> &mut wgpu::ComputePass<'static> {
        let descriptor = wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(timestamps) };
        let pass = self.encoder(device).begin_compute_pass(&descriptor).forget_lifetime();
        self.pass.insert(pass)
    }

    fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let pass = self.encoder(device).begin_compute_pass(&Default::default()).forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("pass opened above")
    }
}

impl State {
    /// Writes the batch's parameters to the ring and submits its work; when kernels are
    /// timed, waits for the batch's timestamps.
    fn submit(&mut self, rt: &Runtime) {
        let batch = &mut self.batch;
        batch.pass = None;
        if let Some(mut encoder) = batch.encoder.take() {
            if batch.queued > 0 {
                rt.queue.write_buffer(&rt.ring, 0, &batch.params[..batch.queued * rt.param_stride]);
            }
            if let Some(timing) = &self.timing {
                timing.resolve(&mut encoder);
            }
            rt.queue.submit([encoder.finish()]);
            self.stats.submits += 1;
            if let Some(timing) = &mut self.timing
                && let Err(e) = timing.collect(&rt.device, rt.queue.get_timestamp_period())
            {
                // Timing is a measurement: losing a batch's times must not fail the work.
                eprintln!("kiln: a batch's kernel timestamps were lost: {e}");
            }
        }
        batch.queued = 0;
        self.pool.batch_submitted();
    }
}

/// Bind groups by (pipeline, storage buffers), in two generations: a lookup moves a hit from
/// the older generation into the current one, and when the current one is full it becomes
/// the older and the older is dropped. Groups a step keeps using stay; groups of buffers no
/// longer used age out, and a cache that never stops growing cannot happen.
#[derive(Default)]
struct BindGroupCache {
    current: HashMap<BindGroupKey, wgpu::BindGroup>,
    older: HashMap<BindGroupKey, wgpu::BindGroup>,
}

/// The buffers are compared and hashed up to `count`, so a launch of two buffers hashes two ids.
#[derive(Clone, Copy)]
struct BindGroupKey {
    pipeline: u32,
    count: usize,
    buffers: [u64; MAX_BINDINGS],
}

impl BindGroupKey {
    fn ids(&self) -> &[u64] {
        &self.buffers[..self.count]
    }
}

impl PartialEq for BindGroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.pipeline == other.pipeline && self.ids() == other.ids()
    }
}

impl Eq for BindGroupKey {}

impl std::hash::Hash for BindGroupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pipeline.hash(state);
        self.ids().hash(state);
    }
}

impl BindGroupCache {
    /// The group of `key`, made by `make` when neither generation holds it; and whether it
    /// was made. One hash lookup when the current generation has it (the steady state).
    fn get_or_make(&mut self, key: BindGroupKey, make: impl FnOnce() -> wgpu::BindGroup) -> (&wgpu::BindGroup, bool) {
        if self.current.len() >= BIND_GROUP_GENERATION && !self.current.contains_key(&key) {
            self.older = std::mem::take(&mut self.current);
        }
        let (older, mut made) = (&mut self.older, false);
        let group = self.current.entry(key).or_insert_with(|| {
            older.remove(&key).unwrap_or_else(|| {
                made = true;
                make()
            })
        });
        (group, made)
    }

    fn clear(&mut self) {
        self.current.clear();
        self.older.clear();
    }
}

impl GpuContext {
    /// Opens a device on the adapter `preference` picks, with the kernels of its class:
    /// [`KernelClass::Software`] on a software adapter with subgroups, else `Hardware`;
    /// with subgroup operations wherever the adapter has them.
    pub fn new(preference: &AdapterPreference) -> Result<Self> {
        Self::with_options(preference, ContextOptions::default())
    }

    /// As [`GpuContext::new`], with the kernels of `class` whatever the adapter.
    pub fn with_kernel_class(preference: &AdapterPreference, class: KernelClass) -> Result<Self> {
        Self::with_options(preference, ContextOptions { class: Some(class), ..Default::default() })
    }

    pub fn with_options(preference: &AdapterPreference, options: ContextOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = adapter::choose(&instance, preference)?;
        let info = adapter.get_info();
        let summary = AdapterSummary::from_info(&info);
        let limits = adapter.limits();
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP) && !options.without_subgroups;
        let software_subgroups = subgroups && info.subgroup_min_size >= SOFTWARE_MIN_SUBGROUP;
        let kernel_class = match options.class {
            Some(KernelClass::Software) if !software_subgroups => {
                return Err(GpuError::RequestDevice {
                    adapter: summary.name,
                    reason: format!(
                        "the software kernels need subgroups of at least {SOFTWARE_MIN_SUBGROUP} invocations"
                    ),
                });
            }
            Some(class) => class,
            None if summary.is_software() && software_subgroups => KernelClass::Software,
            None => KernelClass::Hardware,
        };
        if limits.max_storage_buffers_per_shader_stage < MIN_STORAGE_BUFFERS_PER_STAGE {
            return Err(GpuError::RequestDevice {
                adapter: summary.name,
                reason: format!(
                    "it offers {} storage buffers per shader stage; Kiln's kernels need {MIN_STORAGE_BUFFERS_PER_STAGE}",
                    limits.max_storage_buffers_per_shader_stage
                ),
            });
        }
        // Pass timestamps cost nothing until kernels are timed.
        let timing_features = wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: adapter.features() & timing_features
                | if subgroups { wgpu::Features::SUBGROUP } else { wgpu::Features::empty() },
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice { adapter: summary.name.clone(), reason: e.to_string() })?;
        let fault = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln faults"),
            size: FAULT_BYTES,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let param_stride = MAX_PARAMS_BYTES.max(limits.min_uniform_buffer_offset_alignment as usize);
        let ring_bytes = param_stride * MAX_QUEUED_DISPATCHES;
        let ring = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln kernel parameters"),
            size: ring_bytes as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let state = State {
            batch: Batch { params: vec![0; ring_bytes], ..Default::default() },
            next_buffer_id: 1,
            ..Default::default()
        };
        Ok(Self {
            rt: Arc::new(Runtime {
                device,
                queue,
                fault,
                ring,
                param_stride,
                adapter: summary,
                limits,
                kernel_class,
                workgroup_sums: if subgroups { WorkgroupSums::Subgroup } else { WorkgroupSums::Tree },
                state: Mutex::new(state),
            }),
        })
    }

    /// The process-wide context on the adapter `KILN_ADAPTER` asks for (the best one when it
    /// is unset). Opened on first use; every later call returns the same device, or the same
    /// error.
    pub fn global() -> Result<Self> {
        static GLOBAL: OnceLock<Result<GpuContext>> = OnceLock::new();
        GLOBAL.get_or_init(|| Self::new(&AdapterPreference::from_env())).clone()
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.rt.adapter
    }

    /// The kernel variants this context launches.
    pub fn kernel_class(&self) -> KernelClass {
        self.rt.kernel_class
    }

    /// How this context's kernels sum across a workgroup.
    pub fn workgroup_sums(&self) -> WorkgroupSums {
        self.rt.workgroup_sums
    }

    /// Whether [`GpuContext::time_kernels`] can work: the device has timestamp queries.
    pub fn can_time_kernels(&self) -> bool {
        self.rt.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Starts or stops timing each kernel on the GPU (see timing.rs): a profiling mode, in
    /// which every launch has a pass of its own and every submission waits for the GPU.
    /// Work queued before the switch is submitted first. Stopping keeps the times taken.
    pub fn time_kernels(&self, on: bool) -> Result<()> {
        if on && !self.can_time_kernels() {
            return Err(GpuError::Unsupported {
                adapter: self.rt.adapter.name.clone(),
                what: "timestamp queries, which kernel timing needs".into(),
            });
        }
        let mut state = self.state();
        state.submit(&self.rt);
        match (on, state.timing.is_some()) {
            (true, false) => state.timing = Some(KernelTiming::new(&self.rt.device)),
            (false, true) => state.timing = None,
            _ => {}
        }
        Ok(())
    }

    /// The kernels timed since timing started or the last call, longest total first (work
    /// still queued is submitted and waited for first); timing goes on from zero.
    pub fn take_kernel_times(&self) -> Vec<KernelTime> {
        let mut state = self.state();
        state.submit(&self.rt);
        state.timing.as_mut().map(KernelTiming::take).unwrap_or_default()
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.rt.limits
    }

    pub fn stats(&self) -> RuntimeStats {
        self.state().stats
    }

    /// Compiled pipelines held by the cache.
    pub fn cached_pipelines(&self) -> usize {
        self.state().pipelines.len()
    }

    /// Bytes held by idle pooled buffers.
    pub fn pooled_bytes(&self) -> u64 {
        self.state().pool.free_bytes()
    }

    /// Releases every idle pooled buffer back to the driver, with the cached bind groups
    /// that would keep them alive. A run calls this when it ends; buffers in use stay.
    pub fn trim_pool(&self) {
        let mut state = self.state();
        let freed = state.pool.free_bytes();
        state.pool.clear();
        state.bind_groups.clear();
        state.stats.buffer_bytes -= freed;
    }

    /// Starts a new peak-memory measurement at the bytes held now.
    pub fn reset_peak(&self) {
        let mut state = self.state();
        state.stats.peak_buffer_bytes = state.stats.buffer_bytes;
    }

    /// True when two handles share one device.
    pub fn same_device(&self, other: &GpuContext) -> bool {
        Arc::ptr_eq(&self.rt, &other.rt)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.rt.state.lock().expect("GPU runtime state poisoned")
    }

    /// A storage buffer for `bytes` bytes, from the pool when one of its class is idle, for a
    /// kernel to write. Its contents are undefined until a kernel writes them.
    pub fn alloc(&self, bytes: u64) -> Result<GpuBuffer> {
        self.take_buffer(bytes, Use::KernelOutput)
    }

    fn take_buffer(&self, bytes: u64, purpose: Use) -> Result<GpuBuffer> {
        let limit = self.rt.limits.max_storage_buffer_binding_size.min(self.rt.limits.max_buffer_size);
        if bytes > limit {
            return Err(GpuError::BufferTooLarge { bytes, limit, adapter: self.rt.adapter.name.clone() });
        }
        let class = size_class(bytes).min(limit.max(4));
        let mut state = self.state();
        let raw = match state.pool.take(class, purpose) {
            Some(buffer) => {
                state.stats.buffers_reused += 1;
                buffer
            }
            None => {
                let stats = &mut state.stats;
                stats.buffers_created += 1;
                stats.buffer_bytes += class;
                stats.peak_buffer_bytes = stats.peak_buffer_bytes.max(stats.buffer_bytes);
                let id = state.next_buffer_id;
                state.next_buffer_id += 1;
                drop(state);
                let buffer = self.rt.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: class,
                    usage: STORAGE_USAGES,
                    mapped_at_creation: false,
                });
                PooledBuffer { id, buffer }
            }
        };
        Ok(GpuBuffer { raw: Some(raw), bytes, rt: self.rt.clone() })
    }

    /// A new buffer holding `data`. The write is ordered before every kernel queued after it.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<GpuBuffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.take_buffer(bytes.len() as u64, Use::Upload)?;
        if bytes.is_empty() {
            return Ok(buffer);
        }
        if bytes.len().is_multiple_of(4) {
            self.rt.queue.write_buffer(buffer.raw(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.rt.queue.write_buffer(buffer.raw(), 0, &padded);
        }
        Ok(buffer)
    }

    /// Records one kernel launch into the open batch. `params` is the kernel's uniform block
    /// (at most [`MAX_PARAMS_BYTES`]); `buffers` fill the spec's storage slots in order.
    pub fn launch(&self, spec: &KernelSpec, params: &[u8], buffers: &[&GpuBuffer], workgroups: [u32; 3]) -> Result<()> {
        let invalid = |reason: String| Err(GpuError::InvalidLaunch { kernel: spec.entry, reason });
        if buffers.len() != spec.slots.len() {
            return invalid(format!("{} buffers given for {} slots", buffers.len(), spec.slots.len()));
        }
        if buffers.len() > MAX_BINDINGS {
            return invalid(format!("{} buffers exceed the {MAX_BINDINGS} a launch binds", buffers.len()));
        }
        if params.len() > MAX_PARAMS_BYTES {
            return invalid(format!("{} bytes of parameters exceed {MAX_PARAMS_BYTES}", params.len()));
        }
        let max = self.rt.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&n| n > max) {
            let total = workgroups.iter().map(|&n| n as u64).product();
            return Err(GpuError::DispatchTooLarge { workgroups: total, adapter: self.rt.adapter.name.clone() });
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        let rt = &*self.rt;
        let mut guard = self.state();
        let state = &mut *guard;
        let pipeline = match state.pipelines.get(spec) {
            Some(pipeline) => pipeline,
            None => {
                state.stats.pipelines_created += 1;
                state.pipelines.build(&rt.device, spec, rt.workgroup_sums)
            }
        };
        let mut key = BindGroupKey { pipeline: pipeline.id, count: buffers.len(), buffers: [0; MAX_BINDINGS] };
        for (id, buffer) in key.buffers.iter_mut().zip(buffers) {
            *id = buffer.pooled().id;
        }
        let (bind_group, made) = state.bind_groups.get_or_make(key, || self.bind_group(&pipeline, spec, buffers));
        if made {
            state.stats.bind_groups_created += 1;
        } else {
            state.stats.bind_groups_reused += 1;
        }

        let batch = &mut state.batch;
        let offset = batch.queued * rt.param_stride;
        batch.params[offset..offset + params.len()].copy_from_slice(params);
        let pass = match &mut state.timing {
            Some(timing) => batch.timed_pass(&rt.device, timing.next_pass(spec.label())),
            None => batch.pass(&rt.device),
        };
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, bind_group, &[offset as u32]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        batch.queued += 1;
        state.stats.dispatches += 1;
        if state.batch.queued >= MAX_QUEUED_DISPATCHES {
            state.submit(rt);
        }
        Ok(())
    }

    /// A bind group for one launch: the ring at a dynamic offset, the buffers in their
    /// slots, and the fault buffer when the kernel reports faults. Made once per key.
    fn bind_group(&self, pipeline: &CachedPipeline, spec: &KernelSpec, buffers: &[&GpuBuffer]) -> wgpu::BindGroup {
        let params =
            wgpu::BufferBinding { buffer: &self.rt.ring, offset: 0, size: NonZeroU64::new(MAX_PARAMS_BYTES as u64) };
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(params) }];
        for (slot, buffer) in spec.slots.iter().zip(buffers) {
            entries.push(wgpu::BindGroupEntry { binding: slot.0, resource: buffer.raw().as_entire_binding() });
        }
        if spec.reports_faults {
            entries.push(wgpu::BindGroupEntry { binding: FAULT_SLOT, resource: self.rt.fault.as_entire_binding() });
        }
        self.rt.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.layout,
            entries: &entries,
        })
    }

    /// Submits queued work without waiting for it.
    pub fn flush(&self) {
        self.state().submit(&self.rt);
    }

    /// Submits queued work and waits until the GPU has finished it (for timing and tests).
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.rt
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Readback(e.to_string()))
    }

    /// Copies the first `bytes` bytes of `buffer` to the host, after all queued work that
    /// writes it. This is the one place the host waits for the GPU, and so where bad input
    /// that a kernel found on the device (an out-of-range label) becomes an error.
    pub fn read_bytes(&self, buffer: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes > buffer.bytes {
            return Err(GpuError::Readback(format!("asked for {bytes} bytes of a {}-byte buffer", buffer.bytes)));
        }
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let padded = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.rt.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln readback"),
            size: padded + FAULT_BYTES,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut state = self.state();
            let encoder = state.batch.encoder(&self.rt.device);
            encoder.copy_buffer_to_buffer(buffer.raw(), 0, &staging, 0, padded);
            encoder.copy_buffer_to_buffer(&self.rt.fault, 0, &staging, padded, FAULT_BYTES);
            state.submit(&self.rt);
            state.stats.readbacks += 1;
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        self.rt.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        receiver
            .recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let (data, fault) = {
            let view = staging.get_mapped_range(..).map_err(|e| GpuError::Readback(e.to_string()))?;
            let fault: [u32; 4] = bytemuck::pod_read_unaligned(&view[padded as usize..]);
            (view[..bytes as usize].to_vec(), fault)
        };
        staging.unmap();
        if fault[0] != 0 {
            // Cleared before any later kernel runs, so the fault is reported once.
            self.rt.queue.write_buffer(&self.rt.fault, 0, &[0; FAULT_BYTES as usize]);
            return Err(GpuError::KernelFault(describe_fault(fault)));
        }
        Ok(data)
    }

    /// Reads `len` elements of a buffer back as `T`.
    pub fn read<T: bytemuck::Pod>(&self, buffer: &GpuBuffer, len: usize) -> Result<Vec<T>> {
        let bytes = self.read_bytes(buffer, (len * size_of::<T>()) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// A 1-D launch of `threads` invocations in workgroups of `workgroup_size`, folded into a
    /// second grid dimension when one dimension cannot hold it. Kernels recover the flat index
    /// with the prelude's `flat_index`.
    pub fn linear_grid(&self, threads: usize, workgroup_size: u32) -> Result<[u32; 3]> {
        let groups = (threads as u64).div_ceil(workgroup_size as u64);
        let max = self.rt.limits.max_compute_workgroups_per_dimension as u64;
        if groups <= max {
            return Ok([groups as u32, 1, 1]);
        }
        let rows = groups.div_ceil(max);
        if rows > max {
            return Err(GpuError::DispatchTooLarge { workgroups: groups, adapter: self.rt.adapter.name.clone() });
        }
        Ok([max as u32, rows as u32, 1])
    }
}

/// Size of the fault record: [code, row, value, bound] as u32.
const FAULT_BYTES: u64 = 16;

/// Fault codes the kernels write with the prelude's `report_fault`.
pub mod fault_code {
    /// A class label outside [0, classes): row, label, classes.
    pub const LABEL_OUT_OF_RANGE: u32 = 1;
}

fn describe_fault([code, row, value, bound]: [u32; 4]) -> String {
    match code {
        fault_code::LABEL_OUT_OF_RANGE => {
            format!("label {} at row {row} is outside the classes [0, {bound})", value as i32)
        }
        other => format!("a kernel reported fault {other} (row {row}, value {value}, bound {bound})"),
    }
}

/// A pooled storage buffer. Dropping it returns the buffer to its context's pool.
pub struct GpuBuffer {
    raw: Option<PooledBuffer>,
    bytes: u64,
    rt: Arc<Runtime>,
}

impl GpuBuffer {
    /// The bytes asked for (the buffer underneath may be larger).
    pub fn len_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn raw(&self) -> &wgpu::Buffer {
        &self.pooled().buffer
    }

    fn pooled(&self) -> &PooledBuffer {
        self.raw.as_ref().expect("buffer present until drop")
    }

    /// The context that owns this buffer.
    pub fn context(&self) -> GpuContext {
        GpuContext { rt: self.rt.clone() }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes on {})", self.bytes, self.rt.adapter.name)
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        let Some(raw) = self.raw.take() else { return };
        let Ok(mut state) = self.rt.state.lock() else { return };
        let in_batch = state.batch.has_work();
        state.pool.give_back(raw, in_batch);
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::unary::{UnaryOp, unary};
    use crate::testing::context_or_skip;
    use crate::{GpuContext, GpuError, MAX_QUEUED_DISPATCHES};

    #[test]
    fn the_test_contexts_cover_every_kernel_variant() {
        use crate::testing::contexts_of_each_class;
        use crate::{ContextOptions, KernelClass, WorkgroupSums};
        let contexts = contexts_of_each_class("context::the_test_contexts_cover_every_kernel_variant");
        let Some(shared) = contexts.first() else { return };
        let variants: Vec<_> = contexts.iter().map(|c| (c.kernel_class(), c.workgroup_sums())).collect();
        eprintln!("test contexts on {}: {variants:?}", shared.adapter());
        assert!(variants.iter().any(|&(class, _)| class == KernelClass::Hardware), "{variants:?}");
        assert!(variants.iter().any(|&(_, sums)| sums == WorkgroupSums::Tree), "{variants:?}");
        if shared.workgroup_sums() == WorkgroupSums::Subgroup {
            let software = GpuContext::with_kernel_class(&crate::AdapterPreference::from_env(), KernelClass::Software);
            assert_eq!(software.is_ok(), variants.iter().any(|&(class, _)| class == KernelClass::Software));
        }
        // The software class cannot go without subgroups.
        let options = ContextOptions { class: Some(KernelClass::Software), without_subgroups: true };
        let refused = GpuContext::with_options(&crate::AdapterPreference::from_env(), options).err().unwrap();
        assert!(refused.to_string().contains("need subgroups"), "{refused}");
    }

    // The shared context's counters move under other tests running in parallel, so these
    // tests open a context of their own.
    fn private_context(test: &str) -> Option<GpuContext> {
        context_or_skip(test)?;
        Some(GpuContext::new(&crate::AdapterPreference::from_env()).expect("adapter present"))
    }

    #[test]
    fn kernels_are_timed_per_specialisation_while_timing_is_on() {
        let Some(ctx) = private_context("kernels_are_timed_per_specialisation_while_timing_is_on") else { return };
        // Lavapipe, CI's adapter, has timestamp queries; a GPU without them must say so.
        if !ctx.can_time_kernels() {
            let refused = ctx.time_kernels(true).unwrap_err().to_string();
            assert!(refused.contains("timestamp queries"), "{refused}");
            return;
        }
        let big = ctx.upload(&vec![1.0f32; 1 << 20]).unwrap();
        let run = |adds: usize, muls: usize| {
            let mut x = ctx.upload(&[1.0f32, 2.0]).unwrap();
            for _ in 0..adds {
                x = unary(&ctx, UnaryOp::AddScalar, &x, 2, 1.0).unwrap();
            }
            for _ in 0..muls {
                unary(&ctx, UnaryOp::MulScalar, &big, 1 << 20, 2.0).unwrap();
            }
            ctx.read::<f32>(&x, 2).unwrap()
        };
        run(2, 1);
        assert!(ctx.take_kernel_times().is_empty(), "nothing is timed until timing starts");

        ctx.time_kernels(true).unwrap();
        // More launches than a batch holds, so the times of several submissions add up.
        let adds = MAX_QUEUED_DISPATCHES + 5;
        assert_eq!(run(adds, 3), vec![1.0 + adds as f32, 2.0 + adds as f32], "timed work still computes");
        let times = ctx.take_kernel_times();
        assert_eq!(times.len(), 2, "{times:?}");
        let launched = |n: usize| times.iter().find(|t| t.launches == n as u64).unwrap_or_else(|| panic!("{times:?}"));
        let (add, mul) = (launched(adds), launched(3));
        assert!(add.kernel.contains("unary") && add.kernel != mul.kernel, "{times:?}");
        assert!(times.iter().all(|t| t.total > std::time::Duration::ZERO), "{times:?}");
        let per_launch = |t: &crate::KernelTime| t.total / t.launches as u32;
        assert!(per_launch(mul) > per_launch(add), "a million elements take longer than two: {times:?}");
        assert!(ctx.take_kernel_times().is_empty(), "taking the times starts from zero");

        ctx.time_kernels(false).unwrap();
        run(1, 1);
        assert!(ctx.take_kernel_times().is_empty(), "nothing is timed once timing stops");
    }

    #[test]
    fn launches_wait_for_a_readback_before_submitting() {
        let Some(ctx) = private_context("launches_wait_for_a_readback_before_submitting") else { return };
        let mut x = ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        for _ in 0..10 {
            x = unary(&ctx, UnaryOp::AddScalar, &x, 3, 1.0).unwrap();
        }
        let queued = ctx.stats();
        assert_eq!((queued.dispatches, queued.submits), (10, 0));
        assert_eq!(ctx.read::<f32>(&x, 3).unwrap(), vec![11.0, 12.0, 13.0]);
        let read = ctx.stats();
        assert_eq!((read.submits, read.readbacks), (1, 1));
    }

    #[test]
    fn a_long_queue_is_submitted_in_batches() {
        let Some(ctx) = private_context("a_long_queue_is_submitted_in_batches") else { return };
        let mut x = ctx.upload(&[0.0f32]).unwrap();
        let launches = 3 * MAX_QUEUED_DISPATCHES + 5;
        for _ in 0..launches {
            x = unary(&ctx, UnaryOp::AddScalar, &x, 1, 1.0).unwrap();
        }
        assert_eq!(ctx.stats().submits, 3);
        assert_eq!(ctx.read::<f32>(&x, 1).unwrap(), vec![launches as f32]);
    }

    #[test]
    fn pipelines_are_built_once_per_specialisation() {
        let Some(ctx) = private_context("pipelines_are_built_once_per_specialisation") else { return };
        let x = ctx.upload(&[1.0f32, -2.0]).unwrap();
        for _ in 0..3 {
            unary(&ctx, UnaryOp::Relu, &x, 2, 0.0).unwrap();
        }
        assert_eq!(ctx.cached_pipelines(), 1, "the same op reuses its pipeline");
        unary(&ctx, UnaryOp::Exp, &x, 2, 0.0).unwrap();
        assert_eq!(ctx.cached_pipelines(), 2, "another op code is another specialisation");
    }

    #[test]
    fn dropped_buffers_are_reused() {
        let Some(ctx) = private_context("dropped_buffers_are_reused") else { return };
        drop(ctx.alloc(1000).unwrap());
        let again = ctx.alloc(1020).unwrap();
        let stats = ctx.stats();
        assert_eq!((stats.buffers_created, stats.buffers_reused), (1, 1));
        let other = ctx.alloc(5000).unwrap();
        let held = |ctx: &GpuContext| (ctx.stats().buffer_bytes, ctx.stats().peak_buffer_bytes);
        assert_eq!(held(&ctx), (1024 + 5120, 1024 + 5120), "size classes: 1,024 and 5,120 bytes");
        drop(other);
        ctx.trim_pool();
        assert_eq!((ctx.pooled_bytes(), held(&ctx)), (0, (1024, 6144)), "trimmed; the peak stays");
        ctx.reset_peak();
        assert_eq!(held(&ctx), (1024, 1024));
        drop(again);
    }

    #[test]
    fn each_launch_reads_its_own_parameters() {
        let Some(ctx) = private_context("each_launch_reads_its_own_parameters") else { return };
        // Past two submits, so the ring is rewritten while earlier batches may still run.
        let launches = 2 * MAX_QUEUED_DISPATCHES + 7;
        let mut x = ctx.upload(&[0.0f32; 3]).unwrap();
        for i in 1..=launches {
            x = unary(&ctx, UnaryOp::AddScalar, &x, 3, i as f32).unwrap();
        }
        let want = (launches * (launches + 1) / 2) as f32;
        assert_eq!(ctx.read::<f32>(&x, 3).unwrap(), vec![want; 3]);
    }

    #[test]
    fn bind_groups_are_made_once_per_pipeline_and_buffers() {
        let Some(ctx) = private_context("bind_groups_are_made_once_per_pipeline_and_buffers") else { return };
        let x = ctx.upload(&[1.0f32; 8]).unwrap();
        let y = ctx.alloc(32).unwrap();
        let spec = crate::kernels::unary::spec(UnaryOp::Neg);
        let params = [8u32, 0];
        for _ in 0..5 {
            ctx.launch(&spec, bytemuck::bytes_of(&params), &[&x, &y], [1, 1, 1]).unwrap();
        }
        let stats = ctx.stats();
        assert_eq!((stats.bind_groups_created, stats.bind_groups_reused, stats.pipelines_created), (1, 4, 1));
        ctx.launch(&spec, bytemuck::bytes_of(&params), &[&y, &x], [1, 1, 1]).unwrap();
        assert_eq!(ctx.stats().bind_groups_created, 2, "other buffers, another bind group");
        assert_eq!(ctx.read::<f32>(&x, 8).unwrap(), vec![1.0; 8], "y = -x, then x = -y");
    }

    #[test]
    fn a_kernel_may_write_a_buffer_queued_work_still_reads() {
        let Some(ctx) = private_context("a_kernel_may_write_a_buffer_queued_work_still_reads") else { return };
        let x = ctx.upload(&[1.0f32; 64]).unwrap();
        let negated = unary(&ctx, UnaryOp::Neg, &x, 64, 0.0).unwrap();
        drop(x);
        let reused = ctx.stats().buffers_reused;
        // The output takes x's buffer; the pass runs it after the negation has read x.
        let shifted = unary(&ctx, UnaryOp::AddScalar, &negated, 64, 3.0).unwrap();
        assert_eq!(ctx.stats().buffers_reused, reused + 1);
        assert_eq!(ctx.read::<f32>(&negated, 64).unwrap(), vec![-1.0; 64]);
        assert_eq!(ctx.read::<f32>(&shifted, 64).unwrap(), vec![2.0; 64]);
    }

    #[test]
    fn oversized_parameters_are_an_error() {
        let Some(ctx) = private_context("oversized_parameters_are_an_error") else { return };
        let x = ctx.alloc(4).unwrap();
        let spec = crate::kernels::unary::spec(UnaryOp::Neg);
        let params = [0u8; crate::MAX_PARAMS_BYTES + 4];
        assert!(matches!(ctx.launch(&spec, &params, &[&x, &x], [1, 1, 1]), Err(GpuError::InvalidLaunch { .. })));
    }

    #[test]
    fn an_upload_never_overwrites_a_buffer_queued_work_still_reads() {
        let Some(ctx) = private_context("an_upload_never_overwrites_a_buffer_queued_work_still_reads") else { return };
        let x = ctx.upload(&[1.0f32; 64]).unwrap();
        let negated = unary(&ctx, UnaryOp::Neg, &x, 64, 0.0).unwrap();
        // x's buffer is still read by the unsubmitted negation; the same-sized upload
        // must not get it.
        drop(x);
        let _other = ctx.upload(&[5.0f32; 64]).unwrap();
        assert_eq!(ctx.read::<f32>(&negated, 64).unwrap(), vec![-1.0; 64]);
    }

    #[test]
    fn oversized_buffers_are_an_error() {
        let Some(ctx) = private_context("oversized_buffers_are_an_error") else { return };
        let limit = ctx.limits().max_storage_buffer_binding_size.min(ctx.limits().max_buffer_size);
        assert!(matches!(ctx.alloc(limit + 4), Err(GpuError::BufferTooLarge { .. })));
    }

    #[test]
    fn huge_launches_fold_into_a_second_grid_dimension() {
        let Some(ctx) = private_context("huge_launches_fold_into_a_second_grid_dimension") else { return };
        let max = ctx.limits().max_compute_workgroups_per_dimension;
        let grid = ctx.linear_grid(max as usize * 256 + 1, 256).unwrap();
        assert_eq!(grid, [max, 2, 1]);
        let len = 20_000_000;
        let x = crate::kernels::fill::fill(&ctx, len, 2.0f32.to_bits()).unwrap();
        let y = unary(&ctx, UnaryOp::Square, &x, len, 0.0).unwrap();
        let out = ctx.read::<f32>(&y, len).unwrap();
        assert!(out.iter().all(|&v| v == 4.0));
    }
}
