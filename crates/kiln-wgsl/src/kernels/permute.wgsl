// Gathers a strided view into a contiguous buffer: transpose, permute and broadcast-expand
// are all this one kernel with different source strides. Works on 32-bit words, so f32 and
// i32 tensors share it.

struct Params {
    len: u32,
    rank: u32,
    shape: array<vec4<u32>, 2>,
    src_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn gather_strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    var rest = i;
    var si = 0u;
    for (var d = p.rank; d > 0u; d--) {
        let k = d - 1u;
        let size = p.shape[k / 4u][k % 4u];
        si += (rest % size) * p.src_strides[k / 4u][k % 4u];
        rest = rest / size;
    }
    dst[i] = src[si];
}
