// Copies between a contiguous buffer and a strided view of another: gather_strided reads the
// view (transpose, permute, broadcast-expand and narrow are all it, with different strides
// and offsets), scatter_strided writes into it (one input of a concatenation into its slab).
// Works on 32-bit words, so f32 and i32 tensors share it.

struct Params {
    len: u32,
    rank: u32,
    // Where the view starts in the strided buffer.
    offset: u32,
    shape: array<vec4<u32>, 2>,
    strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// Element i of the contiguous side, as a position in the strided view.
fn strided_at(i: u32) -> u32 {
    var rest = i;
    var at = p.offset;
    for (var d = p.rank; d > 0u; d--) {
        let k = d - 1u;
        let size = p.shape[k / 4u][k % 4u];
        at += (rest % size) * p.strides[k / 4u][k % 4u];
        rest = rest / size;
    }
    return at;
}

@compute @workgroup_size(256)
fn gather_strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    dst[i] = src[strided_at(i)];
}

@compute @workgroup_size(256)
fn scatter_strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    dst[strided_at(i)] = src[i];
}
