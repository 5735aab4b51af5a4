//! How a launch's parameters should reach the GPU: the runtime's uniform ring (one buffer per
//! batch, each launch at its own dynamic offset, one `write_buffer` before the submit) or
//! immediates (push constants: `set_immediates` per launch, no buffer at all). The probe runs
//! the same tiny kernel both ways on raw wgpu, 1,000 launches in batches of the runtime's
//! size, recorded, submitted and waited for, so the difference is the mechanism alone.
//!
//! `cargo bench --bench launch_params` (on the adapter `KILN_ADAPTER` picks; it needs one
//! offering `Features::IMMEDIATES`, which Vulkan and DX12 do and WebGPU does not).

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln::wgsl::wgpu;

const LAUNCHES: usize = 1000;
/// As the runtime's `MAX_QUEUED_DISPATCHES`: the ring's slots, so a batch's size.
const PER_SUBMIT: usize = 64;
/// A ring slot, as the runtime's (the adapter's uniform offset alignment is at most 256).
const SLOT_BYTES: usize = 256;
const ELEMENTS: u32 = 256;

const KERNEL: &str = r#"
struct Params { len: u32, value: f32 }
@group(0) @binding(1) var<storage, read_write> data: array<f32>;
#ifdef RING
@group(0) @binding(0) var<uniform> params: Params;
#else
var<immediate> params: Params;
#endif
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < params.len { data[id.x] += params.value; }
}
"#;

/// The kernel for one mechanism (WGSL has no preprocessor: the probe keeps one source).
fn source(ring: bool) -> String {
    let (keep, drop) = if ring { ("#ifdef RING", "#else") } else { ("#else", "#ifdef RING") };
    let mut out = String::new();
    let mut on = true;
    for line in KERNEL.lines() {
        match line {
            l if l == keep => on = true,
            l if l == drop => on = false,
            "#endif" => on = true,
            l if on => out.extend([l, "\n"]),
            _ => {}
        }
    }
    out
}

struct Probe {
    device: wgpu::Device,
    queue: wgpu::Queue,
    ring: wgpu::Buffer,
    ring_pipeline: wgpu::ComputePipeline,
    ring_group: wgpu::BindGroup,
    immediate_pipeline: wgpu::ComputePipeline,
    immediate_group: wgpu::BindGroup,
}

fn params(i: usize) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[..4].copy_from_slice(&ELEMENTS.to_le_bytes());
    bytes[4..].copy_from_slice(&(i as f32 * 1e-3).to_le_bytes());
    bytes
}

impl Probe {
    fn new() -> Option<Probe> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let software = std::env::var("KILN_ADAPTER").is_ok_and(|a| a == "software");
        let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .into_iter()
            .find(|a| (a.get_info().device_type == wgpu::DeviceType::Cpu) == software)?;
        if !adapter.features().contains(wgpu::Features::IMMEDIATES) {
            eprintln!("launch_params: {} offers no immediates; nothing to compare", adapter.get_info().name);
            return None;
        }
        eprintln!("launch_params: adapter {} ({:?})", adapter.get_info().name, adapter.get_info().backend);
        let limits = wgpu::Limits { max_immediate_size: 8, ..wgpu::Limits::default() };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("launch_params"),
            required_features: wgpu::Features::IMMEDIATES,
            required_limits: limits,
            ..Default::default()
        }))
        .ok()?;
        let data = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("data"),
            size: u64::from(ELEMENTS) * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let ring = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ring"),
            size: (PER_SUBMIT * SLOT_BYTES) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: binding == 0, min_binding_size: None },
            count: None,
        };
        let storage = entry(1, wgpu::BufferBindingType::Storage { read_only: false });
        let build = |ring_slot: bool| {
            let mut entries = vec![storage];
            if ring_slot {
                entries.push(entry(0, wgpu::BufferBindingType::Uniform));
            }
            let layout =
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&layout)],
                immediate_size: if ring_slot { 0 } else { 8 },
            });
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(source(ring_slot).into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let mut bound = vec![wgpu::BindGroupEntry { binding: 1, resource: data.as_entire_binding() }];
            if ring_slot {
                bound.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &ring,
                        offset: 0,
                        size: wgpu::BufferSize::new(8),
                    }),
                });
            }
            let group =
                device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &bound });
            (pipeline, group)
        };
        let (ring_pipeline, ring_group) = build(true);
        let (immediate_pipeline, immediate_group) = build(false);
        Some(Probe { device, queue, ring, ring_pipeline, ring_group, immediate_pipeline, immediate_group })
    }

    /// 1,000 launches, a submit every `PER_SUBMIT`, then a wait for the GPU.
    fn run(&self, ring: bool, staging: &mut [u8]) {
        for batch in (0..LAUNCHES).step_by(PER_SUBMIT) {
            let count = PER_SUBMIT.min(LAUNCHES - batch);
            let mut encoder = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for slot in 0..count {
                    let bytes = params(batch + slot);
                    if ring {
                        staging[slot * SLOT_BYTES..][..8].copy_from_slice(&bytes);
                        pass.set_pipeline(&self.ring_pipeline);
                        pass.set_bind_group(0, &self.ring_group, &[(slot * SLOT_BYTES) as u32]);
                    } else {
                        pass.set_pipeline(&self.immediate_pipeline);
                        pass.set_bind_group(0, &self.immediate_group, &[]);
                        pass.set_immediates(0, &bytes);
                    }
                    pass.dispatch_workgroups(ELEMENTS.div_ceil(64), 1, 1);
                }
            }
            if ring {
                self.queue.write_buffer(&self.ring, 0, &staging[..count * SLOT_BYTES]);
            }
            self.queue.submit([encoder.finish()]);
        }
        self.device.poll(wgpu::PollType::wait_indefinitely()).expect("GPU finished");
    }
}

fn bench_launch_params(c: &mut Criterion) {
    if !support::wanted("gpu") {
        return;
    }
    let Some(probe) = Probe::new() else { return };
    let mut staging = vec![0u8; PER_SUBMIT * SLOT_BYTES];
    let mut group = c.benchmark_group("launch_params");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(LAUNCHES as u64));
    for (name, ring) in [("uniform ring, dynamic offsets ×1000", true), ("immediates ×1000", false)] {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iterations| {
                let start = Instant::now();
                for _ in 0..iterations {
                    probe.run(ring, &mut staging);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_launch_params);
criterion_main!(benches);
