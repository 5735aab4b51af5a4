use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily =
    KernelFamily { name: "conv", source: concat!(include_str!("conv_params.wgsl"), include_str!("conv.wgsl")) };

/// The software adapters' implicit-GEMM kernel (`KernelClass::Software`): a module of its
/// own, since its subgroup operations compile only on devices opened with subgroups.
pub(crate) static SOFTWARE_FAMILY: KernelFamily = KernelFamily {
    name: "conv_software",
    source: concat!(
        include_str!("conv_params.wgsl"),
        include_str!("software_tiles.wgsl"),
        include_str!("conv_software.wgsl")
    ),
};

/// Output channels per invocation of the implicit kernel (`BLOCK` in conv_software.wgsl).
const IMPLICIT_CHANNEL_BLOCK: usize = 32;
/// Consecutive output pixels of one row per invocation of the implicit kernel.
const IMPLICIT_PIXELS: usize = 4;
/// Consecutive weight rows (C·KH·KW) per invocation of the implicit weight gradient.
const IMPLICIT_ROWS: usize = 4;

/// Invocations per workgroup of the implicit weight gradient (`@workgroup_size` of
/// `conv2d_weight_grad_implicit`): one llvmpipe subgroup.
const WEIGHT_GRAD_WORKGROUP: usize = 8;

/// Workgroups the implicit weight gradient spreads over at least, splitting its sum into
/// more chunks where its rows and channels give fewer (a software adapter runs one
/// workgroup per CPU thread at a time).
const WEIGHT_GRAD_WORKGROUPS: usize = 32;

/// Loop iterations one invocation of a software kernel may run. llvmpipe stops every loop
/// after 65,535 iterations in all (its guard against endless loops; Mesa 22.3), silently:
/// a weight gradient walking 128 images of 24×24 pixels in one loop came back wrong, 64
/// right. The software kernels stay under half of that.
pub const SOFTWARE_LOOP_BUDGET: usize = 32_768;

/// Whether the implicit forward and input-gradient kernels can run `shape` within
/// [`SOFTWARE_LOOP_BUDGET`]: their loops walk input channels × kernel rows × (kernel
/// columns + 1), for the input gradient with the output channels as its input channels.
pub fn implicit_fits(shape: &ConvShape, out_channels: usize) -> bool {
    let per_channel = shape.kernel[0] * (shape.kernel[1] + 1) + 1;
    shape.channels.max(out_channels) * per_channel <= SOFTWARE_LOOP_BUDGET
}

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
            spread_h: 1,
            spread_w: 1,
            chunk: 0,
            _pad: [0; 2],
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
    spread_h: u32,
    spread_w: u32,
    chunk: u32,
    _pad: [u32; 2],
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: batch, channels, height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_channels, spread_h, spread_w, chunk);

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

/// The convolution output `[batch, O, OH, OW]` as an implicit matrix product: the column
/// matrix is read from `x` as it is needed, never stored. For contexts of
/// [`KernelClass::Software`](crate::KernelClass) only (it uses subgroup broadcasts); the
/// bias and, with `relu`, a ReLU are applied as each result is stored.
pub fn conv2d_implicit(
    ctx: &GpuContext,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    shape: &ConvShape,
    out_channels: usize,
    relu: bool,
) -> Result<GpuBuffer> {
    let params = Params { out_channels: out_channels as u32, ..shape.params() };
    launch_implicit(ctx, "conv2d_implicit", x, weight, bias, params, relu)
}

/// The input gradient `[batch, C, H, W]` of a convolution of `shape` from its output
/// gradient `grad` `[batch, O, OH, OW]`, by the implicit kernel: it is the convolution of
/// the gradient, spread out by the stride, with the weight turned by 180° and its two
/// channel axes swapped, padded by dilation · (kernel − 1) − padding. For contexts of
/// [`KernelClass::Software`](crate::KernelClass) only.
pub fn conv2d_input_grad_implicit(
    ctx: &GpuContext,
    grad: &GpuBuffer,
    weight: &GpuBuffer,
    shape: &ConvShape,
    out_channels: usize,
) -> Result<GpuBuffer> {
    require_software(ctx, "conv2d_input_grad_implicit")?;
    let forward = Params { out_channels: out_channels as u32, ..shape.params() };
    let weight_len = out_channels * shape.patch_len();
    super::check_indexable("flip_weight", weight_len, 1)?;
    let flipped = ctx.alloc(weight_len as u64 * 4)?;
    ctx.launch(
        &spec("flip_weight"),
        bytemuck::bytes_of(&forward),
        &[weight, &flipped],
        ctx.linear_grid(weight_len, 256)?,
    )?;
    let params = input_grad_parameters(shape, out_channels);
    launch_implicit(ctx, "conv2d_input_grad_implicit", grad, &flipped, None, params, false)
}

/// The input gradient of a convolution of `shape` as a convolution of its output gradient,
/// spread out by the stride and padded by dilation · (kernel − 1) − padding, with the
/// weight turned by 180° and its two channel axes swapped: that convolution's parameters.
fn input_grad_parameters(shape: &ConvShape, out_channels: usize) -> Params {
    let [oh, ow] = shape.output().expect("checked by the caller");
    let forward = Params { out_channels: out_channels as u32, ..shape.params() };
    // A negative padding travels as its two's complement; the kernels read it back signed.
    let pad = |d: usize| (shape.dilation[d] * (shape.kernel[d] - 1)) as i64 - shape.padding[d] as i64;
    Params {
        batch: forward.batch,
        channels: out_channels as u32,
        height: oh as u32,
        width: ow as u32,
        out_height: forward.height,
        out_width: forward.width,
        stride_h: 1,
        stride_w: 1,
        pad_h: pad(0) as i32 as u32,
        pad_w: pad(1) as i32 as u32,
        out_channels: forward.channels,
        spread_h: forward.stride_h,
        spread_w: forward.stride_w,
        ..forward
    }
}

/// The weight gradient `[O, C, KH, KW]` of a convolution of `shape` from the input `x` and
/// the output gradient `grad` `[batch, O, OH, OW]`, by the implicit kernel: summed image by
/// image in order, in chunks of images and pixels whose sums are then added in order, so
/// deterministic. For contexts of
/// [`KernelClass::Software`](crate::KernelClass) only.
pub fn conv2d_weight_grad_implicit(
    ctx: &GpuContext,
    x: &GpuBuffer,
    grad: &GpuBuffer,
    shape: &ConvShape,
    out_channels: usize,
) -> Result<GpuBuffer> {
    const OP: &str = "conv2d_weight_grad_implicit";
    require_software(ctx, OP)?;
    let [oh, ow] = shape.output().expect("checked by the caller");
    let rows = shape.patch_len();
    let len = out_channels * rows;
    let input_len = shape.batch * shape.channels * shape.height * shape.width;
    super::check_indexable(OP, len.max(input_len).max(shape.batch * out_channels * oh * ow), 1)?;
    let spec = KernelSpec::new(
        &SOFTWARE_FAMILY,
        OP,
        &[Slot(1, Access::Read), Slot(2, Access::ReadWrite), Slot(5, Access::Read)],
    )
    .constant("HAS_BIAS", false)
    .constant("RELU", false)
    .constant("SPREAD", false);
    // (image, pixel) steps in chunks of at most the loop budget, one z-slice each, and
    // enough of them for WEIGHT_GRAD_WORKGROUPS workgroups: the ASL CNN's first layer has
    // 3 quads of rows, one workgroup, which ran on one of the CPU's cores.
    let steps = shape.batch * oh * ow;
    let (row_groups, channel_blocks) =
        (rows.div_ceil(IMPLICIT_ROWS * WEIGHT_GRAD_WORKGROUP), out_channels.div_ceil(IMPLICIT_CHANNEL_BLOCK));
    let for_cores = WEIGHT_GRAD_WORKGROUPS.div_ceil(row_groups * channel_blocks);
    let chunks = steps.div_ceil(SOFTWARE_LOOP_BUDGET).max(for_cores).min(steps).max(1);
    let chunk = steps.div_ceil(chunks);
    let chunks = steps.div_ceil(chunk.max(1)).max(1);
    let params = Params { out_channels: out_channels as u32, chunk: chunk as u32, ..shape.params() };
    let workgroups = [
        u32::try_from(row_groups).unwrap_or(u32::MAX),
        u32::try_from(channel_blocks).unwrap_or(u32::MAX),
        u32::try_from(chunks).unwrap_or(u32::MAX),
    ];
    let partials = ctx.alloc((chunks * len) as u64 * 4)?;
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[x, &partials, grad], workgroups)?;
    if chunks == 1 {
        return Ok(partials);
    }
    super::reduce::reduce(ctx, super::reduce::ReduceOp::Sum, &partials, 1, chunks, len)
}

/// The software kernels compile only on a context opened for them (with subgroups).
fn require_software(ctx: &GpuContext, op: &'static str) -> Result<()> {
    if ctx.kernel_class() == crate::KernelClass::Software {
        return Ok(());
    }
    Err(crate::GpuError::InvalidLaunch {
        kernel: op,
        reason: "it needs a context with the software kernels (subgroups)".into(),
    })
}

/// One launch of conv_software.wgsl's kernel: the output `[batch, out_channels,
/// out_height, out_width]` of `params`.
fn launch_implicit(
    ctx: &GpuContext,
    op: &'static str,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    params: Params,
    relu: bool,
) -> Result<GpuBuffer> {
    require_software(ctx, op)?;
    let size = |v: u32| v as usize;
    let (batch, out_channels) = (size(params.batch), size(params.out_channels));
    let (oh, ow) = (size(params.out_height), size(params.out_width));
    let len = batch * out_channels * oh * ow;
    let input_len = batch * size(params.channels) * size(params.height) * size(params.width);
    super::check_indexable(op, len.max(input_len), 1)?;
    let out = ctx.alloc(len as u64 * 4)?;
    let spec = KernelSpec::new(
        &SOFTWARE_FAMILY,
        "conv2d_implicit",
        &[Slot(1, Access::Read), Slot(2, Access::ReadWrite), Slot(3, Access::Read), Slot(4, Access::Read)],
    )
    .constant("HAS_BIAS", bias.is_some())
    .constant("RELU", relu)
    .constant("SPREAD", params.spread_h > 1 || params.spread_w > 1)
    .constant("SLIDE", params.stride_w == params.dilation_w);
    let pixel_groups = (batch * oh * ow.div_ceil(IMPLICIT_PIXELS)).div_ceil(64);
    let across = pixel_groups.min(ctx.limits().max_compute_workgroups_per_dimension as usize);
    let workgroups = [
        across as u32,
        u32::try_from(out_channels.div_ceil(IMPLICIT_CHANNEL_BLOCK)).unwrap_or(u32::MAX),
        u32::try_from(pixel_groups.div_ceil(across.max(1))).unwrap_or(u32::MAX),
    ];
    let buffers = [x, &out, weight, bias.unwrap_or(weight)];
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, workgroups)?;
    Ok(out)
}

/// The portable class's implicit kernels in workgroup tiles (conv_tiled.wgsl): the forward
/// pass, the input gradient and the weight gradient as matrix products whose column matrix
/// is read from its source as it is staged, never stored.
pub(crate) static TILED_FAMILY: KernelFamily = KernelFamily {
    name: "conv_tiled",
    source: concat!(include_str!("conv_params.wgsl"), include_str!("conv_tiled.wgsl")),
};

/// The slice of K a tiled workgroup stages at a time (`SLICE` in conv_tiled.wgsl).
const TILE_SLICE: usize = 16;

/// Outputs of one tiled workgroup (`TILE_M` × 4096 / `TILE_M` in conv_tiled.wgsl).
const TILE_AREA: usize = 4096;

/// Loop iterations a tiled invocation runs per slice of K at most (staging three quads of
/// 4 values, stepping their positions on by 16 (up to 17 iterations each for a 1-wide
/// kernel or image), 16 steps of the product, the loops themselves): for
/// [`SOFTWARE_LOOP_BUDGET`] on software adapters, where the portable class runs in tests.
const TILED_ITERATIONS_PER_SLICE: usize = 96;

/// Workgroups the tiled weight gradient spreads over at least, splitting its sum into
/// more slices where its tiles give fewer (a weight is a few tiles). Not measured on a
/// hardware GPU: a few workgroups per compute unit of a large one.
const TILED_WEIGHT_GRAD_WORKGROUPS: usize = 512;

/// The three products of conv_tiled.wgsl (its `PRODUCT`): the input gradient as a
/// convolution of the output gradient ([`input_grad_parameters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TiledProduct {
    Forward = 0,
    InputGrad = 1,
    WeightGrad = 2,
}

impl TiledProduct {
    /// The kernel's parameters for this product of a convolution of `shape`.
    fn params(self, shape: &ConvShape, out_channels: usize) -> Params {
        match self {
            TiledProduct::InputGrad => input_grad_parameters(shape, out_channels),
            _ => Params { out_channels: out_channels as u32, ..shape.params() },
        }
    }

    /// (M, N, K) of the product, read from its parameters as conv_tiled.wgsl's `dims` reads
    /// them: the columns of a convolution, and the K of the weight gradient, run over every
    /// image's pixels.
    fn dims(self, p: &Params) -> [usize; 3] {
        let u = |v: u32| v as usize;
        let window = u(p.channels) * u(p.kernel_h) * u(p.kernel_w);
        let pixels = u(p.batch) * u(p.out_height) * u(p.out_width);
        match self {
            TiledProduct::WeightGrad => [u(p.out_channels), window, pixels],
            _ => [u(p.out_channels), pixels, window],
        }
    }

    /// The tile's rows and columns for a product of `m` rows: 32 × 128 where 32 rows hold
    /// them all, else 64 × 64.
    fn tile(m: usize) -> [usize; 2] {
        let rows = if m <= 32 { 32 } else { 64 };
        [rows, TILE_AREA / rows]
    }
}

/// Whether the tiled kernels can run `shape` on `ctx`: every grid within the adapter's
/// limits, every buffer indexable, and on a software adapter each invocation's loops
/// within [`SOFTWARE_LOOP_BUDGET`] (the weight gradient splits its K to fit).
pub fn tiled_fits(ctx: &GpuContext, shape: &ConvShape, out_channels: usize) -> bool {
    let Some([oh, ow]) = shape.output() else { return false };
    let most = ctx.limits().max_compute_workgroups_per_dimension as usize;
    let lens = [
        shape.batch * shape.channels * shape.height * shape.width,
        shape.batch * out_channels * oh * ow,
        out_channels * shape.patch_len() * TILED_WEIGHT_GRAD_WORKGROUPS,
    ];
    let products = [TiledProduct::Forward, TiledProduct::InputGrad, TiledProduct::WeightGrad];
    products.iter().all(|&product| {
        let [m, n, k] = product.dims(&product.params(shape, out_channels));
        let [tile_m, tile_n] = TiledProduct::tile(m);
        let loops = k.div_ceil(TILE_SLICE) * TILED_ITERATIONS_PER_SLICE;
        m.div_ceil(tile_m) <= most
            && n.div_ceil(tile_n) <= most
            && (product == TiledProduct::WeightGrad || !ctx.adapter().is_software() || loops <= SOFTWARE_LOOP_BUDGET)
    }) && lens.iter().all(|&len| super::check_indexable("conv2d_tiled", len, 1).is_ok())
}

/// The convolution output `[batch, O, OH, OW]` by the tiled implicit kernel, the bias and,
/// with `relu`, a ReLU applied as each result is stored. Any kernel class.
pub fn conv2d_tiled(
    ctx: &GpuContext,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    shape: &ConvShape,
    out_channels: usize,
    relu: bool,
) -> Result<GpuBuffer> {
    require_tiled_fit(ctx, shape, out_channels)?;
    let product = TiledProduct::Forward;
    let params = product.params(shape, out_channels);
    TiledLaunch { product, a: weight, b: x, bias, relu, params }.run(ctx, 1)
}

/// The input gradient `[batch, C, H, W]` of a convolution of `shape` from its output
/// gradient `grad` `[batch, O, OH, OW]`, by the tiled implicit kernel.
pub fn conv2d_input_grad_tiled(
    ctx: &GpuContext,
    grad: &GpuBuffer,
    weight: &GpuBuffer,
    shape: &ConvShape,
    out_channels: usize,
) -> Result<GpuBuffer> {
    require_tiled_fit(ctx, shape, out_channels)?;
    let product = TiledProduct::InputGrad;
    let params = product.params(shape, out_channels);
    TiledLaunch { product, a: weight, b: grad, bias: None, relu: false, params }.run(ctx, 1)
}

/// The weight gradient `[O, C, KH, KW]` of a convolution of `shape` from the input `x` and
/// the output gradient `grad`, by the tiled implicit kernel: its sum over every image's
/// pixels cut into slices summed in order, the slices' partial sums then added in order,
/// so deterministic.
pub fn conv2d_weight_grad_tiled(
    ctx: &GpuContext,
    x: &GpuBuffer,
    grad: &GpuBuffer,
    shape: &ConvShape,
    out_channels: usize,
) -> Result<GpuBuffer> {
    require_tiled_fit(ctx, shape, out_channels)?;
    let product = TiledProduct::WeightGrad;
    let params = product.params(shape, out_channels);
    let [m, n, k] = product.dims(&params);
    let [tile_m, tile_n] = TiledProduct::tile(m);
    let steps = k.div_ceil(TILE_SLICE).max(1);
    let mut slices = TILED_WEIGHT_GRAD_WORKGROUPS.div_ceil(m.div_ceil(tile_m) * n.div_ceil(tile_n));
    if ctx.adapter().is_software() {
        slices = slices.max((steps * TILED_ITERATIONS_PER_SLICE).div_ceil(SOFTWARE_LOOP_BUDGET));
    }
    let chunk = steps.div_ceil(slices.clamp(1, steps)) * TILE_SLICE;
    let slices = k.div_ceil(chunk).max(1);
    let params = Params { chunk: chunk as u32, ..params };
    let partials = TiledLaunch { product, a: grad, b: x, bias: None, relu: false, params }.run(ctx, slices)?;
    if slices == 1 {
        return Ok(partials);
    }
    super::reduce::reduce(ctx, super::reduce::ReduceOp::Sum, &partials, 1, slices, m * n)
}

fn require_tiled_fit(ctx: &GpuContext, shape: &ConvShape, out_channels: usize) -> Result<()> {
    if tiled_fits(ctx, shape, out_channels) {
        return Ok(());
    }
    Err(crate::GpuError::InvalidLaunch {
        kernel: "conv2d_tiled",
        reason: format!("{shape:?} is past the tiled kernels' limits on this adapter (see tiled_fits)"),
    })
}

/// One launch of conv_tiled.wgsl: its operands A and B (binding 1 and 3), its epilogue and
/// its parameters (for the weight gradient, the k each z-slice of the grid sums).
struct TiledLaunch<'a> {
    product: TiledProduct,
    a: &'a GpuBuffer,
    b: &'a GpuBuffer,
    bias: Option<&'a GpuBuffer>,
    relu: bool,
    params: Params,
}

impl TiledLaunch<'_> {
    /// The `[M, N]` product: the convolution's stored as `[batch, M, pixels]`, the weight
    /// gradient's as one partial per slice.
    fn run(&self, ctx: &GpuContext, slices: usize) -> Result<GpuBuffer> {
        let [m, n, _] = self.product.dims(&self.params);
        let [tile_m, tile_n] = TiledProduct::tile(m);
        let out = ctx.alloc((slices * m * n).max(1) as u64 * 4)?;
        let spec = KernelSpec::new(
            &TILED_FAMILY,
            "conv2d_tiled",
            &[Slot(1, Access::Read), Slot(2, Access::ReadWrite), Slot(3, Access::Read), Slot(4, Access::Read)],
        )
        .constant("PRODUCT", self.product as u32)
        .constant("HAS_BIAS", self.bias.is_some())
        .constant("RELU", self.relu)
        .constant("SPREAD", self.params.spread_h > 1 || self.params.spread_w > 1)
        .constant("TILE_M", tile_m as u32);
        let workgroups = [n.div_ceil(tile_n) as u32, m.div_ceil(tile_m) as u32, slices as u32];
        // Without a bias, A stands in for the unused binding.
        let buffers = [self.a, &out, self.b, self.bias.unwrap_or(self.a)];
        ctx.launch(&spec, bytemuck::bytes_of(&self.params), &buffers, workgroups)?;
        Ok(out)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelClass;
    use crate::kernels::test_support::{Sums, values};
    use crate::testing::contexts_of_each_class;
    use proptest::prelude::*;

    /// Every product a convolution of `shape` sums, as (input, weight, output) indices:
    /// the definition the three references below share.
    fn products(s: &ConvShape, out_channels: usize, mut visit: impl FnMut(usize, usize, usize)) {
        let [oh, ow] = s.output().unwrap();
        let [kh, kw] = s.kernel;
        for n in 0..s.batch {
            for o in 0..out_channels {
                for i in 0..oh {
                    for j in 0..ow {
                        for c in 0..s.channels {
                            for a in 0..kh {
                                for e in 0..kw {
                                    let h = (i * s.stride[0] + a * s.dilation[0]) as isize - s.padding[0] as isize;
                                    let v = (j * s.stride[1] + e * s.dilation[1]) as isize - s.padding[1] as isize;
                                    if h >= 0 && v >= 0 && (h as usize) < s.height && (v as usize) < s.width {
                                        let xi = ((n * s.channels + c) * s.height + h as usize) * s.width + v as usize;
                                        let wi = ((o * s.channels + c) * kh + a) * kw + e;
                                        visit(xi, wi, ((n * out_channels + o) * oh + i) * ow + j);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The convolution: [batch, O, OH, OW].
    fn host(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &ConvShape, out_channels: usize, relu: bool) -> Sums {
        let [oh, ow] = s.output().unwrap();
        let len = s.batch * out_channels * oh * ow;
        let mut y = Sums::zeros(len);
        products(s, out_channels, |xi, wi, yi| y.add(yi, f64::from(x[xi]) * f64::from(w[wi])));
        if let Some(b) = bias {
            (0..len).for_each(|yi| y.add(yi, f64::from(b[yi / (oh * ow) % out_channels])));
        }
        if relu {
            y.map_contracting(|v| v.max(0.0));
        }
        y
    }

    /// The input gradient: each output gradient times the weight that met each input element.
    fn host_input_grad(grad: &[f32], w: &[f32], s: &ConvShape, out_channels: usize) -> Sums {
        let mut dx = Sums::zeros(s.batch * s.channels * s.height * s.width);
        products(s, out_channels, |xi, wi, yi| dx.add(xi, f64::from(grad[yi]) * f64::from(w[wi])));
        dx
    }

    /// The weight gradient: each output gradient times the input element the weight met.
    fn host_weight_grad(grad: &[f32], x: &[f32], s: &ConvShape, out_channels: usize) -> Sums {
        let mut dw = Sums::zeros(out_channels * s.patch_len());
        products(s, out_channels, |xi, wi, yi| dw.add(wi, f64::from(grad[yi]) * f64::from(x[xi])));
        dw
    }

    /// The test adapter's context of `class`, if there is one (the software class needs
    /// subgroups; `contexts_of_each_class` says so when they are missing).
    fn context_of(test: &str, class: KernelClass) -> Option<GpuContext> {
        contexts_of_each_class(test).into_iter().find(|ctx| ctx.kernel_class() == class)
    }

    /// A stride-1, unpadded convolution of square images and kernels.
    fn square(batch: usize, size: usize, kernel: usize) -> ConvShape {
        ConvShape {
            batch,
            channels: 1,
            height: size,
            width: size,
            kernel: [kernel, kernel],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }

    fn shape_strategy() -> impl Strategy<Value = (ConvShape, usize, bool, bool)> {
        // Output channels on both sides of the 32-channel blocks; widths on both sides of
        // the 4-pixel segments.
        // Input channels on both sides of the tiled kernels' 32-row tiles (their input
        // gradient's rows).
        let out_channels = prop_oneof![1..4usize, Just(8usize), Just(31), Just(32), Just(33), Just(70)];
        let channels = prop_oneof![4 => 1..5usize, 1 => Just(33usize)];
        (1..4usize, channels, 1..12usize, 1..12usize, out_channels, 1..4usize, 1..4usize, 1..3usize, 0..3usize)
            .prop_flat_map(|(batch, channels, height, width, out, kh, kw, stride, pad)| {
                (Just((batch, channels, height, width, out, kh, kw, stride, pad)), 1..3usize, any::<(bool, bool)>())
            })
            .prop_filter_map(
                "the window must fit",
                |((batch, channels, height, width, out, kh, kw, stride, pad), dilation, (bias, relu))| {
                    let shape = ConvShape {
                        batch,
                        channels,
                        height,
                        width,
                        kernel: [kh, kw],
                        stride: [stride, 3 - stride],
                        padding: [pad, pad.min(1)],
                        dilation: [dilation, 1],
                    };
                    shape.output().map(|_| (shape, out, bias, relu))
                },
            )
    }

    /// The implicit kernels (software class), the direct one (portable class) and the tiled
    /// ones (both classes) against the definition, for one shape and seed.
    fn check_against_definition(s: &ConvShape, out_channels: usize, with_bias: bool, relu: bool, seed: u64) {
        const TEST: &str = "implicit_tiled_and_direct_kernels_match_the_definition";
        let Some(software) = context_of(TEST, KernelClass::Software) else { return };
        let Some(portable) = context_of(TEST, KernelClass::Hardware) else { return };
        let x = values(s.batch * s.channels * s.height * s.width, seed);
        let w = values(out_channels * s.patch_len(), seed ^ 1);
        let b = values(out_channels, seed ^ 2);
        let want = host(&x, &w, with_bias.then_some(&b[..]), s, out_channels, relu);
        let [oh, ow] = s.output().unwrap();
        let out_len = s.batch * out_channels * oh * ow;
        for (ctx, kernel) in [(&software, conv2d_implicit as ConvKernel), (&portable, conv2d_direct)] {
            let (xg, wg, bg) = (ctx.upload(&x).unwrap(), ctx.upload(&w).unwrap(), ctx.upload(&b).unwrap());
            let out = kernel(ctx, &xg, &wg, with_bias.then_some(&bg), s, out_channels, relu).unwrap();
            want.assert_matches(&ctx.read::<f32>(&out, out_len).unwrap());
        }
        let grad = values(out_len, seed ^ 3);
        let (gg, wg) = (software.upload(&grad).unwrap(), software.upload(&w).unwrap());
        let dx = conv2d_input_grad_implicit(&software, &gg, &wg, s, out_channels).unwrap();
        host_input_grad(&grad, &w, s, out_channels).assert_matches(&software.read::<f32>(&dx, x.len()).unwrap());
        let xg = software.upload(&x).unwrap();
        let dw = conv2d_weight_grad_implicit(&software, &xg, &gg, s, out_channels).unwrap();
        let want_dw = host_weight_grad(&grad, &x, s, out_channels);
        want_dw.assert_matches(&software.read::<f32>(&dw, w.len()).unwrap());

        // The tiled kernels, which hardware GPUs run, on contexts of both classes.
        let want_dx = host_input_grad(&grad, &w, s, out_channels);
        for ctx in [&software, &portable] {
            let (xg, wg, bg, gg) =
                (ctx.upload(&x).unwrap(), ctx.upload(&w).unwrap(), ctx.upload(&b).unwrap(), ctx.upload(&grad).unwrap());
            let out = conv2d_tiled(ctx, &xg, &wg, with_bias.then_some(&bg), s, out_channels, relu).unwrap();
            want.assert_matches(&ctx.read::<f32>(&out, out_len).unwrap());
            let dx = conv2d_input_grad_tiled(ctx, &gg, &wg, s, out_channels).unwrap();
            want_dx.assert_matches(&ctx.read::<f32>(&dx, x.len()).unwrap());
            let dw = conv2d_weight_grad_tiled(ctx, &xg, &gg, s, out_channels).unwrap();
            want_dw.assert_matches(&ctx.read::<f32>(&dw, w.len()).unwrap());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn implicit_tiled_and_direct_kernels_match_the_definition((s, out_channels, with_bias, relu) in shape_strategy(), seed in any::<u64>()) {
            check_against_definition(&s, out_channels, with_bias, relu, seed);
        }
    }

    /// The case CI drew once: the weight gradient's element 63 sums 165 terms to 0.0736 with
    /// much cancellation, and the kernel came out nearer the exact sum than an f32 reference.
    #[test]
    fn a_cancelling_weight_gradient_is_judged_by_its_exact_sum() {
        let s = ConvShape {
            batch: 3,
            channels: 4,
            height: 9,
            width: 11,
            kernel: [3, 2],
            stride: [2, 1],
            padding: [2, 1],
            dilation: [2, 1],
        };
        check_against_definition(&s, 32, false, false, 17_554_457_848_241_474_963);
    }

    /// 128 images of 24×24 output pixels: 73,728 steps, past llvmpipe's loop cap, so the
    /// sum runs in chunks (one loop over them all came back wrong on lavapipe).
    #[test]
    fn long_weight_gradient_sums_run_in_chunks() {
        let Some(ctx) = context_of("long_weight_gradient_sums_run_in_chunks", KernelClass::Software) else { return };
        let s = square(128, 28, 5);
        let (x, grad) = (values(128 * 28 * 28, 41), values(128 * 8 * 24 * 24, 42));
        let dw =
            conv2d_weight_grad_implicit(&ctx, &ctx.upload(&x).unwrap(), &ctx.upload(&grad).unwrap(), &s, 8).unwrap();
        host_weight_grad(&grad, &x, &s, 8).assert_matches(&ctx.read::<f32>(&dw, 8 * 25).unwrap());
    }

    /// The tiled weight gradient of 128 images of 24×24 output pixels on the portable
    /// class: its sum over them goes in slices (on lavapipe within llvmpipe's loop cap),
    /// whose partial sums are added; one image of 2×2 pixels takes no partials.
    #[test]
    fn tiled_weight_gradients_sum_their_images_in_slices() {
        let Some(ctx) = context_of("tiled_weight_gradients_sum_their_images_in_slices", KernelClass::Hardware) else {
            return;
        };
        for (batch, size) in [(128, 28), (1, 6)] {
            let s = square(batch, size, 5);
            let out = size - 4;
            let (x, grad) = (values(batch * size * size, 41), values(batch * 8 * out * out, 42));
            let (xg, gg) = (ctx.upload(&x).unwrap(), ctx.upload(&grad).unwrap());
            let dw = conv2d_weight_grad_tiled(&ctx, &xg, &gg, &s, 8).unwrap();
            host_weight_grad(&grad, &x, &s, 8).assert_matches(&ctx.read::<f32>(&dw, 8 * 25).unwrap());
        }
    }

    /// Past what the tiled kernels can address, a clear error rather than a wrong result.
    #[test]
    fn a_convolution_past_the_tiled_limits_is_refused() {
        let Some(ctx) = context_of("a_convolution_past_the_tiled_limits_is_refused", KernelClass::Hardware) else {
            return;
        };
        // Columns of one pixel per image: one more than a grid dimension's tiles hold.
        let s = square(ctx.limits().max_compute_workgroups_per_dimension as usize * 128 + 1, 1, 1);
        assert!(!tiled_fits(&ctx, &s, 1), "more columns than a grid dimension's tiles hold");
        let x = ctx.upload(&[0.0f32; 9]).unwrap();
        let err = conv2d_tiled(&ctx, &x, &x, None, &s, 1, false).unwrap_err();
        assert!(err.to_string().contains("tiled_fits"), "{err}");
        assert!(tiled_fits(&ctx, &square(2, 28, 5), 8));
    }

    type ConvKernel =
        fn(&GpuContext, &GpuBuffer, &GpuBuffer, Option<&GpuBuffer>, &ConvShape, usize, bool) -> Result<GpuBuffer>;

    #[test]
    fn the_implicit_kernel_needs_a_software_context() {
        let Some(portable) = context_of("the_implicit_kernel_needs_a_software_context", KernelClass::Hardware) else {
            return;
        };
        let s = square(1, 3, 3);
        let x = portable.upload(&[0.0f32; 9]).unwrap();
        let err = conv2d_implicit(&portable, &x, &x, None, &s, 1, false).unwrap_err();
        assert!(err.to_string().contains("software kernels"), "{err}");
        let err = conv2d_weight_grad_implicit(&portable, &x, &x, &s, 1).unwrap_err();
        assert!(err.to_string().contains("software kernels"), "{err}");
    }
}
