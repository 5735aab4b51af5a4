// gather_rows: output row r is input row index[r], for rows of any byte length. Moving bytes
// lets one kernel serve u8 images as well as f32 and i32 rows. Each invocation assembles one
// 32-bit output word from four bytes.
// gather_rows_to_f32: the same picking of byte rows, each byte then written as an f32 times
// `scale`: a batch of images drawn from a byte dataset, ready for a model, in one launch.

struct Params {
    out_bytes: u32,
    row_bytes: u32,
    // gather_rows_to_f32 only.
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

fn source_byte(out_byte: u32) -> u32 {
    let row = out_byte / p.row_bytes;
    let at = index[row] * p.row_bytes + out_byte % p.row_bytes;
    return (src[at / 4u] >> (8u * (at % 4u))) & 0xffu;
}

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let word = flat_index(wid, nwg, lid, 256u);
    let first = word * 4u;
    if (first >= p.out_bytes) {
        return;
    }
    var packed = 0u;
    for (var b = 0u; b < min(4u, p.out_bytes - first); b++) {
        packed |= source_byte(first + b) << (8u * b);
    }
    dst[word] = packed;
}

@compute @workgroup_size(256)
fn gather_rows_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.out_bytes) {
        return;
    }
    dst[i] = bitcast<u32>(f32(source_byte(i)) * p.scale);
}
