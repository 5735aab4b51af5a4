// Inverted dropout with a counter-based mask: element i is kept when the top 24 bits of
// hash(seed, i) reach `threshold` (= p·2²⁴), and kept elements are multiplied by `scale`
// (= 1/(1−p)). The hash is integer-only, so kiln_wgsl::kernels::dropout::keeps gives the same
// mask on the host, and the backward pass is the same op applied to the gradient.

struct Params {
    len: u32,
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A 32-bit integer mixer (xor-shift-multiply), as in kiln_wgsl::kernels::dropout::mix.
fn mix(v: u32) -> u32 {
    var h = v;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    let h = mix(i ^ mix(p.seed_lo ^ mix(p.seed_hi)));
    y[i] = select(0.0, x[i] * p.scale, (h >> 8u) >= p.threshold);
}
