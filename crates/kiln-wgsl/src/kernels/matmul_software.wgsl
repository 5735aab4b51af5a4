// Batched matrix product C[b] = op(A[b]) · op(B[b]) for software adapters (llvmpipe); the
// same problem, parameters and epilogue as matmul.wgsl, whose comments say what they mean.
//
// Each invocation computes 32 rows × 4 consecutive columns of C in registers, with no
// workgroup memory and no barriers (on llvmpipe both cost like the storage loads they would
// save; see `KernelClass` in context.rs). At each k, lane l of a subgroup loads A at rows
// l, l + 8, l + 16 and l + 24 of the block and subgroupBroadcast shares them, so a step is
// 4 loads of A and 4 of B for 128 multiply-adds. Every invocation runs the whole loop
// (subgroup operations need all lanes); those past C only skip the store.

override TRANS_A: bool;
override TRANS_B: bool;
override BIAS: u32;
override RELU: bool;
override SUM_BATCH: bool;
// Invocations per workgroup, 64 or 8 (one subgroup): see `software_workgroup` in matmul.rs.
override WORKGROUP: u32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    batch: u32,
    per_group: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const ROWS: u32 = 32u;

// Row `row` of C from column col0: the epilogue, then the stores that fall inside C.
fn store_row(c_base: u32, row: u32, col0: u32, sum: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    var v = sum;
    for (var j = 0u; j < 4u; j++) {
        if (BIAS == 1u) {
            v[j] += bias[min(col0 + j, p.n - 1u)];
        } else if (BIAS == 2u) {
            v[j] += bias[row];
        }
    }
    if (RELU) {
        v = max(v, vec4<f32>(0.0));
    }
    for (var j = 0u; j < min(p.n - col0, 4u); j++) {
        c[c_base + row * p.n + col0 + j] = v[j];
    }
}

fn store8(total: ptr<function, array<vec4<f32>, 32>>, first: u32, c_base: u32, row0: u32, col0: u32) {
    store_row(c_base, row0 + first, col0, (*total)[first]);
    store_row(c_base, row0 + first + 1u, col0, (*total)[first + 1u]);
    store_row(c_base, row0 + first + 2u, col0, (*total)[first + 2u]);
    store_row(c_base, row0 + first + 3u, col0, (*total)[first + 3u]);
    store_row(c_base, row0 + first + 4u, col0, (*total)[first + 4u]);
    store_row(c_base, row0 + first + 5u, col0, (*total)[first + 5u]);
    store_row(c_base, row0 + first + 6u, col0, (*total)[first + 6u]);
    store_row(c_base, row0 + first + 7u, col0, (*total)[first + 7u]);
}

// Grid: x over quads of columns (WORKGROUP per workgroup), y over blocks of 32 rows, z over the
// batch (SUM_BATCH: over groups of `per_group` entries).
@compute @workgroup_size(WORKGROUP)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
          @builtin(subgroup_invocation_id) lane: u32) {
    let quads = (p.n + 3u) / 4u;
    let quad = wid.x * WORKGROUP + lid;
    let col0 = min(quad, quads - 1u) * 4u;
    let row0 = wid.y * ROWS;
    var first = wid.z;
    var last = wid.z + 1u;
    if (SUM_BATCH) {
        first = wid.z * p.per_group;
        last = min(first + p.per_group, p.batch);
    }
    // This lane's rows of A and the invocation's columns of B; those past the edge repeat
    // the last (never stored).
    let rows = min(vec4<u32>(row0 + lane % 8u) + vec4<u32>(0u, 8u, 16u, 24u), vec4<u32>(p.m - 1u));
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    // Where A(rows, k) and B(k, cols) are at k = 0, and how far each moves per k.
    var a_at = rows * p.k;
    var a_step = 1u;
    if (TRANS_A) {
        a_at = rows;
        a_step = p.m;
    }
    var b_at = cols;
    var b_step = p.n;
    if (TRANS_B) {
        b_at = cols * p.k;
        b_step = 1u;
    }
    var total: array<vec4<f32>, 32>;
    for (var entry = first; entry < last; entry++) {
        var part: array<vec4<f32>, 32>;
        let a_entry = a_at + vec4<u32>(entry * p.a_batch_stride);
        let b_entry = b_at + vec4<u32>(entry * p.b_batch_stride);
        for (var kk = 0u; kk < p.k; kk++) {
            let ai = a_entry + vec4<u32>(kk * a_step);
            let bi = b_entry + vec4<u32>(kk * b_step);
            let row = vec4<f32>(b[bi.x], b[bi.y], b[bi.z], b[bi.w]);
            accumulate8(&part, 0u, a[ai.x], row);
            accumulate8(&part, 8u, a[ai.y], row);
            accumulate8(&part, 16u, a[ai.z], row);
            accumulate8(&part, 24u, a[ai.w], row);
        }
        add8(&total, &part, 0u);
        add8(&total, &part, 8u);
        add8(&total, &part, 16u);
        add8(&total, &part, 24u);
    }
    if (quad < quads) {
        let c_base = wid.z * p.c_batch_stride;
        store8(&total, 0u, c_base, row0, col0);
        store8(&total, 8u, c_base, row0, col0);
        store8(&total, 16u, c_base, row0, col0);
        store8(&total, 24u, c_base, row0, col0);
    }
}
