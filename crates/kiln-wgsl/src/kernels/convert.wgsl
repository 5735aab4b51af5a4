// Element type conversions to f32. SOURCE: 0 u8 (packed four to a word), 1 i32.

override SOURCE: u32;

struct Params {
    len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    if (SOURCE == 0u) {
        dst[i] = f32((src[i / 4u] >> (8u * (i % 4u))) & 0xffu);
    } else {
        dst[i] = f32(bitcast<i32>(src[i]));
    }
}
