// Elementwise maps of one tensor, and of a tensor with a scalar. OP is fixed per pipeline,
// so the switch folds away when the pipeline is compiled. `accumulate` adds scalar · x to y
// in place (a running sum).

override OP: u32;

struct Params {
    len: u32,
    scalar: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn apply(v: f32, s: f32) -> f32 {
    switch OP {
        case 0u: { return -v; }
        case 1u: { return abs(v); }
        case 2u: { return exp(v); }
        case 3u: { return log(v); }
        case 4u: { return sqrt(v); }
        case 5u: { return max(v, 0.0); }
        // Split by sign so exp never overflows.
        case 6u: { if (v >= 0.0) { return 1.0 / (1.0 + exp(-v)); } let e = exp(v); return e / (1.0 + e); }
        case 7u: { return tanh(v); }
        case 8u: { return v * v; }
        case 9u: { return 1.0 / v; }
        case 10u: { return v + s; }
        case 11u: { return v * s; }
        case 12u: { return pow(v, s); }
        case 13u: { return max(v, s); }
        case 14u: { return min(v, s); }
        case 15u: { return s - v; }
        default: { return v; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i < p.len) {
        y[i] = apply(x[i], p.scalar);
    }
}

@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i < p.len) {
        y[i] += p.scalar * x[i];
    }
}
