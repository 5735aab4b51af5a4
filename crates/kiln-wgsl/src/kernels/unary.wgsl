// Elementwise maps of one tensor, and of a tensor with a scalar. OP is fixed per pipeline,
// so the switch folds away when the pipeline is compiled. That switch, `apply(v, s)`, is
// appended from the op table in unary.rs. `accumulate` adds scalar · x to y in place (a
// running sum).

override OP: u32;

struct Params {
    len: u32,
    scalar: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// The error function, which WGSL lacks: Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7 (3.5e-7
// in f32), the formula of unary.rs's host `erf`.
fn erf(v: f32) -> f32 {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-z * z));
}

// tanh(√(2/π)·(v + 0.044715·v³)), the inner part of GELU's tanh approximation.
fn gelu_tanh_inner(v: f32) -> f32 {
    return tanh(0.7978845608 * (v + 0.044715 * v * v * v));
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
