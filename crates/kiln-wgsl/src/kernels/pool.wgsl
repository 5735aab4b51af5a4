// 2-D max pooling over NCHW planes.
//
// max_pool2d: one invocation per output element; the window's first maximum (row-major
//   order, as PyTorch) and its position h·W + w within the input plane. Padding never wins.
// max_pool2d_backward: one invocation per input element, summing the output gradients whose
//   recorded position is this element, over the windows that can contain it: a gather, so
//   no atomics and the same result every run.

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

@compute @workgroup_size(256)
fn max_pool2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    let out_plane = p.out_height * p.out_width;
    if (i >= p.planes * out_plane) {
        return;
    }
    let plane = i / out_plane;
    let oh = (i % out_plane) / p.out_width;
    let ow = i % p.out_width;
    let base = plane * p.height * p.width;
    var best = 0.0;
    var best_at = -1;
    for (var kh = 0u; kh < p.kernel_h; kh++) {
        let h = i32(oh * p.stride_h + kh) - i32(p.pad_h);
        if (h < 0 || h >= i32(p.height)) {
            continue;
        }
        for (var kw = 0u; kw < p.kernel_w; kw++) {
            let w = i32(ow * p.stride_w + kw) - i32(p.pad_w);
            if (w < 0 || w >= i32(p.width)) {
                continue;
            }
            let at = h * i32(p.width) + w;
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
