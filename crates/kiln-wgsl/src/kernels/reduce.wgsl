// Reductions over one axis of a tensor viewed as [outer, n, inner]. No atomics: every output
// is combined in a fixed order, so results are the same on every run.
//
// reduce_serial: one invocation per output walks the axis; reads are coalesced across
//                neighbouring outputs when inner > 1.
// reduce_tree:   one workgroup per output, strided partials then a tree in workgroup
//                memory; for long contiguous axes (inner == 1) with few outputs.
//
// OP: 0 sum, 1 mean, 2 max, 3 argmax (first index of the maximum, as PyTorch).
// Results are written as 32-bit words: f32 bits, or the index for argmax.

override OP: u32;

struct Params {
    outer: u32,
    n: u32,
    inner: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

// Marks a partial that has seen no element yet.
const EMPTY: u32 = 0xffffffffu;

struct Partial {
    value: f32,
    index: u32,
}

fn start() -> Partial {
    return Partial(0.0, EMPTY);
}

fn combine(acc: Partial, value: f32, index: u32) -> Partial {
    if (OP <= 1u) {
        return Partial(acc.value + value, index);
    }
    if (index == EMPTY) {
        return acc;
    }
    if (acc.index == EMPTY || value > acc.value || (value == acc.value && index < acc.index)) {
        return Partial(value, index);
    }
    return acc;
}

fn finish(acc: Partial) -> u32 {
    switch OP {
        case 1u: { return bitcast<u32>(acc.value / f32(p.n)); }
        case 3u: { return acc.index; }
        default: { return bitcast<u32>(acc.value); }
    }
}

@compute @workgroup_size(256)
fn reduce_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let o = flat_index(wid, nwg, lid, 256u);
    if (o >= p.outer * p.inner) {
        return;
    }
    let base = (o / p.inner) * p.n * p.inner + o % p.inner;
    var acc = start();
    for (var k = 0u; k < p.n; k++) {
        acc = combine(acc, x[base + k * p.inner], k);
    }
    out[o] = finish(acc);
}

var<workgroup> partial_values: array<f32, 256>;
var<workgroup> partial_indices: array<u32, 256>;

@compute @workgroup_size(256)
fn reduce_tree(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let o = wid.y * nwg.x + wid.x;
    if (o >= p.outer * p.inner) {
        return;
    }
    let base = (o / p.inner) * p.n * p.inner + o % p.inner;
    var acc = start();
    for (var k = lid; k < p.n; k += 256u) {
        acc = combine(acc, x[base + k * p.inner], k);
    }
    partial_values[lid] = acc.value;
    partial_indices[lid] = acc.index;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let mine = Partial(partial_values[lid], partial_indices[lid]);
            let merged = combine(mine, partial_values[lid + stride], partial_indices[lid + stride]);
            partial_values[lid] = merged.value;
            partial_indices[lid] = merged.index;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[o] = finish(Partial(partial_values[0], partial_indices[0]));
    }
}
