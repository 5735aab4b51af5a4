//! 2-D average pooling, strided or adaptive, and its backward pass.

use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "avg_pool", source: include_str!("avg_pool.wgsl") };

/// How an average pooling's windows are laid: strided (kernel, stride, zero-padding, each
/// [height, width]; padding counted in the divisor) or adaptive (the input cut into the
/// output's number of nearly equal windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvgWindows {
    Strided { kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2] },
    Adaptive,
}

/// An average pooling of `planes` planes of `height`×`width` into `out` ([height, width]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPoolShape {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub out: [usize; 2],
    pub windows: AvgWindows,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    planes: u32,
    height: u32,
    width: u32,
    out_height: u32,
    out_width: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    _pad: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(
    Params: planes, height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w
);

impl AvgPoolShape {
    fn params(&self) -> Params {
        let (kernel, stride, padding) = match self.windows {
            AvgWindows::Strided { kernel, stride, padding } => (kernel, stride, padding),
            AvgWindows::Adaptive => ([0; 2], [0; 2], [0; 2]),
        };
        let u = |v: usize| v as u32;
        Params {
            planes: u(self.planes),
            height: u(self.height),
            width: u(self.width),
            out_height: u(self.out[0]),
            out_width: u(self.out[1]),
            kernel_h: u(kernel[0]),
            kernel_w: u(kernel[1]),
            stride_h: u(stride[0]),
            stride_w: u(stride[1]),
            pad_h: u(padding[0]),
            pad_w: u(padding[1]),
            _pad: 0,
        }
    }

    fn launch(&self, ctx: &GpuContext, entry: &'static str, src: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
        let inputs = self.planes * self.height * self.width;
        // The adaptive bounds multiply a position by a count: keep those products in u32.
        let products = self.height.max(self.width) * (self.out[0].max(self.out[1]) + 1);
        super::check_indexable(entry, inputs.max(self.planes * self.out[0] * self.out[1]).max(products), 1)?;
        let out = ctx.alloc(len as u64 * 4)?;
        let spec = KernelSpec::new(&FAMILY, entry, &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)])
            .constant("ADAPTIVE", self.windows == AvgWindows::Adaptive);
        ctx.launch(&spec, bytemuck::bytes_of(&self.params()), &[src, &out], ctx.linear_grid(len, 256)?)?;
        Ok(out)
    }
}

/// The averages: `[planes, out height, out width]`.
pub fn avg_pool2d(ctx: &GpuContext, x: &GpuBuffer, shape: &AvgPoolShape) -> Result<GpuBuffer> {
    shape.launch(ctx, "avg_pool2d", x, shape.planes * shape.out[0] * shape.out[1])
}

/// The input's gradient from the output's: `[planes, height, width]`.
pub fn avg_pool2d_backward(ctx: &GpuContext, grad: &GpuBuffer, shape: &AvgPoolShape) -> Result<GpuBuffer> {
    shape.launch(ctx, "avg_pool2d_backward", grad, shape.planes * shape.height * shape.width)
}
