// Batched matrix product C[b] = op(A[b]) · op(B[b]), op optionally a transpose, all row-major.
//
// Each 16×16 workgroup computes a 64×64 tile of C; each invocation a 4×4 block of it, held
// in registers as four vec4 rows. The K dimension is walked in slices of 16: the workgroup
// stages a 64×16 slice of A and a 16×64 slice of B in workgroup memory, k-major and packed
// as vec4, so the inner loop is two vec4 loads and four vec4 multiply-adds.
//
// Global reads are coalesced along each operand's contiguous dimension whichever way it is
// stored. Where that dimension and the batch stride are multiples of 4 (VEC_A / VEC_B), a
// read is one vec4 load; otherwise four scalar loads with bounds checks.
//
// Epilogue, applied to each result as it is stored: a bias (BIAS 1: one per column, a linear
// layer's; BIAS 2: one per row, a convolution's output channels) and then a ReLU. SUM_BATCH
// computes Σ_b op(A[b])·op(B[b]) over `per_group` consecutive entries per z-slice of the
// grid (a convolution's weight gradient over the images), walking them in order, so the
// sums are deterministic; the launcher adds the slices' partial sums when there are several.

override TRANS_A: bool; // A is stored K×M
override TRANS_B: bool; // B is stored N×K
override VEC_A: bool;
override VEC_B: bool;
override VEC_C: bool;   // N and C's batch stride are multiples of 4
override BIAS: u32;     // 0 none, 1 per column, 2 per row
override RELU: bool;
override SUM_BATCH: bool;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    batch: u32,
    // SUM_BATCH: the batch entries each z-slice of the grid sums.
    per_group: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

// tile_a[k * 16 + m / 4][m % 4] = A(row0 + m, k0 + k); tile_b likewise with n.
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 256>;

// Four consecutive elements from `start`, of which only the first `avail` exist.
fn quad_a(start: u32, avail: u32) -> vec4<f32> {
    if (VEC_A && avail >= 4u) {
        return a[start / 4u];
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < min(avail, 4u); j++) {
        let e = start + j;
        v[j] = a[e / 4u][e % 4u];
    }
    return v;
}

fn quad_b(start: u32, avail: u32) -> vec4<f32> {
    if (VEC_B && avail >= 4u) {
        return b[start / 4u];
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < min(avail, 4u); j++) {
        let e = start + j;
        v[j] = b[e / 4u][e % 4u];
    }
    return v;
}

// How many of the 4 elements from `pos` along a dimension of `size` exist, or 0 when the
// other coordinate is already out of range.
fn available(pos: u32, size: u32, other_in_range: bool) -> u32 {
    if (!other_in_range || pos >= size) {
        return 0u;
    }
    return size - pos;
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
          @builtin(local_invocation_index) t: u32) {
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    var first = wid.z;
    var last = wid.z + 1u;
    if (SUM_BATCH) {
        first = wid.z * p.per_group;
        last = min(first + p.per_group, p.batch);
    }
    let c_base = wid.z * p.c_batch_stride;

    // Each entry's product is summed over K on its own and then added to the total, as the
    // per-entry products would be: one accumulator over the whole batch would round far more.
    var total: array<vec4<f32>, 4>;
    for (var entry = first; entry < last; entry++) {
        let a_base = entry * p.a_batch_stride;
        let b_base = entry * p.b_batch_stride;
        var acc: array<vec4<f32>, 4>;
        for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
            if (TRANS_A) {
                // Stored [k][m]: each invocation reads 4 consecutive m of one k.
                let kk = t / 16u;
                let mq = (t % 16u) * 4u;
                let gk = k0 + kk;
                let gm = row0 + mq;
                tile_a[kk * 16u + mq / 4u] = quad_a(a_base + gk * p.m + gm, available(gm, p.m, gk < p.k));
            } else {
                // Stored [m][k]: each invocation reads 4 consecutive k of one m.
                let mm = t / 4u;
                let kq = (t % 4u) * 4u;
                let gm = row0 + mm;
                let gk = k0 + kq;
                let v = quad_a(a_base + gm * p.k + gk, available(gk, p.k, gm < p.m));
                for (var j = 0u; j < 4u; j++) {
                    tile_a[(kq + j) * 16u + mm / 4u][mm % 4u] = v[j];
                }
            }
            if (TRANS_B) {
                // Stored [n][k]: 4 consecutive k of one n.
                let nn = t / 4u;
                let kq = (t % 4u) * 4u;
                let gn = col0 + nn;
                let gk = k0 + kq;
                let v = quad_b(b_base + gn * p.k + gk, available(gk, p.k, gn < p.n));
                for (var j = 0u; j < 4u; j++) {
                    tile_b[(kq + j) * 16u + nn / 4u][nn % 4u] = v[j];
                }
            } else {
                // Stored [k][n]: 4 consecutive n of one k.
                let kk = t / 16u;
                let nq = (t % 16u) * 4u;
                let gk = k0 + kk;
                let gn = col0 + nq;
                tile_b[kk * 16u + nq / 4u] = quad_b(b_base + gk * p.n + gn, available(gn, p.n, gk < p.k));
            }
            workgroupBarrier();
            for (var kk = 0u; kk < TILE_K; kk++) {
                let av = tile_a[kk * 16u + local.y];
                let bv = tile_b[kk * 16u + local.x];
                acc[0] += av.x * bv;
                acc[1] += av.y * bv;
                acc[2] += av.z * bv;
                acc[3] += av.w * bv;
            }
            workgroupBarrier();
        }
        for (var i = 0u; i < 4u; i++) {
            total[i] += acc[i];
        }
    }

    let col = col0 + local.x * 4u;
    if (col >= p.n) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y * 4u + i;
        if (row >= p.m) {
            return;
        }
        let start = c_base + row * p.n + col;
        var v = total[i];
        if (BIAS == 1u) {
            for (var j = 0u; j < 4u; j++) {
                v[j] += bias[min(col + j, p.n - 1u)];
            }
        } else if (BIAS == 2u) {
            v += vec4<f32>(bias[row]);
        }
        if (RELU) {
            v = max(v, vec4<f32>(0.0));
        }
        if (VEC_C && col + 4u <= p.n) {
            c[start / 4u] = v;
        } else {
            for (var j = 0u; j < min(p.n - col, 4u); j++) {
                let e = start + j;
                c[e / 4u][e % 4u] = v[j];
            }
        }
    }
}
