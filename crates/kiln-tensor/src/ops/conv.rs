//! 2-D convolution (NCHW, groups = 1) as column matrices and matrix products, forward and
//! backward. The GPU builds the whole batch's column matrix and runs one batched `matmul`
//! (or, for few output channels, a direct kernel). The CPU works image by image instead:
//! each worker builds one image's columns in a buffer it reuses and multiplies them at
//! once, while they are in cache — the batch's column matrix (52 MB for the Fashion-MNIST
//! CNN's second layer) is never stored.

use std::ops::Range;

use kiln_wgsl::kernels::conv::{
    ConvShape, col2im, conv2d_direct, conv2d_implicit, conv2d_input_grad_implicit, conv2d_input_grad_tiled,
    conv2d_tiled, conv2d_weight_grad_implicit, conv2d_weight_grad_tiled, im2col, implicit_fits, tiled_fits,
};
use kiln_wgsl::kernels::matmul::{BiasAxis, Epilogue, matmul_with};
use kiln_wgsl::{GpuContext, KernelClass};
use rayon::prelude::*;

use super::matmul::{gemm_accumulate, single_product, sum_over_batch};
use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

/// With the portable kernels ([`KernelClass::Hardware`]), convolutions with at most this
/// many output channels run the direct kernel: the matrix product's 64-row tiles would be
/// mostly idle. Measured on lavapipe (LeNet's 3→6 conv: direct 20 ms, im2col + matmul
/// 44 ms; 6→16 on 14×14: 19 vs 21 ms; the ASL CNN's 1→25: 32 vs 20 ms) — to be revisited
/// on hardware GPUs.
const GPU_DIRECT_MAX_OUT_CHANNELS: usize = 16;

/// With the portable kernels, input gradients of fewer channels than this go through the
/// matrix product and col2im rather than the tiled kernel, whose tiles have a row per
/// input channel and at least 32 rows: a first layer's one channel left 31 of 32 idle
/// (lavapipe, `cargo bench --bench layers -- "gpu portable"`, the Fashion-MNIST CNN's 1→32
/// backward: 3.5 s tiled, 0.36 s by the product). Training never asks a first layer for it.
const TILED_INPUT_GRAD_MIN_CHANNELS: usize = 8;

/// How the GPU computes a convolution's forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GpuForward {
    /// The software kernels' implicit matrix product, every shape within their loop budget
    /// (`implicit_fits`; beyond it, the column matrix): on lavapipe (2 AMD EPYC
    /// cores, Mesa 22.3, `cargo bench --bench layers`) the ASL CNN's convolutions at batch
    /// 32 took 7.5 / 41 / 29 ms against the portable 87 (direct) / 364 / 318 ms (im2col +
    /// matmul) for conv1 / conv2 / conv3, in one run.
    Implicit,
    /// The portable kernels' implicit matrix product in workgroup tiles (conv_tiled.wgsl)
    /// within its limits (`tiled_fits`), and their gradients likewise: chosen for hardware
    /// GPUs before any hardware measurement, because it never writes the column matrix
    /// and takes fewer launches. On lavapipe's portable path (`tests/gpu_steady_state.rs`,
    /// batch 32) that took the ASL CNN's step from 60 to 58 dispatches and its peak device
    /// memory from 48 to 38 MiB; the tutorials' convolutions took 0.9–1.2× the time of
    /// im2col + matmul forward and 1.1–2.2× backward (README, "Convolutions on the
    /// portable kernels": llvmpipe pays per lane for the scalar loads that stage the
    /// columns, which a GPU coalesces). `benches/gpu/run.sh` times both ways on a
    /// hardware GPU: route by its first run.
    Tiled,
    Direct,
    ColumnsAndMatmul,
}

fn gpu_forward(ctx: &GpuContext, s: &ConvShape, out_channels: usize) -> GpuForward {
    match ctx.kernel_class() {
        KernelClass::Software if implicit_fits(s, out_channels) => GpuForward::Implicit,
        KernelClass::Software => GpuForward::ColumnsAndMatmul,
        KernelClass::Hardware if out_channels <= GPU_DIRECT_MAX_OUT_CHANNELS => GpuForward::Direct,
        KernelClass::Hardware if tiled_fits(ctx, s, out_channels) => GpuForward::Tiled,
        KernelClass::Hardware => GpuForward::ColumnsAndMatmul,
    }
}

/// Stride, zero-padding and dilation of a convolution, each as [height, width].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for Conv2d {
    fn default() -> Self {
        Self { stride: [1; 2], padding: [0; 2], dilation: [1; 2] }
    }
}

impl Conv2d {
    pub fn stride(self, stride: usize) -> Self {
        Self { stride: [stride; 2], ..self }
    }

    pub fn padding(self, padding: usize) -> Self {
        Self { padding: [padding; 2], ..self }
    }

    pub fn dilation(self, dilation: usize) -> Self {
        Self { dilation: [dilation; 2], ..self }
    }
}

/// The gradients of a convolution with respect to its input, weight and (if any) bias.
#[derive(Clone, Debug)]
pub struct Conv2dGrads {
    pub input: Tensor,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// Checks input `[N, C, H, W]` against weight `[O, C, KH, KW]` and returns the geometry.
pub(super) fn geometry(op: &'static str, input: &Tensor, weight: &Tensor, conv: &Conv2d) -> Result<ConvShape> {
    input.expect_dtype(op, DType::F32)?;
    weight.expect_dtype(op, DType::F32)?;
    input.expect_same_device(op, weight)?;
    let mismatch = |why| TensorError::ShapeMismatch { op, lhs: input.shape.clone(), rhs: weight.shape.clone(), why };
    let (&[batch, channels, height, width], &[_, weight_channels, kh, kw]) = (&input.shape[..], &weight.shape[..])
    else {
        return Err(mismatch("input must be [N, C, H, W] and weight [O, C, KH, KW]"));
    };
    if weight_channels != channels {
        return Err(mismatch("the weight's input channels differ from the input's"));
    }
    if kh == 0 || kw == 0 || conv.stride.contains(&0) || conv.dilation.contains(&0) {
        return Err(TensorError::InvalidArgument {
            op,
            why: format!(
                "kernel {:?}, stride {:?} and dilation {:?} must be positive",
                [kh, kw],
                conv.stride,
                conv.dilation
            ),
        });
    }
    let shape = ConvShape {
        batch,
        channels,
        height,
        width,
        kernel: [kh, kw],
        stride: conv.stride,
        padding: conv.padding,
        dilation: conv.dilation,
    };
    if shape.output().is_none() {
        return Err(mismatch("the (dilated) kernel is larger than the padded input"));
    }
    Ok(shape)
}

/// Checks an optional bias against weight `[O, C, KH, KW]`: f32, `[O]`, on the weight's device.
pub(super) fn check_bias(op: &'static str, weight: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    let Some(bias) = bias else { return Ok(()) };
    bias.expect_dtype(op, DType::F32)?;
    weight.expect_same_device(op, bias)?;
    if bias.shape != weight.shape[..1] {
        return Err(TensorError::ShapeMismatch {
            op,
            lhs: weight.shape.clone(),
            rhs: bias.shape.clone(),
            why: "the bias needs one value per output channel",
        });
    }
    Ok(())
}

/// The output columns whose window column `kw` falls inside the image rather than on the
/// padding: input column `ow·stride + kw·dilation − padding` is in `0..width` exactly for
/// `ow` in the returned range.
fn columns_inside(s: &ConvShape, kw: usize, ow_n: usize) -> Range<usize> {
    let (stride, pad, offset) = (s.stride[1], s.padding[1], kw * s.dilation[1]);
    let first = pad.saturating_sub(offset).div_ceil(stride);
    let end = (s.width + pad).saturating_sub(offset).div_ceil(stride).min(ow_n);
    first.min(end)..end
}

/// The input row that output row `oh` reads for window row `kh`; none over the padding.
fn input_row(s: &ConvShape, oh: usize, kh: usize) -> Option<usize> {
    (oh * s.stride[0] + kh * s.dilation[0]).checked_sub(s.padding[0]).filter(|&h| h < s.height)
}

/// Walks the rows of one image's column matrix in order — channel, kh, kw, output row — and
/// hands `visit` the row's channel, the input row it reads (none over the padding, or when
/// no column of the window is inside the image), the output columns inside the image, and
/// where those start in the input row. im2col and col2im are the two directions of this walk.
fn for_each_column_row(s: &ConvShape, mut visit: impl FnMut(usize, Option<usize>, Range<usize>, usize)) {
    let [oh_n, ow_n] = s.output().expect("checked");
    for channel in 0..s.channels {
        for kh in 0..s.kernel[0] {
            for kw in 0..s.kernel[1] {
                let inside = columns_inside(s, kw, ow_n);
                // Meaningless when `inside` is empty, and then never used.
                let start = (inside.start * s.stride[1] + kw * s.dilation[1]).saturating_sub(s.padding[1]);
                for oh in 0..oh_n {
                    let h = input_row(s, oh, kh).filter(|_| !inside.is_empty());
                    visit(channel, h, inside.clone(), start);
                }
            }
        }
    }
}

/// `to.copy_from_slice(from)` for the short runs of a column matrix's row (an output row's
/// width: 7 to 28 values in the tutorials), in registers: a `memcpy` call per run cost
/// about as much as the product of the matrix in the tutorials' convolutions.
#[inline(always)]
fn copy_short(to: &mut [f32], from: &[f32]) {
    const LANES: usize = 8;
    let (mut to_chunks, mut from_chunks) = (to.chunks_exact_mut(LANES), from.chunks_exact(LANES));
    for (t, f) in (&mut to_chunks).zip(&mut from_chunks) {
        let lanes: [f32; LANES] = f.try_into().expect("chunks of LANES");
        t.copy_from_slice(&lanes);
    }
    for (t, &f) in to_chunks.into_remainder().iter_mut().zip(from_chunks.remainder()) {
        *t = f;
    }
}

/// True for the tutorials' convolutions (stride and dilation 1): then a window row is a
/// plain run of a (zero-padded) input row, and im2col and col2im take the short walk.
fn unit_stride(s: &ConvShape) -> bool {
    s.stride == [1, 1] && s.dilation == [1, 1]
}

/// The image's `[C, H + 2·pad, W + 2·pad]` size when the short walk pads it first.
fn padded_len(s: &ConvShape) -> usize {
    let padded = unit_stride(s) && s.padding != [0, 0];
    if padded { s.channels * (s.height + 2 * s.padding[0]) * (s.width + 2 * s.padding[1]) } else { 0 }
}

/// The scratch one worker of the per-image passes needs: an image's column matrix, then
/// room for the zero-padded image.
pub(super) fn scratch_len(s: &ConvShape) -> usize {
    let [oh, ow] = s.output().expect("checked");
    s.patch_len() * oh * ow + padded_len(s)
}

/// The scratch as (column matrix, padded image).
fn split_scratch<'a>(s: &ConvShape, scratch: &'a mut [f32]) -> (&'a mut [f32], &'a mut [f32]) {
    let [oh, ow] = s.output().expect("checked");
    scratch.split_at_mut(s.patch_len() * oh * ow)
}

/// The rows and width of an image's planes as the short walk reads them: the image itself,
/// or its copy with zeros around written into `padded`.
fn padded_planes<'a>(image: &'a [f32], s: &ConvShape, padded: &'a mut [f32]) -> (&'a [f32], usize) {
    if s.padding == [0, 0] {
        return (image, s.width);
    }
    let [pad_h, pad_w] = s.padding;
    let (rows, width) = (s.height + 2 * pad_h, s.width + 2 * pad_w);
    padded.fill(0.0);
    for (plane, source) in padded.chunks_exact_mut(rows * width).zip(image.chunks_exact(s.height * s.width)) {
        for (row, source) in plane[pad_h * width..].chunks_exact_mut(width).zip(source.chunks_exact(s.width)) {
            row[pad_w..pad_w + s.width].copy_from_slice(source);
        }
    }
    (padded, width)
}

/// One image's column matrix `[C·KH·KW, OH·OW]`, written over the scratch's first part:
/// zeros where the window hangs over the padding, a copy of the input row between (strided
/// when stride > 1).
fn im2col_image(image: &[f32], s: &ConvShape, scratch: &mut [f32]) {
    let (cols, padded) = split_scratch(s, scratch);
    let [oh, ow] = s.output().expect("checked");
    if unit_stride(s) {
        // Row (c, kh, kw) of the matrix is the window [kh.., kw..] of the padded plane c.
        let (planes, width) = padded_planes(image, s, padded);
        let plane_len = planes.len() / s.channels.max(1);
        let mut blocks = cols.chunks_exact_mut(oh * ow);
        for plane in planes.chunks_exact(plane_len.max(1)) {
            for kh in 0..s.kernel[0] {
                for kw in 0..s.kernel[1] {
                    let block = blocks.next().expect("sized");
                    for (y, row) in block.chunks_exact_mut(ow).enumerate() {
                        copy_short(row, &plane[(y + kh) * width + kw..][..ow]);
                    }
                }
            }
        }
        return;
    }
    let stride = s.stride[1];
    let mut rows = cols.chunks_exact_mut(ow);
    for_each_column_row(s, |channel, h, inside, start| {
        let row = rows.next().expect("sized");
        let Some(h) = h else {
            row.fill(0.0);
            return;
        };
        let source = &image[(channel * s.height + h) * s.width..][..s.width];
        let width = row.len();
        if inside.start > 0 || inside.end < width {
            row[..inside.start].fill(0.0);
            row[inside.end..].fill(0.0);
        }
        let row = &mut row[inside];
        row.iter_mut().zip(source[start..].iter().step_by(stride)).for_each(|(out, &x)| *out = x);
    });
}

/// One image from the column matrix in the scratch's first part, written over `image`:
/// every column entry added back where im2col copied it from. Each pixel receives its
/// terms in (kh, kw) order, as the GPU's gather adds them, so the sums round alike.
fn col2im_image(scratch: &mut [f32], s: &ConvShape, image: &mut [f32]) {
    let (cols, padded) = split_scratch(s, scratch);
    let [oh, ow] = s.output().expect("checked");
    if unit_stride(s) {
        // Added into the padded image, whose border (the padding's share) is then dropped.
        let [pad_h, pad_w] = s.padding;
        let (rows, width) = (s.height + 2 * pad_h, s.width + 2 * pad_w);
        let target = if s.padding == [0, 0] { &mut image[..] } else { &mut padded[..] };
        target.fill(0.0);
        let mut blocks = cols.chunks_exact(oh * ow);
        for plane in target.chunks_exact_mut((rows * width).max(1)) {
            for kh in 0..s.kernel[0] {
                for kw in 0..s.kernel[1] {
                    let block = blocks.next().expect("sized");
                    for (y, row) in block.chunks_exact(ow).enumerate() {
                        let to = &mut plane[(y + kh) * width + kw..][..ow];
                        to.iter_mut().zip(row).for_each(|(out, &g)| *out += g);
                    }
                }
            }
        }
        if s.padding != [0, 0] {
            for (plane, out) in padded.chunks_exact(rows * width).zip(image.chunks_exact_mut(s.height * s.width)) {
                for (row, out) in plane[pad_h * width..].chunks_exact(width).zip(out.chunks_exact_mut(s.width)) {
                    out.copy_from_slice(&row[pad_w..pad_w + s.width]);
                }
            }
        }
        return;
    }
    let stride = s.stride[1];
    image.fill(0.0);
    let mut rows = cols.chunks_exact(ow);
    for_each_column_row(s, |channel, h, inside, start| {
        let row = rows.next().expect("sized");
        let Some(h) = h else { return };
        let target = &mut image[(channel * s.height + h) * s.width..][..s.width];
        let row = &row[inside];
        target[start..].iter_mut().step_by(stride).zip(row).for_each(|(out, &g)| *out += g);
    });
}

/// How one image's product multiplies: alone on a core when the batch keeps every core
/// busy, spread across cores otherwise (a single image at inference).
fn per_image_parallelism(batch: usize) -> gemm::Parallelism {
    if batch >= rayon::current_num_threads() { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(0) }
}

/// One image's output `[O, OH·OW]`, written over `out`: kernel `[O, C·KH·KW]` · the image's
/// columns (built in `scratch`), plus the bias, then with `relu` max(·, 0), while the output
/// is still in cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_image(
    image: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    s: &ConvShape,
    out_channels: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let [oh, ow] = s.output().expect("checked");
    let spatial = oh * ow;
    im2col_image(image, s, scratch);
    let product = single_product(out_channels, spatial, s.patch_len(), false, false);
    let cols = split_scratch(s, scratch).0;
    gemm_accumulate(out, kernel, cols, &product, false, per_image_parallelism(s.batch));
    if let Some(bias) = bias {
        for (row, b) in out.chunks_mut(spatial).zip(bias) {
            row.iter_mut().for_each(|v| *v += b);
        }
    }
    if relu {
        out.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

/// One image's term of the weight gradient, its output gradient `[O, OH·OW]` · its
/// columnsᵀ (built in `scratch`), added to `partial` (written over it when `first`).
pub(super) fn weight_grad_image(
    grad: &[f32],
    image: &[f32],
    s: &ConvShape,
    out_channels: usize,
    scratch: &mut [f32],
    partial: &mut [f32],
    first: bool,
) {
    let [oh, ow] = s.output().expect("checked");
    im2col_image(image, s, scratch);
    let product = single_product(out_channels, s.patch_len(), oh * ow, false, true);
    gemm_accumulate(partial, grad, split_scratch(s, scratch).0, &product, !first, gemm::Parallelism::None);
}

/// One image's input gradient, written over `image`: kernelᵀ · its output gradient gives
/// the columns' gradient (in `scratch`), which col2im folds back onto the image.
pub(super) fn input_grad_image(
    grad: &[f32],
    kernel: &[f32],
    s: &ConvShape,
    out_channels: usize,
    scratch: &mut [f32],
    image: &mut [f32],
) {
    let [oh, ow] = s.output().expect("checked");
    let product = single_product(s.patch_len(), oh * ow, out_channels, true, false);
    gemm_accumulate(split_scratch(s, scratch).0, kernel, grad, &product, false, per_image_parallelism(s.batch));
    col2im_image(scratch, s, image);
}

/// The CPU forward pass, image by image ([`conv_image`]).
fn cpu_conv2d(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    s: &ConvShape,
    out_channels: usize,
) -> Vec<f32> {
    let [oh, ow] = s.output().expect("checked");
    let image_len = s.channels * s.height * s.width;
    let mut out = vec![0.0f32; s.batch * out_channels * oh * ow];
    out.par_chunks_mut(out_channels * oh * ow).zip(x.par_chunks(image_len)).for_each_init(
        || vec![0.0f32; scratch_len(s)],
        |scratch, (out, image)| conv_image(image, kernel, bias, relu, s, out_channels, scratch, out),
    );
    out
}

/// The CPU weight gradient: Σ over images of [`weight_grad_image`], summed in the fixed
/// order of [`sum_over_batch`].
fn cpu_conv2d_weight_grad(grad: &[f32], x: &[f32], s: &ConvShape, out_channels: usize) -> Vec<f32> {
    let [oh, ow] = s.output().expect("checked");
    let (grad_len, image_len) = (out_channels * oh * ow, s.channels * s.height * s.width);
    sum_over_batch(
        s.batch,
        out_channels * s.patch_len(),
        || vec![0.0f32; scratch_len(s)],
        |scratch, i, partial, first| {
            let (grad, image) = (&grad[i * grad_len..][..grad_len], &x[i * image_len..][..image_len]);
            weight_grad_image(grad, image, s, out_channels, scratch, partial, first);
        },
    )
}

/// The CPU input gradient, image by image ([`input_grad_image`]).
fn cpu_conv2d_input_grad(grad: &[f32], kernel: &[f32], s: &ConvShape, out_channels: usize) -> Vec<f32> {
    let [oh, ow] = s.output().expect("checked");
    let image_len = s.channels * s.height * s.width;
    let mut x = vec![0.0f32; s.batch * image_len];
    x.par_chunks_mut(image_len).zip(grad.par_chunks(out_channels * oh * ow)).for_each_init(
        || vec![0.0f32; scratch_len(s)],
        |scratch, (image, grad)| input_grad_image(grad, kernel, s, out_channels, scratch, image),
    );
    x
}

/// The input gradient on the GPU from `grad` `[N, O, OH·OW]`: weightᵀ · each image's
/// gradient gives the columns' gradient, which col2im adds back into place.
fn gpu_input_grad_by_columns(ctx: &GpuContext, grad: &Tensor, weight: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let kernel = weight.reshape(&[weight.shape[0], s.patch_len()])?;
    kernel.matmul_t(grad, true, false)?.gpu_col2im(ctx, s)
}

impl Tensor {
    /// The batch's column matrix `[N, C·KH·KW, OH·OW]` of this GPU image batch.
    fn gpu_im2col(&self, ctx: &GpuContext, s: &ConvShape) -> Result<Tensor> {
        let [oh, ow] = s.output().expect("checked");
        let shape = vec![s.batch, s.patch_len(), oh * ow];
        Ok(Tensor::gpu(im2col(ctx, self.gpu_buffer(), s)?, shape, DType::F32))
    }

    /// The image batch `[N, C, H, W]` from this GPU column-matrix gradient.
    fn gpu_col2im(&self, ctx: &GpuContext, s: &ConvShape) -> Result<Tensor> {
        let shape = vec![s.batch, s.channels, s.height, s.width];
        Ok(Tensor::gpu(col2im(ctx, self.gpu_buffer(), s)?, shape, DType::F32))
    }

    /// 2-D convolution (cross-correlation, as PyTorch) of `[N, C, H, W]` with a weight
    /// `[O, C, KH, KW]` and an optional bias `[O]`: `[N, O, OH, OW]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, conv: &Conv2d) -> Result<Tensor> {
        let _op = profile::enter("conv2d");
        Ok(self.conv2d_then("conv2d", weight, bias, conv, false)?.0)
    }

    /// max(conv2d(x), 0): a convolution and the ReLU after it; on the GPU the bias and the
    /// ReLU are applied as the product is stored.
    pub fn conv2d_relu(&self, weight: &Tensor, bias: Option<&Tensor>, conv: &Conv2d) -> Result<Tensor> {
        let _op = profile::enter("conv2d_relu");
        Ok(self.conv2d_then("conv2d_relu", weight, bias, conv, true)?.0)
    }

    /// [`Tensor::conv2d`] (or, with `relu`, [`Tensor::conv2d_relu`]) and the input's column
    /// matrix when the GPU built one (its im2col path): the weight gradient reuses it
    /// ([`Tensor::conv2d_backward_reusing`]) instead of building it again.
    pub fn conv2d_keeping_columns(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        conv: &Conv2d,
        relu: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let _op = profile::enter("conv2d_keeping_columns");
        self.conv2d_then("conv2d", weight, bias, conv, relu)
    }

    fn conv2d_then(
        &self,
        op: &'static str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        conv: &Conv2d,
        relu: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let s = geometry(op, self, weight, conv)?;
        check_bias(op, weight, bias)?;
        let out_channels = weight.shape[0];
        let [oh, ow] = s.output().expect("checked");
        let out_shape = [s.batch, out_channels, oh, ow];
        let device = self.device();
        let ctx = match &device {
            Device::Cpu => {
                let bias = bias.map(Tensor::cpu_values);
                let out = cpu_conv2d(self.cpu_values(), weight.cpu_values(), bias, relu, &s, out_channels);
                return Ok((Tensor::cpu_f32(out, out_shape.to_vec()), None));
            }
            Device::Gpu(ctx) => ctx,
        };
        let (x, w, b) = (self.gpu_buffer(), weight.gpu_buffer(), bias.map(Tensor::gpu_buffer));
        let out = match gpu_forward(ctx, &s, out_channels) {
            GpuForward::Implicit => Some(conv2d_implicit(ctx, x, w, b, &s, out_channels, relu)?),
            GpuForward::Tiled => Some(conv2d_tiled(ctx, x, w, b, &s, out_channels, relu)?),
            GpuForward::Direct => Some(conv2d_direct(ctx, x, w, b, &s, out_channels, relu)?),
            GpuForward::ColumnsAndMatmul => None,
        };
        if let Some(out) = out {
            return Ok((Tensor::gpu(out, out_shape.to_vec(), DType::F32), None));
        }
        // The weight [O, C·KH·KW] times each image's columns, bias and ReLU as it is stored.
        let kernel = weight.reshape(&[out_channels, s.patch_len()])?;
        let columns = self.gpu_im2col(ctx, &s)?;
        let (shape, _) = kernel.matmul_shape(op, &columns, false, false)?;
        let epilogue = Epilogue { bias: bias.map(|b| (b.gpu_buffer(), BiasAxis::Row)), relu };
        let out = matmul_with(ctx, kernel.gpu_buffer(), columns.gpu_buffer(), shape, epilogue)?;
        Ok((Tensor::gpu(out, out_shape.to_vec(), DType::F32), Some(columns)))
    }

    /// The gradients of `conv2d(input, weight, bias)` from this output gradient
    /// `[N, O, OH, OW]`; the bias gradient when `with_bias`.
    pub fn conv2d_backward(
        &self,
        input: &Tensor,
        weight: &Tensor,
        conv: &Conv2d,
        with_bias: bool,
    ) -> Result<Conv2dGrads> {
        let _op = profile::enter("conv2d_backward");
        let (input_grad, weight, bias) = self.conv2d_backward_reusing(input, weight, conv, with_bias, None, true)?;
        Ok(Conv2dGrads { input: input_grad.expect("asked for"), weight, bias })
    }

    /// The weight and (when `with_bias`) bias gradients of `conv2d` alone: what a first
    /// layer needs, whose input (the data) wants no gradient.
    pub fn conv2d_parameter_backward(
        &self,
        input: &Tensor,
        weight: &Tensor,
        conv: &Conv2d,
        with_bias: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let _op = profile::enter("conv2d_parameter_backward");
        let (_, weight, bias) = self.conv2d_backward_reusing(input, weight, conv, with_bias, None, false)?;
        Ok((weight, bias))
    }

    /// The gradients of a convolution — the input's only when `input_grad` — from this
    /// output gradient, with the input's column matrix from the forward pass
    /// ([`Tensor::conv2d_keeping_columns`]) when there is one, so the GPU need not build it
    /// again for the weight gradient.
    pub fn conv2d_backward_reusing(
        &self,
        input: &Tensor,
        weight: &Tensor,
        conv: &Conv2d,
        with_bias: bool,
        columns: Option<&Tensor>,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let _op = profile::enter("conv2d_backward_reusing");
        const OP: &str = "conv2d_backward";
        let s = geometry(OP, input, weight, conv)?;
        self.expect_dtype(OP, DType::F32)?;
        input.expect_same_device(OP, self)?;
        let out_channels = weight.shape[0];
        let [oh, ow] = s.output().expect("checked");
        if self.shape != [s.batch, out_channels, oh, ow] {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: self.shape.clone(),
                rhs: vec![s.batch, out_channels, oh, ow],
                why: "the gradient must have the convolution output's shape",
            });
        }
        let want_columns = [s.batch, s.patch_len(), oh * ow];
        if let Some(columns) = columns
            && columns.shape != want_columns
        {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                lhs: columns.shape.clone(),
                rhs: want_columns.to_vec(),
                why: "the saved column matrix must be the input's",
            });
        }
        let grad = self.reshape(&[s.batch, out_channels, oh * ow])?;
        let (weight_grad, input_grad) = match &self.device() {
            Device::Cpu => {
                let w = cpu_conv2d_weight_grad(self.cpu_values(), input.cpu_values(), &s, out_channels);
                let x = input_grad.then(|| {
                    let x = cpu_conv2d_input_grad(self.cpu_values(), weight.cpu_values(), &s, out_channels);
                    Tensor::cpu_f32(x, input.shape.clone())
                });
                (Tensor::cpu_f32(w, weight.shape.clone()), x)
            }
            Device::Gpu(ctx) => {
                match ctx.kernel_class() {
                    // The software kernels' implicit products: no column matrix either way.
                    KernelClass::Software if implicit_fits(&s, out_channels) => {
                        let g = self.gpu_buffer();
                        let w = conv2d_weight_grad_implicit(ctx, input.gpu_buffer(), g, &s, out_channels)?;
                        let w = Tensor::gpu(w, weight.shape.clone(), DType::F32);
                        let x = input_grad
                            .then(|| conv2d_input_grad_implicit(ctx, g, weight.gpu_buffer(), &s, out_channels))
                            .transpose()?
                            .map(|x| Tensor::gpu(x, input.shape.clone(), DType::F32));
                        (w, x)
                    }
                    // The portable kernels' tiled implicit products, likewise; an input
                    // gradient of few channels by the product and col2im, which need no
                    // column matrix of the input either.
                    KernelClass::Hardware if tiled_fits(ctx, &s, out_channels) => {
                        let g = self.gpu_buffer();
                        let w = conv2d_weight_grad_tiled(ctx, input.gpu_buffer(), g, &s, out_channels)?;
                        let w = Tensor::gpu(w, weight.shape.clone(), DType::F32);
                        let x = match input_grad {
                            false => None,
                            true if s.channels < TILED_INPUT_GRAD_MIN_CHANNELS => {
                                Some(gpu_input_grad_by_columns(ctx, &grad, weight, &s)?)
                            }
                            true => {
                                let x = conv2d_input_grad_tiled(ctx, g, weight.gpu_buffer(), &s, out_channels)?;
                                Some(Tensor::gpu(x, input.shape.clone(), DType::F32))
                            }
                        };
                        (w, x)
                    }
                    KernelClass::Software | KernelClass::Hardware => {
                        let built;
                        let columns = match columns {
                            Some(columns) => columns,
                            None => {
                                built = input.gpu_im2col(ctx, &s)?;
                                &built
                            }
                        };
                        let w = grad.matmul_t_sum(columns, false, true)?.reshape(&weight.shape)?;
                        let x = input_grad.then(|| gpu_input_grad_by_columns(ctx, &grad, weight, &s)).transpose()?;
                        (w, x)
                    }
                }
            }
        };
        let bias = if with_bias { Some(self.sum_per_channel()?) } else { None };
        Ok((input_grad, weight_grad, bias))
    }
}
