//! Per-channel sums (channel_sums.wgsl): bias gradients, optionally fused with the backward
//! of the ReLU that followed the layer.

use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily =
    KernelFamily { name: "channel_sums", source: include_str!("channel_sums.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
    _pad: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: batch, channels, plane);

/// Channels of at most this many values are summed by one invocation each, longer ones by a
/// workgroup each (a linear layer's bias gradient sums a batch; a convolution's, batch × plane).
const SERIAL_MAX_VALUES: usize = 256;

/// The entry (`name` or its `_serial` twin) and grid for summing channels of this shape:
/// one workgroup per channel (more than a grid row holds are the launch's
/// `DispatchTooLarge`), or one invocation per channel.
fn plan(
    ctx: &GpuContext,
    (tree, serial): (&'static str, &'static str),
    [batch, channels, plane]: [usize; 3],
) -> Result<(&'static str, [u32; 3])> {
    if batch * plane <= SERIAL_MAX_VALUES {
        Ok((serial, ctx.linear_grid(channels, 256)?))
    } else {
        Ok((tree, [channels as u32, 1, 1]))
    }
}

fn check(kernel: &'static str, [batch, channels, plane]: [usize; 3]) -> Result<Params> {
    super::check_indexable(kernel, batch * channels * plane, 1)?;
    Ok(Params { batch: batch as u32, channels: channels as u32, plane: plane as u32, _pad: 0 })
}

/// Σ over batch and plane of `grad` viewed as `[batch, channels, plane]`: `[channels]`.
pub fn channel_sums(ctx: &GpuContext, grad: &GpuBuffer, shape: [usize; 3]) -> Result<GpuBuffer> {
    let params = check("channel_sums", shape)?;
    let sums = ctx.alloc(shape[1] as u64 * 4)?;
    let (entry, grid) = plan(ctx, ("channel_sums", "channel_sums_serial"), shape)?;
    let spec = KernelSpec::new(&FAMILY, entry, &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)]);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[grad, &sums], grid)?;
    Ok(sums)
}

/// The gradient through a ReLU whose output was `relu_output` (zero where that is not
/// positive), and that gradient's [`channel_sums`].
pub fn relu_backward_channel_sums(
    ctx: &GpuContext,
    grad: &GpuBuffer,
    relu_output: &GpuBuffer,
    shape: [usize; 3],
) -> Result<(GpuBuffer, GpuBuffer)> {
    let params = check("relu_backward_channel_sums", shape)?;
    let sums = ctx.alloc(shape[1] as u64 * 4)?;
    let masked = ctx.alloc(shape.iter().product::<usize>() as u64 * 4)?;
    let (entry, grid) = plan(ctx, ("relu_backward_channel_sums", "relu_backward_channel_sums_serial"), shape)?;
    let spec = KernelSpec::new(
        &FAMILY,
        entry,
        &[Slot(1, Access::Read), Slot(2, Access::ReadWrite), Slot(3, Access::Read), Slot(4, Access::ReadWrite)],
    );
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[grad, &sums, relu_output, &masked], grid)?;
    Ok((masked, sums))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, values};
    use crate::testing::contexts_of_each_class;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn sums_match_the_host(batch in 1..6usize, channels in prop_oneof![1..9usize, Just(300)], plane in prop_oneof![1..5usize, Just(60), Just(300)]) {
            for ctx in contexts_of_each_class("channel_sums::sums_match_the_host") {
            let shape = [batch, channels, plane];
            let len = batch * channels * plane;
            let (grad, output) = (values(len, 5), values(len, 6));
            let masked: Vec<f32> = grad.iter().zip(&output).map(|(&g, &y)| if y > 0.0 { g } else { 0.0 }).collect();
            let host = |x: &[f32]| -> Vec<f32> {
                (0..channels).map(|c| (0..batch * plane).map(|i| x[(i / plane * channels + c) * plane + i % plane]).sum()).collect()
            };
            let (g, y) = (ctx.upload(&grad).unwrap(), ctx.upload(&output).unwrap());
            let tolerance = 1e-5 * ((batch * plane) as f32).sqrt();
            assert_close(&ctx.read::<f32>(&channel_sums(&ctx, &g, shape).unwrap(), channels).unwrap(), &host(&grad), tolerance);
            let (got_masked, sums) = relu_backward_channel_sums(&ctx, &g, &y, shape).unwrap();
            assert_eq!(ctx.read::<f32>(&got_masked, len).unwrap(), masked);
            assert_close(&ctx.read::<f32>(&sums, channels).unwrap(), &host(&masked), tolerance);
            }
        }
    }
}
