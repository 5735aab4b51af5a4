//! In-place optimizer steps over many tensors at once (adam.wgsl, sgd.wgsl).
//!
//! One launch updates a group of tensors: each binds its own buffers, and the launch's flat
//! index runs through the group's tensors one after another. WGSL has no arrays of buffers
//! (short of an extension), so the entry point, bindings and parameter block for each group
//! size are generated here around the element update the `.wgsl` file defines. Groups are
//! as large as the adapter's storage-buffer limit allows, up to [`MAX_GROUP`]: the ASL CNN's
//! 16 parameters take 2 launches on an adapter with 32 storage buffers per stage, not 16.
//! The software kernels launch each large tensor alone (see `SOFTWARE_ALONE_FROM`).

use std::sync::OnceLock;

use crate::context::MAX_BINDINGS;
use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, KernelClass, Result};

/// The most tensors one launch updates.
pub const MAX_GROUP: usize = 8;

/// torch.optim.SGD's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// torch.optim.Adam's hyperparameters; `decoupled` weight decay makes it AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
}

impl AdamConfig {
    /// lr / (1 − β1ᵗ) and √(1 − β2ᵗ) for step `t` (from 1), in double precision as PyTorch.
    pub fn bias_corrections(&self, step: u64) -> (f32, f32) {
        let t = step as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t);
        ((self.lr as f64 / bc1) as f32, bc2.sqrt() as f32)
    }
}

/// The update kernels, each with the buffers one tensor binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Update {
    Adam,
    SgdWithMomentum,
    Sgd,
}

impl Update {
    const ALL: [Update; 3] = [Update::Adam, Update::SgdWithMomentum, Update::Sgd];

    fn name(self) -> &'static str {
        match self {
            Update::Adam => "adam",
            Update::SgdWithMomentum => "sgd_momentum",
            Update::Sgd => "sgd",
        }
    }

    fn element_update(self) -> &'static str {
        match self {
            Update::Adam => include_str!("adam.wgsl"),
            Update::SgdWithMomentum | Update::Sgd => include_str!("sgd.wgsl"),
        }
    }

    /// Each tensor's buffers, named as the generated bindings are.
    fn buffers(self) -> &'static [(&'static str, Access)] {
        match self {
            Update::Adam => &[
                ("param", Access::ReadWrite),
                ("grad", Access::Read),
                ("exp_avg", Access::ReadWrite),
                ("exp_avg_sq", Access::ReadWrite),
            ],
            Update::SgdWithMomentum => {
                &[("param", Access::ReadWrite), ("grad", Access::Read), ("momentum_buffer", Access::ReadWrite)]
            }
            Update::Sgd => &[("param", Access::ReadWrite), ("grad", Access::Read)],
        }
    }

    /// The hyperparameters' fields of `Params`: eight 32-bit words, as `SHARED_WORDS`.
    fn shared_fields(self) -> &'static str {
        match self {
            Update::Adam => {
                "decoupled: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, pad0: u32, pad1: u32,"
            }
            Update::SgdWithMomentum | Update::Sgd => {
                "nesterov: u32, lr: f32, momentum: f32, dampening: f32, weight_decay: f32, pad0: u32, pad1: u32, pad2: u32,"
            }
        }
    }

    /// Element `j` of tensor `k`, whose words are `t` (end, then the update's own two).
    fn apply(self, k: usize) -> String {
        match self {
            Update::Adam => format!(
                "let s = adam_update(param_{k}[j], grad_{k}[j], exp_avg_{k}[j], exp_avg_sq_{k}[j], \
                 bitcast<f32>(t.y), bitcast<f32>(t.z));\n        \
                 param_{k}[j] = s.w;\n        exp_avg_{k}[j] = s.m;\n        exp_avg_sq_{k}[j] = s.v;"
            ),
            Update::SgdWithMomentum => format!(
                "let s = sgd_update(param_{k}[j], grad_{k}[j], momentum_buffer_{k}[j], t.y != 0u);\n        \
                 param_{k}[j] = s.w;\n        momentum_buffer_{k}[j] = s.momentum_buffer;"
            ),
            Update::Sgd => format!("param_{k}[j] = sgd_update(param_{k}[j], grad_{k}[j], 0.0, true).w;"),
        }
    }

    /// The WGSL of one launch over `tensors` tensors.
    fn source(self, tensors: usize) -> String {
        let mut wgsl = format!(
            "{}\nstruct Params {{\n    {}\n    tensors: array<vec4<u32>, {tensors}>,\n}}\n\n\
             @group(0) @binding(0) var<uniform> p: Params;\n",
            self.element_update(),
            self.shared_fields()
        );
        for k in 0..tensors {
            for (i, (name, access)) in self.buffers().iter().enumerate() {
                let access = if *access == Access::Read { "read" } else { "read_write" };
                let binding = 1 + k * self.buffers().len() + i;
                wgsl.push_str(&format!(
                    "@group(0) @binding({binding}) var<storage, {access}> {name}_{k}: array<f32>;\n"
                ));
            }
        }
        wgsl.push_str(&format!(
            "\n@compute @workgroup_size(256)\nfn {}(@builtin(workgroup_id) wid: vec3<u32>, \
             @builtin(num_workgroups) nwg: vec3<u32>,\n        @builtin(local_invocation_index) lid: u32) {{\n    \
             let i = flat_index(wid, nwg, lid, 256u);\n    var start = 0u;\n",
            self.name()
        ));
        for k in 0..tensors {
            wgsl.push_str(&format!(
                "    if (i < p.tensors[{k}].x) {{\n        let t = p.tensors[{k}];\n        let j = i - start;\n        \
                 {}\n        return;\n    }}\n    start = p.tensors[{k}].x;\n",
                self.apply(k)
            ));
        }
        wgsl.push_str("}\n");
        wgsl
    }
}

/// Words of hyperparameters before the per-tensor words in `Params`.
const SHARED_WORDS: usize = 8;

/// The generated family and slots of every update and group size, made once.
fn kernel(update: Update, tensors: usize) -> (&'static KernelFamily, &'static [Slot]) {
    type Table = Vec<Vec<(&'static KernelFamily, &'static [Slot])>>;
    static TABLE: OnceLock<Table> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Update::ALL
            .iter()
            .map(|&update| {
                (1..=MAX_GROUP)
                    .map(|n| {
                        let name: &'static str = Box::leak(format!("{}x{n}", update.name()).into_boxed_str());
                        let source: &'static str = Box::leak(update.source(n).into_boxed_str());
                        let family: &'static KernelFamily = Box::leak(Box::new(KernelFamily { name, source }));
                        let slots = (0..n * update.buffers().len())
                            .map(|b| Slot(1 + b as u32, update.buffers()[b % update.buffers().len()].1));
                        let slots: &'static [Slot] = Box::leak(slots.collect::<Vec<_>>().into_boxed_slice());
                        (family, slots)
                    })
                    .collect()
            })
            .collect()
    });
    let row = Update::ALL.iter().position(|&u| u == update).expect("every update has a row");
    table[row][tensors - 1]
}

/// Every generated family with the 32-bit words of parameters its launches send.
#[cfg(test)]
pub(crate) fn generated_families() -> impl Iterator<Item = (&'static KernelFamily, usize)> {
    Update::ALL.into_iter().flat_map(|update| (1..=MAX_GROUP).map(move |n| (kernel(update, n).0, SHARED_WORDS + 4 * n)))
}

/// Tensors per launch at most on this adapter.
fn group_size(ctx: &GpuContext, update: Update) -> usize {
    let limit = ctx.limits().max_storage_buffers_per_shader_stage as usize;
    (limit.min(MAX_BINDINGS) / update.buffers().len()).clamp(1, MAX_GROUP)
}

/// With the software kernels, a tensor of at least this many elements is updated in a launch
/// of its own. llvmpipe (Mesa 22.3) runs the body of every branch for each element, masked,
/// so in a group of n tensors an element costs about n updates: SGD over 2²⁰ elements took
/// 3.3 ns an element as one tensor, 4.9 as two and 12.5 as six (2 Zen 4 cores). Small
/// tensors (biases, batch-norm parameters) still share launches, which cost more than their
/// elements do.
const SOFTWARE_ALONE_FROM: usize = 4096;

/// The groups of `tensors` (as indices) that launches update together, in order: runs of up
/// to `group_size` tensors; with the software kernels, the large tensors alone and the
/// small ones in runs.
fn plan_groups(ctx: &GpuContext, update: Update, lens: &[usize]) -> Vec<Vec<usize>> {
    let most = group_size(ctx, update);
    let alone = |len: usize| ctx.kernel_class() == KernelClass::Software && len >= SOFTWARE_ALONE_FROM;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut small: Vec<usize> = Vec::new();
    for (t, &len) in lens.iter().enumerate() {
        if alone(len) {
            groups.push(vec![t]);
        } else {
            small.push(t);
        }
    }
    groups.extend(small.chunks(most).map(<[usize]>::to_vec));
    groups
}

/// Launches `update` over `tensors` in groups (`plan_groups`): `buffers(t)` are tensor `t`'s
/// buffers and `words(t)` its two per-tensor words after its end.
fn launch_groups<T>(
    ctx: &GpuContext,
    update: Update,
    shared: [u32; SHARED_WORDS],
    tensors: &[T],
    len: impl Fn(&T) -> usize,
    buffers: impl Fn(&T, usize) -> &GpuBuffer,
    words: impl Fn(&T) -> [u32; 2],
) -> Result<()> {
    let per_tensor = update.buffers().len();
    let lens: Vec<usize> = tensors.iter().map(&len).collect();
    for group in plan_groups(ctx, update, &lens) {
        let mut params = [0u32; SHARED_WORDS + 4 * MAX_GROUP];
        params[..SHARED_WORDS].copy_from_slice(&shared);
        let Some(&first) = group.first() else { continue };
        let mut bound = [buffers(&tensors[first], 0); MAX_BINDINGS];
        let mut end = 0usize;
        for (k, &t) in group.iter().enumerate() {
            let tensor = &tensors[t];
            end += lens[t];
            let [a, b] = words(tensor);
            params[SHARED_WORDS + 4 * k..SHARED_WORDS + 4 * k + 3].copy_from_slice(&[end as u32, a, b]);
            for (i, slot) in bound[k * per_tensor..(k + 1) * per_tensor].iter_mut().enumerate() {
                *slot = buffers(tensor, i);
            }
        }
        super::check_indexable(update.name(), end, 1)?;
        let (family, slots) = kernel(update, group.len());
        let spec = KernelSpec::new(family, update.name(), slots);
        let bytes = bytemuck::cast_slice(&params[..SHARED_WORDS + 4 * group.len()]);
        ctx.launch(&spec, bytes, &bound[..group.len() * per_tensor], ctx.linear_grid(end, 256)?)?;
    }
    Ok(())
}

/// One Adam (or AdamW) step on a parameter: its gradient and moments, its length, and the
/// number of this step (from 1), which sets its bias corrections.
#[derive(Clone, Copy, Debug)]
pub struct AdamTensor<'a> {
    pub param: &'a GpuBuffer,
    pub grad: &'a GpuBuffer,
    pub exp_avg: &'a GpuBuffer,
    pub exp_avg_sq: &'a GpuBuffer,
    pub len: usize,
    pub step: u64,
}

/// Adam (or AdamW) steps on every tensor, in place, in as few launches as the adapter allows.
pub fn adam(ctx: &GpuContext, tensors: &[AdamTensor], config: &AdamConfig) -> Result<()> {
    let f = f32::to_bits;
    let shared = [
        config.decoupled as u32,
        f(config.lr),
        f(config.beta1),
        f(config.beta2),
        f(config.eps),
        f(config.weight_decay),
        0,
        0,
    ];
    launch_groups(
        ctx,
        Update::Adam,
        shared,
        tensors,
        |t| t.len,
        |t, i| [t.param, t.grad, t.exp_avg, t.exp_avg_sq][i],
        |t| {
            let (step_size, bias_correction2_sqrt) = config.bias_corrections(t.step);
            [f(step_size), f(bias_correction2_sqrt)]
        },
    )
}

/// One SGD step on a parameter. `momentum_buffer` is needed when momentum ≠ 0; on the
/// `first_step` it is overwritten with the gradient, as PyTorch initialises it.
#[derive(Clone, Copy, Debug)]
pub struct SgdTensor<'a> {
    pub param: &'a GpuBuffer,
    pub grad: &'a GpuBuffer,
    pub momentum_buffer: Option<&'a GpuBuffer>,
    pub len: usize,
    pub first_step: bool,
}

/// SGD steps on every tensor, in place, in as few launches as the adapter allows.
pub fn sgd(ctx: &GpuContext, tensors: &[SgdTensor], config: &SgdConfig) -> Result<()> {
    let f = f32::to_bits;
    let shared = [
        config.nesterov as u32,
        f(config.lr),
        f(config.momentum),
        f(config.dampening),
        f(config.weight_decay),
        0,
        0,
        0,
    ];
    if config.momentum == 0.0 {
        return launch_groups(ctx, Update::Sgd, shared, tensors, |t| t.len, |t, i| [t.param, t.grad][i], |_| [0, 0]);
    }
    if tensors.iter().any(|t| t.momentum_buffer.is_none()) {
        return Err(crate::GpuError::InvalidLaunch {
            kernel: "sgd",
            reason: "momentum needs a momentum buffer".into(),
        });
    }
    launch_groups(
        ctx,
        Update::SgdWithMomentum,
        shared,
        tensors,
        |t| t.len,
        |t, i| [t.param, t.grad, t.momentum_buffer.expect("checked above")][i],
        |t| [t.first_step as u32, 0],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, values};
    use crate::testing::{context_or_skip, contexts_of_each_class};
    use proptest::prelude::*;

    #[test]
    fn one_adam_step_from_zero_state_moves_by_lr() {
        // With m = v = 0, step 1 gives m̂ = g and v̂ = g², so each weight moves by lr·sign(g).
        let Some(ctx) = context_or_skip("optimizer::one_adam_step_from_zero_state_moves_by_lr") else { return };
        let param = ctx.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        let grad = ctx.upload(&[0.5f32, -4.0, 1e-3]).unwrap();
        let (m, v) = (ctx.upload(&[0.0f32; 3]).unwrap(), ctx.upload(&[0.0f32; 3]).unwrap());
        let config = AdamConfig { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
        let tensor = AdamTensor { param: &param, grad: &grad, exp_avg: &m, exp_avg_sq: &v, len: 3, step: 1 };
        adam(&ctx, &[tensor], &config).unwrap();
        let got = ctx.read::<f32>(&param, 3).unwrap();
        for (g, w) in got.iter().zip([0.9f32, 2.1, 2.9]) {
            assert!((g - w).abs() < 1e-4, "{got:?}");
        }
    }

    #[test]
    fn plain_sgd_subtracts_lr_times_grad() {
        let Some(ctx) = context_or_skip("optimizer::plain_sgd_subtracts_lr_times_grad") else { return };
        let param = ctx.upload(&[1.0f32, 2.0]).unwrap();
        let grad = ctx.upload(&[10.0f32, -10.0]).unwrap();
        let config = SgdConfig { lr: 0.01, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false };
        let tensor = SgdTensor { param: &param, grad: &grad, momentum_buffer: None, len: 2, first_step: true };
        sgd(&ctx, &[tensor], &config).unwrap();
        assert_eq!(ctx.read::<f32>(&param, 2).unwrap(), vec![0.9, 2.1]);
        let with_momentum = SgdConfig { momentum: 0.9, ..config };
        assert!(sgd(&ctx, &[tensor], &with_momentum).is_err());
    }

    /// Adam on the host, as kiln-tensor's CPU path computes it.
    fn host_adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &AdamConfig, step: u64) {
        let (step_size, bc2) = c.bias_corrections(step);
        for i in 0..w.len() {
            let (mut grad, mut param) = (g[i], w[i]);
            if c.weight_decay != 0.0 {
                if c.decoupled {
                    param *= 1.0 - c.lr * c.weight_decay;
                } else {
                    grad += c.weight_decay * param;
                }
            }
            m[i] += (1.0 - c.beta1) * (grad - m[i]);
            v[i] = v[i] * c.beta2 + (1.0 - c.beta2) * grad * grad;
            w[i] = param - step_size * (m[i] / (v[i].sqrt() / bc2 + c.eps));
        }
    }

    /// SGD on the host, as kiln-tensor's CPU path computes it.
    fn host_sgd(w: &mut [f32], g: &[f32], buf: &mut [f32], c: &SgdConfig, first_step: bool) {
        for i in 0..w.len() {
            let mut grad = g[i];
            if c.weight_decay != 0.0 {
                grad += c.weight_decay * w[i];
            }
            if c.momentum != 0.0 {
                buf[i] = if first_step { grad } else { c.momentum * buf[i] + (1.0 - c.dampening) * grad };
                grad = if c.nesterov { grad + c.momentum * buf[i] } else { buf[i] };
            }
            w[i] -= c.lr * grad;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn grouped_steps_match_one_tensor_at_a_time(
            lens in prop::collection::vec(prop_oneof![4 => 0..4usize, 4 => 1..700usize, 1 => SOFTWARE_ALONE_FROM..5000], 1..20),
            decoupled in any::<bool>(), momentum in prop_oneof![Just(0.0f32), Just(0.9)], nesterov in any::<bool>(),
        ) {
            // Each class's context: the portable kernels group tensors, the software ones do not.
            for ctx in contexts_of_each_class("optimizer::grouped_steps_match_one_tensor_at_a_time") {
                let adam_config = AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, decoupled };
                let sgd_config = SgdConfig { lr: 0.05, momentum, dampening: 0.1, weight_decay: 0.01, nesterov: nesterov && momentum != 0.0 };
                let host: Vec<[Vec<f32>; 4]> = lens.iter().enumerate().map(|(t, &n)| {
                    let seed = 10 * t as u64;
                    [values(n, seed), values(n, seed + 1), values(n, seed + 2), values(n, seed + 3).iter().map(|v| v.abs()).collect()]
                }).collect();
                let upload = |x: &Vec<f32>| ctx.upload(x).unwrap();
                let gpu: Vec<[GpuBuffer; 4]> = host.iter().map(|[a, b, c, d]| [upload(a), upload(b), upload(c), upload(d)]).collect();
                // Each tensor at its own step count, so each has its own bias corrections.
                let adam_tensors: Vec<AdamTensor> = gpu.iter().zip(&lens).enumerate().map(|(t, ([w, g, m, v], &len))| {
                    AdamTensor { param: w, grad: g, exp_avg: m, exp_avg_sq: v, len, step: 1 + t as u64 % 3 }
                }).collect();
                adam(&ctx, &adam_tensors, &adam_config).unwrap();
                let sgd_tensors: Vec<SgdTensor> = gpu.iter().zip(&lens).enumerate().map(|(t, ([w, g, _, b], &len))| {
                    SgdTensor { param: w, grad: g, momentum_buffer: Some(b), len, first_step: t % 2 == 0 }
                }).collect();
                sgd(&ctx, &sgd_tensors, &sgd_config).unwrap();
                for (t, ([w, g, m, v], buffers)) in host.into_iter().zip(&gpu).enumerate() {
                    let (mut w, mut m, mut v) = (w, m, v);
                    host_adam(&mut w, &g, &mut m, &mut v, &adam_config, 1 + t as u64 % 3);
                    // SGD's momentum buffer is Adam's second moment's buffer here.
                    let mut buf = v;
                    host_sgd(&mut w, &g, &mut buf, &sgd_config, t % 2 == 0);
                    assert_close(&ctx.read::<f32>(&buffers[0], w.len()).unwrap(), &w, 1e-6);
                    assert_close(&ctx.read::<f32>(&buffers[2], m.len()).unwrap(), &m, 1e-6);
                    if momentum != 0.0 {
                        assert_close(&ctx.read::<f32>(&buffers[3], buf.len()).unwrap(), &buf, 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn groups_fit_the_adapter_and_software_launches_large_tensors_alone() {
        let Some(ctx) = context_or_skip("optimizer::groups_fit_the_adapter_and_software_launches_large_tensors_alone")
        else {
            return;
        };
        let limit = ctx.limits().max_storage_buffers_per_shader_stage as usize;
        let most = (limit.min(MAX_BINDINGS) / 4).clamp(1, MAX_GROUP);
        assert_eq!(group_size(&ctx, Update::Adam), most);
        let big = SOFTWARE_ALONE_FROM;
        let lens: Vec<usize> = (0..20).map(|t| if t % 5 == 1 { big + t } else { t }).collect();
        for ctx in contexts_of_each_class("optimizer::groups_fit_the_adapter_and_software_launches_large_tensors_alone")
        {
            let groups = plan_groups(&ctx, Update::Adam, &lens);
            let mut all: Vec<usize> = groups.concat();
            all.sort();
            assert_eq!(all, (0..20).collect::<Vec<_>>(), "every tensor once");
            assert!(groups.iter().all(|g| !g.is_empty() && g.len() <= most), "{groups:?}");
            let large_alone = groups.iter().filter(|g| g.len() == 1 && lens[g[0]] >= big).count();
            match ctx.kernel_class() {
                KernelClass::Software => {
                    assert_eq!((large_alone, groups.len()), (4, 4 + 16usize.div_ceil(most)), "{groups:?}")
                }
                KernelClass::Hardware => assert_eq!(groups.len(), 20usize.div_ceil(most), "{groups:?}"),
            }
        }
        for update in Update::ALL {
            for n in 1..=MAX_GROUP {
                assert_eq!(kernel(update, n).1.len(), n * update.buffers().len());
            }
        }
    }
}
