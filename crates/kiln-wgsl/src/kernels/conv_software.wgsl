// Convolution (NCHW) as an implicit matrix product for software adapters (llvmpipe), where
// the column matrix is never written: each invocation computes 4 consecutive output pixels
// of one output row for a block of 32 output channels, reading the input window straight
// from the image (zero outside it).
//
// Why this shape: on Mesa 22.3's llvmpipe a storage-buffer load costs a loop over the SIMD
// lanes, ~60 times a multiply-add (figures at `KernelClass` in context.rs), so the kernel
// loads as little per multiply-add as it can. The 32 weights a step needs are the same for
// every invocation: lane l of each subgroup loads the weights of channels l, l + 8, l + 16,
// l + 24 of the block and subgroupBroadcast hands them to the others, so a step is 4 weight
// and 4 input loads (1 with SLIDE, below) for 128 multiply-adds. Every lane of a subgroup
// runs the same loop (subgroup operations need all lanes): over the window's taps that
// reach inside the input for some lane; those past the output only skip the store. Needs
// subgroups of at least 8.

override HAS_BIAS: bool;
override RELU: bool;
// Whether spread_h or spread_w exceeds 1: specialised, as the test divides (slow per lane).
override SPREAD: bool;
// Whether stride_w = dilation_w (both 1 in the tutorials), so that the window's next tap
// reads an invocation's 4 pixels moved on by one: 3 + kernel_w input loads per window row
// instead of 4 · kernel_w.
override SLIDE: bool = false;

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const BLOCK: u32 = 32u;

// The input at (h, w) of the window's grid over the plane starting at `plane`: 0 in the
// padding and, when spread, between the input's elements.
fn input_at(plane: i32, h: i32, w: i32) -> f32 {
    var row = h;
    var col = w;
    var on_grid = true;
    if (SPREAD) {
        let sh = i32(p.spread_h);
        let sw = i32(p.spread_w);
        on_grid = h % sh == 0 && w % sw == 0;
        row = h / sh;
        col = w / sw;
    }
    let inside = on_grid && h >= 0 && row < i32(p.height) && w >= 0 && col < i32(p.width);
    return select(0.0, src[max(plane + row * i32(p.width) + col, 0)], inside);
}

// Output channel o's 4 pixels from (oh, ow0), with the bias and ReLU; none past the output.
fn store_channel(n: u32, o: u32, oh: u32, ow0: u32, sum: vec4<f32>) {
    if (o >= p.out_channels) {
        return;
    }
    var v = sum;
    if (HAS_BIAS) {
        v += vec4<f32>(bias[o]);
    }
    if (RELU) {
        v = max(v, vec4<f32>(0.0));
    }
    let base = ((n * p.out_channels + o) * p.out_height + oh) * p.out_width + ow0;
    for (var j = 0u; j < min(p.out_width - ow0, 4u); j++) {
        dst[base + j] = v[j];
    }
}

// Stores acc[first .. first + 8], written out for constant indices (software_tiles.wgsl).
fn store8(acc: ptr<function, array<vec4<f32>, 32>>, first: u32, n: u32, o0: u32, oh: u32, ow0: u32) {
    store_channel(n, o0 + first + 0u, oh, ow0, (*acc)[first + 0u]);
    store_channel(n, o0 + first + 1u, oh, ow0, (*acc)[first + 1u]);
    store_channel(n, o0 + first + 2u, oh, ow0, (*acc)[first + 2u]);
    store_channel(n, o0 + first + 3u, oh, ow0, (*acc)[first + 3u]);
    store_channel(n, o0 + first + 4u, oh, ow0, (*acc)[first + 4u]);
    store_channel(n, o0 + first + 5u, oh, ow0, (*acc)[first + 5u]);
    store_channel(n, o0 + first + 6u, oh, ow0, (*acc)[first + 6u]);
    store_channel(n, o0 + first + 7u, oh, ow0, (*acc)[first + 7u]);
}

// Along an axis of `extent` positions, the taps [first, end) of a kernel of `kernel` taps
// `dilation` apart that reach inside [0, extent) from at least one of the positions
// `first` … `last` of one lane, widened to cover every lane of the subgroup (its broadcasts
// need all lanes in the loop). The taps outside read only zeros: an input gradient's
// convolution is padded by dilation · (kernel − 1) − padding on each side, for the
// Fashion-MNIST CNN's second layer 4 rows and columns around its 8 × 8 gradient.
fn taps(first: i32, last: i32, kernel: u32, dilation: u32, extent: i32) -> vec2<u32> {
    let d = i32(dilation);
    var begin = 0;
    if (last < 0) {
        begin = (d - 1 - last) / d;
    }
    var end = 0;
    if (first < extent) {
        end = min(i32(kernel), (extent - 1 - first) / d + 1);
    }
    if (begin >= end) {
        // None: neutral in the subgroup's minimum and maximum.
        begin = i32(kernel);
        end = 0;
    }
    return vec2<u32>(subgroupMin(u32(begin)), subgroupMax(u32(end)));
}

// Grid: x (folded over z past 65,535 workgroups) over output rows × 4-pixel segments ×
// batch, the image fastest so that a subgroup's lanes share their windows (see `taps`),
// 64 per workgroup; y over blocks of 32 output channels.
@compute @workgroup_size(64)
fn conv2d_implicit(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let segments = (p.out_width + 3u) / 4u;
    let per_image = p.out_height * segments;
    let flat = (wid.z * nwg.x + wid.x) * 64u + lid;
    let live = flat < p.batch * per_image;
    let g = min(flat, p.batch * per_image - 1u);
    let n = g % p.batch;
    let oh = g / p.batch / segments;
    let ow0 = (g / p.batch % segments) * 4u;
    let o0 = wid.y * BLOCK;
    // The padding may be negative (an input gradient's, d·(k − 1) − padding).
    let ih = i32(oh * p.stride_h) - bitcast<i32>(p.pad_h);
    let iw0 = i32(ow0 * p.stride_w) - bitcast<i32>(p.pad_w);
    let sw = i32(p.stride_w);
    let rows = p.channels * p.kernel_h * p.kernel_w;
    // This lane's four weight rows; channels past the last reuse it (never stored).
    let last = p.out_channels - 1u;
    let mine = vec4<u32>(min(o0 + lane % 8u, last), min(o0 + 8u + lane % 8u, last),
                         min(o0 + 16u + lane % 8u, last), min(o0 + 24u + lane % 8u, last)) * rows;
    let pixels = i32(min(p.out_width - ow0, 4u));
    let rows_in = taps(ih, ih, p.kernel_h, p.dilation_h, i32(p.height * p.spread_h));
    let cols_in = taps(iw0, iw0 + (pixels - 1) * sw, p.kernel_w, p.dilation_w, i32(p.width * p.spread_w));
    var acc: array<vec4<f32>, 32>;
    for (var c = 0u; c < p.channels; c++) {
        let plane = i32((n * p.channels + c) * p.height * p.width);
        for (var kh = rows_in.x; kh < rows_in.y; kh++) {
            let h = ih + i32(kh * p.dilation_h);
            // With SLIDE the next tap's pixels are these moved on by one: the first three
            // are loaded here and each tap loads only its last.
            var x = vec4<f32>(0.0);
            if (SLIDE) {
                let w0 = iw0 + i32(cols_in.x * p.dilation_w);
                x = vec4<f32>(0.0, input_at(plane, h, w0), input_at(plane, h, w0 + sw),
                              input_at(plane, h, w0 + 2 * sw));
            }
            for (var kw = cols_in.x; kw < cols_in.y; kw++) {
                let w = iw0 + i32(kw * p.dilation_w);
                if (SLIDE) {
                    x = vec4<f32>(x.y, x.z, x.w, input_at(plane, h, w + 3 * sw));
                } else {
                    x = vec4<f32>(input_at(plane, h, w), input_at(plane, h, w + sw),
                                  input_at(plane, h, w + 2 * sw), input_at(plane, h, w + 3 * sw));
                }
                let r = (c * p.kernel_h + kh) * p.kernel_w + kw;
                accumulate8(&acc, 0u, weight[mine.x + r], x);
                accumulate8(&acc, 8u, weight[mine.y + r], x);
                accumulate8(&acc, 16u, weight[mine.z + r], x);
                accumulate8(&acc, 24u, weight[mine.w + r], x);
            }
        }
    }
    if (live) {
        store8(&acc, 0u, n, o0, oh, ow0);
        store8(&acc, 8u, n, o0, oh, ow0);
        store8(&acc, 16u, n, o0, oh, ow0);
        store8(&acc, 24u, n, o0, oh, ow0);
    }
}

// The weight gradient, dW[o, r] = Σ_n Σ_q grad[n, o, q] · x̂[n, r, q] with r = (c, kh, kw)
// a row of the column matrix x̂ and q an output pixel: each invocation sums 4 consecutive
// rows r for a block of 32 output channels, lane l loading the gradients of channels
// l, l + 8, l + 16, l + 24 of the block at each pixel and broadcasting them. Each image's
// sum is added to the total on its own, as the portable kernels' batch sums do.
// Each z-slice of the grid walks `chunk` consecutive (image, pixel) steps and writes its own
// partial gradient; the launcher adds them in order. The chunks keep every invocation's
// loop under llvmpipe's cap on loop iterations (see the launcher).
// Grid: x over quads of rows, 8 per workgroup (one llvmpipe subgroup: a weight has few
// rows, and every invocation of a workgroup runs the whole loop, past the rows or not), y
// over blocks of 32 output channels, z over the chunks.
@group(0) @binding(5) var<storage, read> out_grad: array<f32>;

// dW[o, r0 .. r0 + 4], none past the weight.
fn store_weight_row(base: u32, o: u32, r0: u32, v: vec4<f32>) {
    let rows = p.channels * p.kernel_h * p.kernel_w;
    if (o >= p.out_channels) {
        return;
    }
    for (var j = 0u; j < min(rows - r0, 4u); j++) {
        dst[base + o * rows + r0 + j] = v[j];
    }
}

fn store_weight8(total: ptr<function, array<vec4<f32>, 32>>, first: u32, base: u32, o0: u32, r0: u32) {
    store_weight_row(base, o0 + first, r0, (*total)[first]);
    store_weight_row(base, o0 + first + 1u, r0, (*total)[first + 1u]);
    store_weight_row(base, o0 + first + 2u, r0, (*total)[first + 2u]);
    store_weight_row(base, o0 + first + 3u, r0, (*total)[first + 3u]);
    store_weight_row(base, o0 + first + 4u, r0, (*total)[first + 4u]);
    store_weight_row(base, o0 + first + 5u, r0, (*total)[first + 5u]);
    store_weight_row(base, o0 + first + 6u, r0, (*total)[first + 6u]);
    store_weight_row(base, o0 + first + 7u, r0, (*total)[first + 7u]);
}

@compute @workgroup_size(8)
fn conv2d_weight_grad_implicit(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(subgroup_invocation_id) lane: u32) {
    let taps = p.kernel_h * p.kernel_w;
    let rows = p.channels * taps;
    let r0 = gid.x * 4u;
    let o0 = wid.y * BLOCK;
    // The four rows' channel planes and window offsets; rows past the last repeat it.
    let r = min(vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(rows - 1u));
    let plane = vec4<i32>((r / taps) * p.height * p.width);
    let dh = vec4<i32>((r / p.kernel_w) % p.kernel_h * p.dilation_h) - vec4<i32>(i32(p.pad_h));
    let dw = vec4<i32>(r % p.kernel_w * p.dilation_w) - vec4<i32>(i32(p.pad_w));
    let spatial = p.out_height * p.out_width;
    let last = p.out_channels - 1u;
    let mine = vec4<u32>(min(o0 + lane % 8u, last), min(o0 + 8u + lane % 8u, last),
                         min(o0 + 16u + lane % 8u, last), min(o0 + 24u + lane % 8u, last)) * spatial;
    let height = vec4<i32>(i32(p.height));
    let width = vec4<i32>(i32(p.width));
    let steps = p.batch * spatial;
    let start = wid.z * p.chunk;
    let end = min(start + p.chunk, steps);
    var n = start / spatial;
    var oh = start % spatial / p.out_width;
    var ow = start % p.out_width;
    var total: array<vec4<f32>, 32>;
    var part: array<vec4<f32>, 32>;
    for (var step = start; step < end; step++) {
        let h = vec4<i32>(i32(oh * p.stride_h)) + dh;
        let w = vec4<i32>(i32(ow * p.stride_w)) + dw;
        let inside = (h >= vec4<i32>(0)) & (h < height) & (w >= vec4<i32>(0)) & (w < width);
        let at = max(vec4<i32>(i32(n * p.channels * p.height * p.width)) + plane + h * width + w, vec4<i32>(0));
        let x = vec4<f32>(select(0.0, src[at.x], inside.x), select(0.0, src[at.y], inside.y),
                          select(0.0, src[at.z], inside.z), select(0.0, src[at.w], inside.w));
        let q = n * p.out_channels * spatial + oh * p.out_width + ow;
        accumulate8(&part, 0u, out_grad[mine.x + q], x);
        accumulate8(&part, 8u, out_grad[mine.y + q], x);
        accumulate8(&part, 16u, out_grad[mine.z + q], x);
        accumulate8(&part, 24u, out_grad[mine.w + q], x);
        ow += 1u;
        if (ow == p.out_width) {
            ow = 0u;
            oh += 1u;
            if (oh == p.out_height) {
                oh = 0u;
                n += 1u;
                add8(&total, &part, 0u);
                add8(&total, &part, 8u);
                add8(&total, &part, 16u);
                add8(&total, &part, 24u);
                part = array<vec4<f32>, 32>();
            }
        }
    }
    add8(&total, &part, 0u);
    add8(&total, &part, 8u);
    add8(&total, &part, 16u);
    add8(&total, &part, 24u);
    if (r0 < rows) {
        let base = wid.z * p.out_channels * rows;
        store_weight8(&total, 0u, base, o0, r0);
        store_weight8(&total, 8u, base, o0, r0);
        store_weight8(&total, 16u, base, o0, r0);
        store_weight8(&total, 24u, base, o0, r0);
    }
}
