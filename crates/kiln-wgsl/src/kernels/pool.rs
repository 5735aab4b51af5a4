use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "pool", source: include_str!("pool.wgsl") };

/// A pooling problem over `planes` (= N·C) planes of `height × width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl PoolShape {
    /// Output height and width (floor mode, as PyTorch's default).
    pub fn output(&self) -> [usize; 2] {
        let out = |size: usize, k: usize, s: usize, p: usize| (size + 2 * p).saturating_sub(k) / s + 1;
        [
            out(self.height, self.kernel[0], self.stride[0], self.padding[0]),
            out(self.width, self.kernel[1], self.stride[1], self.padding[1]),
        ]
    }

    fn params(&self) -> Params {
        let [out_height, out_width] = self.output();
        Params {
            planes: self.planes as u32,
            height: self.height as u32,
            width: self.width as u32,
            out_height: out_height as u32,
            out_width: out_width as u32,
            kernel_h: self.kernel[0] as u32,
            kernel_w: self.kernel[1] as u32,
            stride_h: self.stride[0] as u32,
            stride_w: self.stride[1] as u32,
            pad_h: self.padding[0] as u32,
            pad_w: self.padding[1] as u32,
            _pad: 0,
        }
    }
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
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: planes, height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w);

/// Max pooling: the output and, per output, the i32 position `h·W + w` of its maximum in
/// the input plane. The shape must already be valid (kiln-tensor checks it).
pub fn max_pool2d(ctx: &GpuContext, x: &GpuBuffer, shape: &PoolShape) -> Result<(GpuBuffer, GpuBuffer)> {
    let [oh, ow] = shape.output();
    let outputs = shape.planes * oh * ow;
    super::check_indexable("max_pool2d", outputs.max(shape.planes * shape.height * shape.width), 1)?;
    let (y, indices) = (ctx.alloc(outputs as u64 * 4)?, ctx.alloc(outputs as u64 * 4)?);
    let spec = KernelSpec::new(
        &FAMILY,
        "max_pool2d",
        &[Slot(1, Access::Read), Slot(2, Access::ReadWrite), Slot(3, Access::ReadWrite)],
    )
    .constant("UNPADDED", shape.padding == [0, 0]);
    ctx.launch(&spec, bytemuck::bytes_of(&shape.params()), &[x, &y, &indices], ctx.linear_grid(outputs, 256)?)?;
    Ok((y, indices))
}

/// The input gradient of max pooling from the output gradient and the saved positions.
pub fn max_pool2d_backward(
    ctx: &GpuContext,
    grad_out: &GpuBuffer,
    indices: &GpuBuffer,
    shape: &PoolShape,
) -> Result<GpuBuffer> {
    let inputs = shape.planes * shape.height * shape.width;
    let [oh, ow] = shape.output();
    let outputs = shape.planes * oh * ow;
    super::check_indexable("max_pool2d_backward", inputs, 1)?;
    let grad_in = ctx.alloc(inputs as u64 * 4)?;
    // Disjoint windows: a cell per output (see pool.wgsl), when every input has one.
    let disjoint = shape.stride[0] >= shape.kernel[0] && shape.stride[1] >= shape.kernel[1] && outputs > 0;
    let (entry, threads) =
        if disjoint { ("max_pool2d_backward_disjoint", outputs) } else { ("max_pool2d_backward", inputs) };
    let spec =
        KernelSpec::new(&FAMILY, entry, &[Slot(4, Access::Read), Slot(5, Access::Read), Slot(6, Access::ReadWrite)]);
    ctx.launch(
        &spec,
        bytemuck::bytes_of(&shape.params()),
        &[grad_out, indices, &grad_in],
        ctx.linear_grid(threads, 256)?,
    )?;
    Ok(grad_in)
}

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

    /// Runs `entry` from its input slot to its output slot (`slots`) over `src`.
    fn launch(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        slots: &'static [Slot],
        src: &GpuBuffer,
        len: usize,
    ) -> Result<GpuBuffer> {
        let inputs = self.planes * self.height * self.width;
        // The adaptive bounds multiply a position by a count: keep those products in u32.
        let products = self.height.max(self.width) * (self.out[0].max(self.out[1]) + 1);
        super::check_indexable(entry, inputs.max(self.planes * self.out[0] * self.out[1]).max(products), 1)?;
        let out = ctx.alloc(len as u64 * 4)?;
        let spec = KernelSpec::new(&FAMILY, entry, slots).constant("ADAPTIVE", self.windows == AvgWindows::Adaptive);
        ctx.launch(&spec, bytemuck::bytes_of(&self.params()), &[src, &out], ctx.linear_grid(len, 256)?)?;
        Ok(out)
    }
}

/// The averages: `[planes, out height, out width]`.
pub fn avg_pool2d(ctx: &GpuContext, x: &GpuBuffer, shape: &AvgPoolShape) -> Result<GpuBuffer> {
    let slots = &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)];
    shape.launch(ctx, "avg_pool2d", slots, x, shape.planes * shape.out[0] * shape.out[1])
}

/// The input's gradient from the output's: `[planes, height, width]`.
pub fn avg_pool2d_backward(ctx: &GpuContext, grad: &GpuBuffer, shape: &AvgPoolShape) -> Result<GpuBuffer> {
    let slots = &[Slot(4, Access::Read), Slot(6, Access::ReadWrite)];
    shape.launch(ctx, "avg_pool2d_backward", slots, grad, shape.planes * shape.height * shape.width)
}
