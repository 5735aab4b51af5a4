// softmax / log_softmax over one axis of a tensor viewed as [outer, n, inner]: one invocation
// per lane, in three passes over it (max, sum of exponentials, outputs), so every lane is
// computed in the same order on every run and exp never overflows.

override LOG: bool;

struct Params {
    outer: u32,
    n: u32,
    inner: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let lane = flat_index(wid, nwg, lid, 256u);
    if (lane >= p.outer * p.inner || p.n == 0u) {
        return;
    }
    let base = (lane / p.inner) * p.n * p.inner + lane % p.inner;
    var top = x[base];
    for (var k = 1u; k < p.n; k++) {
        top = max(top, x[base + k * p.inner]);
    }
    var total = 0.0;
    for (var k = 0u; k < p.n; k++) {
        total += exp(x[base + k * p.inner] - top);
    }
    let log_total = log(total);
    for (var k = 0u; k < p.n; k++) {
        let shifted = x[base + k * p.inner] - top;
        if (LOG) {
            y[base + k * p.inner] = shifted - log_total;
        } else {
            y[base + k * p.inner] = exp(shifted) / total;
        }
    }
}
