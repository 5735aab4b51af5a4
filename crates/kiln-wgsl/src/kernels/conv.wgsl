// Convolution (NCHW): directly, and the two data movements around it as a matrix product.
//
// conv2d_direct: one invocation per output element sums its C·KH·KW window; for few input
//   channels, where a column matrix would be mostly copying.
// im2col: cols[n, (c, kh, kw), (oh, ow)] = x[n, c, oh·s − p + kh·d, ow·s − p + kw·d], 0 in
//   the padding; then the convolution is weight[O, C·KH·KW] · cols[n].
// col2im: the adjoint, for the input gradient: each input element sums the column entries
//   it was copied to. One invocation per input element gathers them, so no atomics.

override HAS_BIAS: bool;
// conv2d_direct: the output goes through a ReLU as it is stored.
override RELU: bool;

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

@compute @workgroup_size(256)
fn conv2d_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    let spatial = p.out_height * p.out_width;
    if (i >= p.batch * p.out_channels * spatial) {
        return;
    }
    let col = i % spatial;
    let o = (i / spatial) % p.out_channels;
    let n = i / (spatial * p.out_channels);
    let oh = col / p.out_width;
    let ow = col % p.out_width;
    var acc = 0.0;
    if (HAS_BIAS) {
        acc = bias[o];
    }
    for (var c = 0u; c < p.channels; c++) {
        let plane = (n * p.channels + c) * p.height;
        let taps = (o * p.channels + c) * p.kernel_h;
        for (var kh = 0u; kh < p.kernel_h; kh++) {
            let h = i32(oh * p.stride_h + kh * p.dilation_h) - i32(p.pad_h);
            if (h < 0 || h >= i32(p.height)) {
                continue;
            }
            for (var kw = 0u; kw < p.kernel_w; kw++) {
                let w = i32(ow * p.stride_w + kw * p.dilation_w) - i32(p.pad_w);
                if (w >= 0 && w < i32(p.width)) {
                    acc += src[(plane + u32(h)) * p.width + u32(w)] * weight[(taps + kh) * p.kernel_w + kw];
                }
            }
        }
    }
    if (RELU) {
        acc = max(acc, 0.0);
    }
    dst[i] = acc;
}

@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    let spatial = p.out_height * p.out_width;
    let rows = p.channels * p.kernel_h * p.kernel_w;
    if (i >= p.batch * rows * spatial) {
        return;
    }
    let n = i / (rows * spatial);
    let row = (i / spatial) % rows;
    let col = i % spatial;
    let c = row / (p.kernel_h * p.kernel_w);
    let kh = (row / p.kernel_w) % p.kernel_h;
    let kw = row % p.kernel_w;
    let h = i32((col / p.out_width) * p.stride_h + kh * p.dilation_h) - i32(p.pad_h);
    let w = i32((col % p.out_width) * p.stride_w + kw * p.dilation_w) - i32(p.pad_w);
    var v = 0.0;
    if (h >= 0 && h < i32(p.height) && w >= 0 && w < i32(p.width)) {
        v = src[((n * p.channels + c) * p.height + u32(h)) * p.width + u32(w)];
    }
    dst[i] = v;
}

@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.batch * p.channels * p.height * p.width) {
        return;
    }
    let w = i % p.width;
    let h = (i / p.width) % p.height;
    let c = (i / (p.width * p.height)) % p.channels;
    let n = i / (p.width * p.height * p.channels);
    let spatial = p.out_height * p.out_width;
    let rows = p.channels * p.kernel_h * p.kernel_w;
    var total = 0.0;
    for (var kh = 0u; kh < p.kernel_h; kh++) {
        // The output row oh that read this element through kernel row kh, if any.
        let hs = i32(h + p.pad_h) - i32(kh * p.dilation_h);
        if (hs < 0 || u32(hs) % p.stride_h != 0u || u32(hs) / p.stride_h >= p.out_height) {
            continue;
        }
        let oh = u32(hs) / p.stride_h;
        for (var kw = 0u; kw < p.kernel_w; kw++) {
            let ws = i32(w + p.pad_w) - i32(kw * p.dilation_w);
            if (ws < 0 || u32(ws) % p.stride_w != 0u || u32(ws) / p.stride_w >= p.out_width) {
                continue;
            }
            let ow = u32(ws) / p.stride_w;
            let row = (c * p.kernel_h + kh) * p.kernel_w + kw;
            total += src[(n * rows + row) * spatial + oh * p.out_width + ow];
        }
    }
    dst[i] = total;
}

// The weight [O, C, KH, KW] as the input gradient's convolution takes it: [C, O, KH, KW],
// each window turned by 180°.
@compute @workgroup_size(256)
fn flip_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    let taps = p.kernel_h * p.kernel_w;
    if (i >= p.out_channels * p.channels * taps) {
        return;
    }
    let kw = i % p.kernel_w;
    let kh = (i / p.kernel_w) % p.kernel_h;
    let o = (i / taps) % p.out_channels;
    let c = i / (taps * p.out_channels);
    dst[i] = src[((o * p.channels + c) * p.kernel_h + p.kernel_h - 1u - kh) * p.kernel_w + p.kernel_w - 1u - kw];
}
