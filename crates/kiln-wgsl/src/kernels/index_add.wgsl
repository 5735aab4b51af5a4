// Values picked along one axis by an index, and the gradient of that: torch.gather and the
// sum a gathered gradient returns to its sources. Shapes are [outer, along, inner]: the
// gathered side has `along` entries on the axis, the source side `extent`. The index holds
// one u32 per gathered element, or per (outer, along) when `index_inner` is 1 (a row index
// shared by the whole row, as index_select's).

struct Params {
    outer: u32,
    along: u32,
    extent: u32,
    inner: u32,
    index_inner: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn index_at(o: u32, j: u32, i: u32) -> u32 {
    return index[(o * p.along + j) * p.index_inner + i % p.index_inner];
}

// dst[o, j, i] = src[o, index[o, j, i], i]; dst has outer·along·inner elements. An index
// out of range gives NaN: the host cannot check an index that lives on the GPU without
// waiting for it, and NaN makes the fault show in the loss.
@compute @workgroup_size(256)
fn gather_axis(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid, 256u);
    if (e >= p.outer * p.along * p.inner) {
        return;
    }
    let i = e % p.inner;
    let j = e / p.inner % p.along;
    let o = e / (p.inner * p.along);
    let k = index_at(o, j, i);
    if (k >= p.extent) {
        dst[e] = bitcast<f32>(0x7fc00000u);
        return;
    }
    dst[e] = src[(o * p.extent + k) * p.inner + i];
}

// dst[o, k, i] = Σ_j [index[o, j, i] = k] src[o, j, i], in order of j: each source element
// sums the gradients that were gathered from it, without atomics, so the sums are
// deterministic. dst has outer·extent·inner elements.
@compute @workgroup_size(256)
fn add_at_index(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid, 256u);
    if (e >= p.outer * p.extent * p.inner) {
        return;
    }
    let i = e % p.inner;
    let k = e / p.inner % p.extent;
    let o = e / (p.inner * p.extent);
    var sum = 0.0;
    for (var j = 0u; j < p.along; j++) {
        if (index_at(o, j, i) == k) {
            sum += src[(o * p.along + j) * p.inner + i];
        }
    }
    dst[e] = sum;
}
