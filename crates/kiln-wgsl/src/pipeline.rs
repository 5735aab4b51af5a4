//! Compute pipelines and their bind-group layouts, built once per kernel specialisation.

use std::collections::HashMap;
use std::sync::Arc;

/// Helpers every kernel family shares, prepended to each family's source.
const PRELUDE: &str = include_str!("kernels/prelude.wgsl");

/// How a device's kernels add up values across a workgroup: `workgroup_sum` and the
/// `Invocation` its callers take, prepended to the families that call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkgroupSums {
    /// A tree in workgroup memory: every device.
    Tree,
    /// `subgroupAdd` within subgroups, then one step over their totals: devices opened
    /// with `Features::SUBGROUP`.
    Subgroup,
}

impl WorkgroupSums {
    fn source(self) -> &'static str {
        match self {
            WorkgroupSums::Tree => include_str!("kernels/workgroup_sum_tree.wgsl"),
            WorkgroupSums::Subgroup => include_str!("kernels/workgroup_sum_subgroup.wgsl"),
        }
    }
}

/// One `.wgsl` file: a family of related entry points.
#[derive(Debug)]
pub struct KernelFamily {
    pub name: &'static str,
    pub source: &'static str,
}

/// How an entry point uses one of its storage bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A storage binding: its `@binding` slot and access. Slot 0 is always the uniform parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(pub u32, pub Access);

/// Most `override` constants one specialisation sets.
pub const MAX_CONSTANTS: usize = 8;

/// Everything that makes one pipeline: the entry point, its bindings and the values of the
/// family's `override` constants (op codes, transposition and vector-load flags). Held
/// inline, so describing a launch allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    pub family: &'static KernelFamily,
    pub entry: &'static str,
    pub slots: &'static [Slot],
    constants: [(&'static str, f64); MAX_CONSTANTS],
    constant_count: usize,
    /// The entry calls the prelude's `report_fault`, so the context's fault buffer is bound.
    pub reports_faults: bool,
}

impl KernelSpec {
    pub fn new(family: &'static KernelFamily, entry: &'static str, slots: &'static [Slot]) -> Self {
        Self { family, entry, slots, constants: [("", 0.0); MAX_CONSTANTS], constant_count: 0, reports_faults: false }
    }

    /// Sets an `override` constant. Panics past [`MAX_CONSTANTS`]: a launcher's fixed
    /// specialisation list, not input, decides how many there are.
    pub fn constant(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        assert!(self.constant_count < MAX_CONSTANTS, "{}: more than {MAX_CONSTANTS} constants", self.entry);
        self.constants[self.constant_count] = (name, value.into());
        self.constant_count += 1;
        self
    }

    pub fn constants(&self) -> &[(&'static str, f64)] {
        &self.constants[..self.constant_count]
    }

    /// Binds the fault buffer: the kernel may report bad input it finds on the device.
    pub fn reports_faults(mut self) -> Self {
        self.reports_faults = true;
        self
    }

    /// A label that names the kernel in errors and in wgpu's validation messages.
    pub fn label(&self) -> String {
        let mut label = format!("{}::{}", self.family.name, self.entry);
        for (name, value) in self.constants() {
            label.push_str(&format!(" {name}={value}"));
        }
        label
    }

    fn key(&self) -> PipelineKey {
        let mut constants = [("", 0u64); MAX_CONSTANTS];
        for (slot, (name, value)) in constants.iter_mut().zip(self.constants()) {
            *slot = (name, value.to_bits());
        }
        PipelineKey { family: self.family.name, entry: self.entry, constants }
    }
}

/// What a family's shader module compiles: the prelude, the `workgroup_sum` that `sums`
/// names if the family calls it, and the family's source.
pub(crate) fn module_source(family: &KernelFamily, sums: WorkgroupSums) -> String {
    let helper = if family.source.contains("workgroup_sum(") { sums.source() } else { "" };
    format!("{PRELUDE}\n{helper}\n{}", family.source)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    family: &'static str,
    entry: &'static str,
    constants: [(&'static str, u64); MAX_CONSTANTS],
}

pub(crate) struct CachedPipeline {
    /// Numbers the pipelines in creation order; the bind-group cache keys on it.
    pub(crate) id: u32,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<PipelineKey, Arc<CachedPipeline>>,
}

impl PipelineCache {
    /// The pipeline of `spec`, if it was built before.
    pub(crate) fn get(&self, spec: &KernelSpec) -> Option<Arc<CachedPipeline>> {
        self.pipelines.get(&spec.key()).cloned()
    }

    /// Builds (and caches) the pipeline of `spec`, compiling its family's source the first
    /// time one of its entries is built; a family that calls `workgroup_sum` gets the
    /// definition `sums` names.
    pub(crate) fn build(
        &mut self,
        device: &wgpu::Device,
        spec: &KernelSpec,
        sums: WorkgroupSums,
    ) -> Arc<CachedPipeline> {
        let key = spec.key();
        let module = self.modules.entry(spec.family.name).or_insert_with(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(spec.family.name),
                source: wgpu::ShaderSource::Wgsl(module_source(spec.family, sums).into()),
            })
        });
        let label = spec.label();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &layout_entries(spec.slots, spec.reports_faults),
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: spec.constants(),
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let cached = Arc::new(CachedPipeline { id: self.pipelines.len() as u32, pipeline, layout });
        self.pipelines.insert(key, cached.clone());
        cached
    }

    pub(crate) fn len(&self) -> usize {
        self.pipelines.len()
    }
}

/// The `@binding` of the fault buffer in every family (see prelude.wgsl).
pub(crate) const FAULT_SLOT: u32 = 15;

fn layout_entries(slots: &[Slot], reports_faults: bool) -> Vec<wgpu::BindGroupLayoutEntry> {
    let uniform = wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            // Each launch's parameters sit at their own offset in the batch's uniform ring.
            has_dynamic_offset: true,
            min_binding_size: None,
        },
        count: None,
    };
    let fault = reports_faults.then_some(Slot(FAULT_SLOT, Access::ReadWrite));
    let storage = slots.iter().chain(fault.as_ref()).map(|&Slot(binding, access)| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: access == Access::Read },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    std::iter::once(uniform).chain(storage).collect()
}
