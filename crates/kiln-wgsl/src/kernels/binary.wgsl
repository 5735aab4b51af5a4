// Elementwise ops of two tensors with NumPy broadcasting. Each operand is addressed through
// its own strides over the output's shape; a broadcast dimension has stride 0. The op's
// `apply(x, y)` switch is appended from the op table in binary.rs.

override OP: u32;
// Both operands are contiguous and have the output's shape: skip the index arithmetic.
override SAME_SHAPE: bool;

// Shapes and strides travel as vec4s: uniform arrays need 16-byte element strides.
struct Params {
    len: u32,
    rank: u32,
    shape: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    if (SAME_SHAPE) {
        out[i] = apply(a[i], b[i]);
        return;
    }
    var rest = i;
    var ai = 0u;
    var bi = 0u;
    for (var d = p.rank; d > 0u; d--) {
        let k = d - 1u;
        let size = p.shape[k / 4u][k % 4u];
        let coord = rest % size;
        rest = rest / size;
        ai += coord * p.a_strides[k / 4u][k % 4u];
        bi += coord * p.b_strides[k / 4u][k % 4u];
    }
    out[i] = apply(a[ai], b[bi]);
}
