// The parameters every convolution kernel takes (conv.wgsl, conv_software.wgsl and
// conv_tiled.wgsl are each joined to this file), checked against their Rust twin `Params`
// in conv.rs.

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
    // The input's rows (columns) lie spread_h (spread_w) apart in the grid the window moves
    // over, zeros between: 1, or a forward stride when the software or tiled kernel computes
    // an input gradient as a convolution.
    spread_h: u32,
    spread_w: u32,
    // A weight gradient's share of its sum per z-slice of the grid: (image, output pixel)
    // steps for the software kernel, k (a multiple of its SLICE) for the tiled one.
    chunk: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
