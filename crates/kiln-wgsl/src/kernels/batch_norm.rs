//! Batch normalisation (batch_norm.wgsl): training forward and backward in two launches each,
//! optionally with the ReLU that follows it fused in.

use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, KernelClass, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "batch_norm", source: include_str!("batch_norm.wgsl") };

/// An NCHW tensor as batch norm sees it: `[batch, channels, plane]` with plane = H·W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelShape {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl ChannelShape {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn params(&self, eps: f32, momentum: f32) -> Params {
        let count = (self.batch * self.plane) as f32;
        Params {
            batch: self.batch as u32,
            channels: self.channels as u32,
            plane: self.plane as u32,
            len: self.len() as u32,
            eps,
            momentum,
            count,
            unbias: count / (count - 1.0),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
    len: u32,
    eps: f32,
    momentum: f32,
    count: f32,
    unbias: f32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout =
    params_layout!(Params: batch, channels, plane, len, eps, momentum, count, unbias);

/// What a normalisation divides by.
#[derive(Clone, Copy, Debug)]
pub enum Scale<'a> {
    /// 1/√(var + eps) per channel, as [`batch_norm_stats`] returns it.
    Invstd(&'a GpuBuffer),
    /// The running variance and eps (evaluation mode).
    Variance(&'a GpuBuffer, f32),
}

/// The optional per-channel scale γ and shift β.
#[derive(Clone, Copy, Debug, Default)]
pub struct Affine<'a> {
    pub weight: Option<&'a GpuBuffer>,
    pub bias: Option<&'a GpuBuffer>,
}

/// Consecutive elements per invocation of the elementwise kernels (`RUN` in
/// batch_norm.wgsl). llvmpipe pays per invocation for finding the channel and loading its
/// values: on the ASL CNN (Zen 4, lavapipe), against the unchanged statistics kernel in the
/// same run, normalisation went from 1.30–1.37× its time to 0.58× with runs of 16 (0.63×
/// with 8) and the input gradient from 1.83–1.91× to 0.92–0.97×. A hardware GPU keeps one
/// element per invocation, so that neighbouring invocations read neighbouring values.
fn run_length(ctx: &GpuContext) -> usize {
    match ctx.kernel_class() {
        KernelClass::Software => 16,
        KernelClass::Hardware => 1,
    }
}

/// The entry's pipeline with HAS_WEIGHT, HAS_BIAS, RELU, FROM_VARIANCE and TRAINING set.
fn flags(entry: &'static str, slots: &'static [Slot], flags: [bool; 5]) -> KernelSpec {
    let names = ["HAS_WEIGHT", "HAS_BIAS", "RELU", "FROM_VARIANCE", "TRAINING"];
    names.iter().zip(flags).fold(KernelSpec::new(&FAMILY, entry, slots), |spec, (name, on)| spec.constant(name, on))
}

/// Channels beyond a grid row's workgroups are the launch's `DispatchTooLarge`.
fn check(kernel: &'static str, shape: &ChannelShape) -> Result<()> {
    super::check_indexable(kernel, shape.len(), 1)
}

/// The batch's per-channel mean and 1/√(biased variance + eps) of `x`; the running
/// statistics (updated in place) move toward the batch's by `momentum`, the variance
/// unbiased, as PyTorch.
pub fn batch_norm_stats(
    ctx: &GpuContext,
    x: &GpuBuffer,
    shape: &ChannelShape,
    (running_mean, running_var): (&GpuBuffer, &GpuBuffer),
    eps: f32,
    momentum: f32,
) -> Result<(GpuBuffer, GpuBuffer)> {
    check("batch_norm_stats", shape)?;
    let (mean, invstd) = (ctx.alloc(shape.channels as u64 * 4)?, ctx.alloc(shape.channels as u64 * 4)?);
    let spec = flags(
        "batch_norm_stats",
        &[
            Slot(1, Access::Read),
            Slot(2, Access::ReadWrite),
            Slot(3, Access::ReadWrite),
            Slot(4, Access::ReadWrite),
            Slot(5, Access::ReadWrite),
        ],
        [false; 5],
    );
    let params = shape.params(eps, momentum);
    let buffers = [x, &mean, &invstd, running_mean, running_var];
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, [shape.channels as u32, 1, 1])?;
    Ok((mean, invstd))
}

/// (x − mean)·scale·γ + β per channel, then max(·, 0) when `relu`.
pub fn batch_norm_normalize(
    ctx: &GpuContext,
    x: &GpuBuffer,
    shape: &ChannelShape,
    mean: &GpuBuffer,
    scale: Scale,
    affine: Affine,
    relu: bool,
) -> Result<GpuBuffer> {
    check("batch_norm_normalize", shape)?;
    let out = ctx.alloc(shape.len() as u64 * 4)?;
    let (divisor, eps, from_variance) = match scale {
        Scale::Invstd(invstd) => (invstd, 0.0, false),
        Scale::Variance(var, eps) => (var, eps, true),
    };
    let spec = flags(
        "batch_norm_normalize",
        &[
            Slot(1, Access::Read),
            Slot(10, Access::ReadWrite),
            Slot(6, Access::Read),
            Slot(7, Access::Read),
            Slot(8, Access::Read),
            Slot(9, Access::Read),
        ],
        [affine.weight.is_some(), affine.bias.is_some(), relu, from_variance, false],
    );
    // Absent operands are stood in for by the mean, which the kernel then does not read.
    let buffers = [x, &out, mean, divisor, affine.weight.unwrap_or(mean), affine.bias.unwrap_or(mean)];
    let params = shape.params(eps, 0.0);
    let run = run_length(ctx);
    let spec = spec.constant("RUN", run as u32);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, ctx.linear_grid(shape.len().div_ceil(run), 256)?)?;
    Ok(out)
}

/// What batch norm's backward reads: the forward input and the statistics it was
/// normalised with, and the forward output when a ReLU was fused into it.
#[derive(Clone, Copy, Debug)]
pub struct BackwardInputs<'a> {
    pub x: &'a GpuBuffer,
    pub mean: &'a GpuBuffer,
    pub invstd: &'a GpuBuffer,
    pub relu_output: Option<&'a GpuBuffer>,
}

/// Σdy and Σdy·x̂ per channel (the shift's and the scale's gradients), with x̂ the
/// normalised input; dy masked by the fused ReLU's output when there was one.
pub fn batch_norm_backward_sums(
    ctx: &GpuContext,
    dy: &GpuBuffer,
    inputs: &BackwardInputs,
    shape: &ChannelShape,
) -> Result<(GpuBuffer, GpuBuffer)> {
    check("batch_norm_backward_sums", shape)?;
    let (sum_dy, sum_dot) = (ctx.alloc(shape.channels as u64 * 4)?, ctx.alloc(shape.channels as u64 * 4)?);
    let spec = flags(
        "batch_norm_backward_sums",
        &[
            Slot(11, Access::Read),
            Slot(1, Access::Read),
            Slot(6, Access::Read),
            Slot(7, Access::Read),
            Slot(12, Access::Read),
            Slot(13, Access::ReadWrite),
            Slot(14, Access::ReadWrite),
        ],
        [false, false, inputs.relu_output.is_some(), false, false],
    );
    let buffers = [dy, inputs.x, inputs.mean, inputs.invstd, inputs.relu_output.unwrap_or(dy), &sum_dy, &sum_dot];
    let params = shape.params(0.0, 0.0);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, [shape.channels as u32, 1, 1])?;
    Ok((sum_dy, sum_dot))
}

/// The input gradient, from dy and the sums [`batch_norm_backward_sums`] made: through the
/// batch statistics when `training`, else through fixed ones (γ·invstd·dy).
pub fn batch_norm_backward_input(
    ctx: &GpuContext,
    dy: &GpuBuffer,
    inputs: &BackwardInputs,
    weight: Option<&GpuBuffer>,
    (sum_dy, sum_dot): (&GpuBuffer, &GpuBuffer),
    shape: &ChannelShape,
    training: bool,
) -> Result<GpuBuffer> {
    check("batch_norm_backward_input", shape)?;
    let dx = ctx.alloc(shape.len() as u64 * 4)?;
    let spec = flags(
        "batch_norm_backward_input",
        &[
            Slot(11, Access::Read),
            Slot(1, Access::Read),
            Slot(6, Access::Read),
            Slot(7, Access::Read),
            Slot(8, Access::Read),
            Slot(12, Access::Read),
            Slot(16, Access::Read),
            Slot(17, Access::Read),
            Slot(10, Access::ReadWrite),
        ],
        [weight.is_some(), false, inputs.relu_output.is_some(), false, training],
    );
    let buffers = [
        dy,
        inputs.x,
        inputs.mean,
        inputs.invstd,
        weight.unwrap_or(inputs.mean),
        inputs.relu_output.unwrap_or(dy),
        sum_dy,
        sum_dot,
        &dx,
    ];
    let params = shape.params(0.0, 0.0);
    let run = run_length(ctx);
    let spec = spec.constant("RUN", run as u32);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, ctx.linear_grid(shape.len().div_ceil(run), 256)?)?;
    Ok(dx)
}
