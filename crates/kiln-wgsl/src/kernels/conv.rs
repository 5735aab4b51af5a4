use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "conv", source: include_str!("conv.wgsl") };

/// A convolution's geometry: input `[batch, channels, height, width]`, a `kernel`-sized
/// window with `stride`, zero `padding` and `dilation`, each as [height, width].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl ConvShape {
    /// Output height and width; `None` when the dilated window does not fit.
    pub fn output(&self) -> Option<[usize; 2]> {
        let out = |size: usize, d: usize| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            (size + 2 * self.padding[d]).checked_sub(span).map(|room| room / self.stride[d] + 1)
        };
        Some([out(self.height, 0)?, out(self.width, 1)?])
    }

    /// Rows of the column matrix: C·KH·KW.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    fn params(&self) -> Params {
        let [out_height, out_width] = self.output().expect("checked by the caller");
        let u = |v: usize| v as u32;
        Params {
            batch: u(self.batch),
            channels: u(self.channels),
            height: u(self.height),
            width: u(self.width),
            out_height: u(out_height),
            out_width: u(out_width),
            kernel_h: u(self.kernel[0]),
            kernel_w: u(self.kernel[1]),
            stride_h: u(self.stride[0]),
            stride_w: u(self.stride[1]),
            pad_h: u(self.padding[0]),
            pad_w: u(self.padding[1]),
            dilation_h: u(self.dilation[0]),
            dilation_w: u(self.dilation[1]),
            out_channels: 0,
            _pad: 0,
        }
    }

    fn columns_len(&self) -> usize {
        let [oh, ow] = self.output().expect("checked by the caller");
        self.batch * self.patch_len() * oh * ow
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    channels: u32,
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
    dilation_h: u32,
    dilation_w: u32,
    out_channels: u32,
    _pad: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: batch, channels, height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_channels);

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(&FAMILY, entry, &[Slot(1, Access::Read), Slot(2, Access::ReadWrite)])
        .constant("HAS_BIAS", false)
        .constant("RELU", false)
}

/// The convolution output `[batch, O, OH, OW]` computed directly, one invocation per output
/// element: for inputs with few channels, where [`im2col`] would mostly copy. With `relu`
/// the output goes through a ReLU in the same launch.
pub fn conv2d_direct(
    ctx: &GpuContext,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    shape: &ConvShape,
    out_channels: usize,
    relu: bool,
) -> Result<GpuBuffer> {
    let [oh, ow] = shape.output().expect("checked by the caller");
    let len = shape.batch * out_channels * oh * ow;
    super::check_indexable("conv2d_direct", len, 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(
        &FAMILY,
        "conv2d_direct",
        &[Slot(1, Access::Read), Slot(2, Access::ReadWrite), Slot(3, Access::Read), Slot(4, Access::Read)],
    )
    .constant("HAS_BIAS", bias.is_some())
    .constant("RELU", relu);
    let params = Params { out_channels: out_channels as u32, ..shape.params() };
    // Without a bias the weight stands in for the unused binding.
    let buffers = [x, &out, weight, bias.unwrap_or(weight)];
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, ctx.linear_grid(len, 256)?)?;
    Ok(out)
}

/// The column matrix `[batch, C·KH·KW, OH·OW]` of input `x`.
pub fn im2col(ctx: &GpuContext, x: &GpuBuffer, shape: &ConvShape) -> Result<GpuBuffer> {
    let len = shape.columns_len();
    super::check_indexable("im2col", len, 1)?;
    let cols = ctx.alloc(len as u64 * 4)?;
    ctx.launch(&spec("im2col"), bytemuck::bytes_of(&shape.params()), &[x, &cols], ctx.linear_grid(len, 256)?)?;
    Ok(cols)
}

/// The input-shaped sum of a column matrix: the adjoint of [`im2col`].
pub fn col2im(ctx: &GpuContext, cols: &GpuBuffer, shape: &ConvShape) -> Result<GpuBuffer> {
    let len = shape.batch * shape.channels * shape.height * shape.width;
    super::check_indexable("col2im", len.max(shape.columns_len()), 1)?;
    let x = ctx.alloc(len as u64 * 4)?;
    ctx.launch(&spec("col2im"), bytemuck::bytes_of(&shape.params()), &[cols, &x], ctx.linear_grid(len, 256)?)?;
    Ok(x)
}
