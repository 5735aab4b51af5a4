// 2-D max and average pooling over NCHW planes.
//
// max_pool2d: one invocation per output element; the window's first maximum (row-major
//   order, as PyTorch) and its position h·W + w within the input plane. Padding never wins.
// max_pool2d_backward: one invocation per input element, summing the output gradients whose
//   recorded position is this element, over the windows that can contain it: a gather, so
//   no atomics and the same result every run.
// max_pool2d_backward_disjoint: for windows that cannot overlap (stride ≥ kernel on both
//   axes, the tutorials' 2×2 pooling), one invocation per output writes every input of its
//   cell, its gradient at the recorded position and zeros elsewhere: a quarter of the
//   invocations for 2×2 windows and a quarter of the index arithmetic, whose integer
//   divisions are what the per-input kernel spends its time on under llvmpipe.
// avg_pool2d, avg_pool2d_backward: average pooling, with windows of two kinds along each
//   axis (size n, m outputs, output o):
//   - strided (ADAPTIVE false): [o·stride − pad, … + kernel), clipped to the input; the
//     divisor is kernel_h·kernel_w, padding included, as PyTorch's count_include_pad default;
//   - adaptive (ADAPTIVE true): [⌊o·n/m⌋, ⌈(o+1)·n/m⌉), divided by the window's size, as
//     AdaptiveAvgPool2d.
//   The forward sums each window in row-major order; the backward, per input element, sums
//   over the outputs whose windows contain it (each gradient over its window's divisor).

override ADAPTIVE: bool = false;
// max_pool2d: no padding, so every window lies inside the input and needs no bounds test.
override UNPADDED: bool = false;

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<i32>;
@group(0) @binding(4) var<storage, read> grad_out: array<f32>;
@group(0) @binding(5) var<storage, read> saved_indices: array<i32>;
@group(0) @binding(6) var<storage, read_write> grad_in: array<f32>;

// Output i's (plane, row, column), in two divisions where i / out_plane, i % out_plane /
// out_width and i % out_width take three: llvmpipe divides lane by lane.
fn output_position(i: u32) -> vec3<u32> {
    let row = i / p.out_width;
    let plane = row / p.out_height;
    return vec3<u32>(plane, row - plane * p.out_height, i - row * p.out_width);
}

@compute @workgroup_size(256)
fn max_pool2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    let out_plane = p.out_height * p.out_width;
    if (i >= p.planes * out_plane) {
        return;
    }
    let at_out = output_position(i);
    let base = at_out.x * p.height * p.width;
    var best = 0.0;
    var best_at = -1;
    let top = i32(at_out.y * p.stride_h) - i32(p.pad_h);
    let left = i32(at_out.z * p.stride_w) - i32(p.pad_w);
    let corner = top * i32(p.width) + left;
    // UNPADDED folds the bounds tests away: every window lies inside the input.
    for (var kh = 0; kh < i32(p.kernel_h); kh++) {
        if (!UNPADDED && (top + kh < 0 || top + kh >= i32(p.height))) {
            continue;
        }
        for (var kw = 0; kw < i32(p.kernel_w); kw++) {
            if (!UNPADDED && (left + kw < 0 || left + kw >= i32(p.width))) {
                continue;
            }
            let at = corner + kh * i32(p.width) + kw;
            let v = x[base + u32(at)];
            if (best_at < 0 || v > best) {
                best = v;
                best_at = at;
            }
        }
    }
    y[i] = best;
    indices[i] = best_at;
}

@compute @workgroup_size(256)
fn max_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    let in_plane = p.height * p.width;
    if (i >= p.planes * in_plane) {
        return;
    }
    let plane = i / in_plane;
    let at = i32(i % in_plane);
    let h = u32(at) / p.width + p.pad_h;
    let w = u32(at) % p.width + p.pad_w;
    // Windows oh with oh·stride ≤ h < oh·stride + kernel, likewise for ow.
    let oh_first = select(0u, (h - p.kernel_h) / p.stride_h + 1u, h >= p.kernel_h);
    let ow_first = select(0u, (w - p.kernel_w) / p.stride_w + 1u, w >= p.kernel_w);
    let oh_last = min(h / p.stride_h + 1u, p.out_height);
    let ow_last = min(w / p.stride_w + 1u, p.out_width);
    var total = 0.0;
    for (var oh = oh_first; oh < oh_last; oh++) {
        for (var ow = ow_first; ow < ow_last; ow++) {
            let o = (plane * p.out_height + oh) * p.out_width + ow;
            if (saved_indices[o] == at) {
                total += grad_out[o];
            }
        }
    }
    grad_in[i] = total;
}

// The inputs along an axis that output o's cell holds, [first, end): from its window's
// start to the next window's, the first cell from 0 and the last to the input's end, so
// that the cells tile the input. Needs stride ≥ kernel ≥ 2·pad (window o > 0 starts at or
// after 0; the last one starts inside the input).
fn cell(o: u32, count: u32, size: u32, stride: u32, pad: u32) -> vec2<u32> {
    let first = select(o * stride - pad, 0u, o == 0u);
    let end = select((o + 1u) * stride - pad, size, o + 1u == count);
    return vec2<u32>(first, min(end, size));
}

@compute @workgroup_size(256)
fn max_pool2d_backward_disjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let o = flat_index(wid, nwg, lid, 256u);
    let out_plane = p.out_height * p.out_width;
    if (o >= p.planes * out_plane) {
        return;
    }
    let at_out = output_position(o);
    let rows = cell(at_out.y, p.out_height, p.height, p.stride_h, p.pad_h);
    let cols = cell(at_out.z, p.out_width, p.width, p.stride_w, p.pad_w);
    let at = saved_indices[o];
    let g = grad_out[o];
    let base = at_out.x * p.height * p.width;
    for (var h = rows.x; h < rows.y; h++) {
        for (var w = cols.x; w < cols.y; w++) {
            let e = h * p.width + w;
            grad_in[base + e] = select(0.0, g, i32(e) == at);
        }
    }
}

// Output o's window along an axis of `size` with `count` outputs: [first, end) in the
// unpadded input (as i32, before clipping), and the divisor's factor for this axis.
fn window(o: u32, size: u32, count: u32, kernel: u32, stride: u32, pad: u32) -> vec3<i32> {
    if (ADAPTIVE) {
        let first = o * size / count;
        let end = ((o + 1u) * size + count - 1u) / count;
        return vec3<i32>(i32(first), i32(end), i32(end - first));
    }
    let first = i32(o * stride) - i32(pad);
    return vec3<i32>(first, first + i32(kernel), i32(kernel));
}

// The outputs whose windows contain input position i along an axis: [first, end).
fn covering(i: u32, size: u32, count: u32, kernel: u32, stride: u32, pad: u32) -> vec2<u32> {
    if (ADAPTIVE) {
        return vec2<u32>(i * count / size, ((i + 1u) * count + size - 1u) / size);
    }
    let at = i + pad;
    let first = select(0u, (at - kernel) / stride + 1u, at >= kernel);
    return vec2<u32>(first, min(at / stride + 1u, count));
}

@compute @workgroup_size(256)
fn avg_pool2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid, 256u);
    let out_plane = p.out_height * p.out_width;
    if (e >= p.planes * out_plane) {
        return;
    }
    let plane = e / out_plane;
    let rows = window((e % out_plane) / p.out_width, p.height, p.out_height, p.kernel_h, p.stride_h, p.pad_h);
    let cols = window(e % p.out_width, p.width, p.out_width, p.kernel_w, p.stride_w, p.pad_w);
    let base = plane * p.height * p.width;
    var total = 0.0;
    for (var h = max(rows.x, 0); h < min(rows.y, i32(p.height)); h++) {
        for (var w = max(cols.x, 0); w < min(cols.y, i32(p.width)); w++) {
            total += x[base + u32(h) * p.width + u32(w)];
        }
    }
    y[e] = total / f32(rows.z * cols.z);
}

@compute @workgroup_size(256)
fn avg_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid, 256u);
    let in_plane = p.height * p.width;
    if (e >= p.planes * in_plane) {
        return;
    }
    let plane = e / in_plane;
    let h = (e % in_plane) / p.width;
    let w = e % p.width;
    let oh = covering(h, p.height, p.out_height, p.kernel_h, p.stride_h, p.pad_h);
    let ow = covering(w, p.width, p.out_width, p.kernel_w, p.stride_w, p.pad_w);
    var total = 0.0;
    for (var i = oh.x; i < oh.y; i++) {
        let rows = window(i, p.height, p.out_height, p.kernel_h, p.stride_h, p.pad_h).z;
        for (var j = ow.x; j < ow.y; j++) {
            let cols = window(j, p.width, p.out_width, p.kernel_w, p.stride_w, p.pad_w).z;
            total += grad_out[(plane * p.out_height + i) * p.out_width + j] / f32(rows * cols);
        }
    }
    grad_in[e] = total;
}
