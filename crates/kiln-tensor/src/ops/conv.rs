//! 2-D convolution (NCHW, groups = 1) as column matrices and matrix products, forward and
//! backward. im2col/col2im are the device-specific parts; the products are `matmul`.

use kiln_wgsl::kernels::conv::{ConvShape, col2im, conv2d_direct, im2col};
use rayon::prelude::*;

use crate::{DType, Device, Result, Tensor, TensorError};

/// On the GPU, convolutions with at most this many output channels run the direct kernel:
/// the matrix product's 64-row tiles would be mostly idle. Measured on lavapipe (LeNet's
/// 3→6 conv: direct 20 ms, im2col + matmul 44 ms; 6→16 on 14×14: 19 vs 21 ms; the ASL
/// CNN's 1→25: 32 vs 20 ms) — to be revisited on hardware GPUs.
const GPU_DIRECT_MAX_OUT_CHANNELS: usize = 16;

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
fn geometry(op: &'static str, input: &Tensor, weight: &Tensor, conv: &Conv2d) -> Result<ConvShape> {
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

/// The CPU reference of im2col: `[N, C·KH·KW, OH·OW]`, images in parallel.
fn cpu_im2col(x: &[f32], s: &ConvShape) -> Vec<f32> {
    let [oh_n, ow_n] = s.output().expect("checked");
    let image_len = s.channels * s.height * s.width;
    let mut cols = vec![0.0f32; s.batch * s.patch_len() * oh_n * ow_n];
    cols.par_chunks_mut(s.patch_len() * oh_n * ow_n).zip(x.par_chunks(image_len)).for_each(|(cols, image)| {
        let mut out = cols.iter_mut();
        for plane in image.chunks(s.height * s.width) {
            for kh in 0..s.kernel[0] {
                for kw in 0..s.kernel[1] {
                    for oh in 0..oh_n {
                        let h =
                            (oh * s.stride[0] + kh * s.dilation[0]).checked_sub(s.padding[0]).filter(|&h| h < s.height);
                        for ow in 0..ow_n {
                            let w = (ow * s.stride[1] + kw * s.dilation[1])
                                .checked_sub(s.padding[1])
                                .filter(|&w| w < s.width);
                            *out.next().expect("sized") = match (h, w) {
                                (Some(h), Some(w)) => plane[h * s.width + w],
                                _ => 0.0,
                            };
                        }
                    }
                }
            }
        }
    });
    cols
}

/// The CPU reference of col2im: every column entry added back where im2col copied it from,
/// visiting them in the order the GPU's gather does, so the sums round alike. Images in
/// parallel.
fn cpu_col2im(cols: &[f32], s: &ConvShape) -> Vec<f32> {
    let [oh_n, ow_n] = s.output().expect("checked");
    let spatial = oh_n * ow_n;
    let image_len = s.channels * s.height * s.width;
    let mut x = vec![0.0f32; s.batch * image_len];
    x.par_chunks_mut(image_len).zip(cols.par_chunks(s.patch_len() * spatial)).for_each(|(image, cols)| {
        let source = |pos: usize, k: usize, d: usize| {
            (pos + s.padding[d])
                .checked_sub(k * s.dilation[d])
                .filter(|&v| v % s.stride[d] == 0 && v / s.stride[d] < [oh_n, ow_n][d])
                .map(|v| v / s.stride[d])
        };
        for (i, out) in image.iter_mut().enumerate() {
            let (w, h, c) = (i % s.width, (i / s.width) % s.height, i / (s.width * s.height));
            for kh in 0..s.kernel[0] {
                let Some(oh) = source(h, kh, 0) else { continue };
                for kw in 0..s.kernel[1] {
                    let Some(ow) = source(w, kw, 1) else { continue };
                    let row = (c * s.kernel[0] + kh) * s.kernel[1] + kw;
                    *out += cols[row * spatial + oh * ow_n + ow];
                }
            }
        }
    });
    x
}

impl Tensor {
    fn im2col(&self, s: &ConvShape) -> Result<Tensor> {
        let [oh, ow] = s.output().expect("checked");
        let shape = vec![s.batch, s.patch_len(), oh * ow];
        match &self.device {
            Device::Cpu => Ok(Tensor::cpu_f32(cpu_im2col(self.cpu_values(), s), shape)),
            Device::Gpu(ctx) => Ok(Tensor::gpu(im2col(ctx, self.gpu_buffer(), s)?, shape, DType::F32, &self.device)),
        }
    }

    fn col2im(&self, s: &ConvShape) -> Result<Tensor> {
        let shape = vec![s.batch, s.channels, s.height, s.width];
        match &self.device {
            Device::Cpu => Ok(Tensor::cpu_f32(cpu_col2im(self.cpu_values(), s), shape)),
            Device::Gpu(ctx) => Ok(Tensor::gpu(col2im(ctx, self.gpu_buffer(), s)?, shape, DType::F32, &self.device)),
        }
    }

    /// 2-D convolution (cross-correlation, as PyTorch) of `[N, C, H, W]` with a weight
    /// `[O, C, KH, KW]` and an optional bias `[O]`: `[N, O, OH, OW]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, conv: &Conv2d) -> Result<Tensor> {
        const OP: &str = "conv2d";
        let s = geometry(OP, self, weight, conv)?;
        let out_channels = weight.shape[0];
        let [oh, ow] = s.output().expect("checked");
        let out_shape = [s.batch, out_channels, oh, ow];
        if let Some(bias) = bias {
            bias.expect_dtype(OP, DType::F32)?;
            self.expect_same_device(OP, bias)?;
            if bias.shape != [out_channels] {
                return Err(TensorError::ShapeMismatch {
                    op: OP,
                    lhs: weight.shape.clone(),
                    rhs: bias.shape.clone(),
                    why: "the bias needs one value per output channel",
                });
            }
        }
        if let Device::Gpu(ctx) = &self.device
            && out_channels <= GPU_DIRECT_MAX_OUT_CHANNELS
        {
            let bias = bias.map(Tensor::gpu_buffer);
            let out = conv2d_direct(ctx, self.gpu_buffer(), weight.gpu_buffer(), bias, &s, out_channels)?;
            return Ok(Tensor::gpu(out, out_shape.to_vec(), DType::F32, &self.device));
        }
        let kernel = weight.reshape(&[out_channels, s.patch_len()])?;
        let mut out = kernel.matmul(&self.im2col(&s)?)?;
        if let Some(bias) = bias {
            out = out.add(&bias.reshape(&[out_channels, 1])?)?;
        }
        out.reshape(&out_shape)
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
        let (weight_grad, bias) = self.conv2d_parameter_backward(input, weight, conv, with_bias)?;
        let s = geometry("conv2d_backward", input, weight, conv)?;
        let (out_channels, [oh, ow]) = (weight.shape[0], s.output().expect("checked"));
        let grad = self.reshape(&[s.batch, out_channels, oh * ow])?;
        let kernel = weight.reshape(&[out_channels, s.patch_len()])?;
        let input_grad = kernel.matmul_t(&grad, true, false)?.col2im(&s)?;
        Ok(Conv2dGrads { input: input_grad, weight: weight_grad, bias })
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
        let grad = self.reshape(&[s.batch, out_channels, oh * ow])?;
        let weight_grad = grad.matmul_t_sum(&input.im2col(&s)?, false, true)?.reshape(&weight.shape)?;
        let bias = if with_bias { Some(grad.sum(2, false)?.sum(0, false)?) } else { None };
        Ok((weight_grad, bias))
    }
}
