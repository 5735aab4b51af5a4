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
