// Convolution (NCHW) as an implicit matrix product in workgroup tiles, for the portable
// kernel class (hardware GPUs): the column matrix that im2col would store is read from its
// source as each tile of it is staged, so it is never written to memory.
//
// Each workgroup of 256 invocations computes a TILE_M × TILE_N tile of a product C = A·B,
// each invocation a 4×4 block of it held in registers as four vec4 rows; K is walked in
// slices of 16, both operands' slices staged in workgroup memory. A tile is 64 × 64, or
// 32 × 128 for products of at most 32 rows (few channels), so that few rows do not leave
// half of each tile idle. With P = C·KH·KW (a window) and S = OH·OW, PRODUCT picks
//   0, the convolution:  out [O × batch·S] = weight [O × P] · cols(x) [P × batch·S],
//                        bias per row and a ReLU as each result is stored; its columns
//                        run over every image's pixels, so that small images do not
//                        leave a tile mostly empty, and are stored as NCHW has them;
//   1, input gradient:   the convolution of the output gradient, spread out by the
//                        stride, with the weight turned by 180° and its two channel axes
//                        swapped (the parameters say so, conv.rs), that weight read from
//                        the forward one as it is staged;
//   2, weight gradient:  dw [O × P] = grad [O × batch·S] · cols(x)ᵀ [batch·S × P], each
//                        z-slice of the grid summing `chunk` consecutive k into a partial
//                        of its own, added in order by the launcher.
// Each product's k runs in order, so the sums are deterministic.

override PRODUCT: u32;
override HAS_BIAS: bool;
override RELU: bool;
// Whether spread_h or spread_w exceeds 1: specialised, as the test divides.
override SPREAD: bool;
override TILE_M: u32; // 64 or 32

// The weight (the forward one for PRODUCT 1), or for PRODUCT 2 the output gradient.
@group(0) @binding(1) var<storage, read> a_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// The input.
@group(0) @binding(3) var<storage, read> b_src: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const SLICE: u32 = 16u;
const INVOCATIONS: u32 = 256u;

// tile_a[k * TILE_M / 4 + m / 4][m % 4] = A(row0 + m, k0 + k); tile_b likewise with n.
// Sized for the larger of the two shapes: 16 × 64 and 16 × 128.
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 512>;

fn tile_n() -> u32 {
    return 4096u / TILE_M;
}

// (M, N, K) of the product.
fn dims() -> vec3<u32> {
    let window = p.channels * p.kernel_h * p.kernel_w;
    let pixels = p.out_height * p.out_width;
    if (PRODUCT == 2u) {
        return vec3<u32>(p.out_channels, window, p.batch * pixels);
    }
    return vec3<u32>(p.out_channels, p.batch * pixels, window);
}

// Divisions by run-time sizes are dear (a GPU emulates them in a dozen instructions,
// llvmpipe runs them lane by lane), so each invocation decodes the operand positions it
// stages once, before the walk over K, and steps them along by SLICE after each slice.

// Window entry (c, kh, kw) of the kernel and pixel (n, y, x) of an image: the positions
// that K and the columns run over.
fn tap_of(q: u32) -> vec3<u32> {
    let taps = p.kernel_h * p.kernel_w;
    return vec3<u32>(q / taps, (q % taps) / p.kernel_w, q % p.kernel_w);
}

fn pixel_of(i: u32, height: u32, width: u32) -> vec3<u32> {
    let plane = height * width;
    let r = i % plane;
    return vec3<u32>(i / plane, r / width, r % width);
}

// `at` (outer, middle, inner) stepped on by `by` along a mixed radix (…, middle, inner).
fn step(at: vec3<u32>, by: u32, middle: u32, inner: u32) -> vec3<u32> {
    var u = at;
    u.z += by;
    while (u.z >= inner) {
        u.z -= inner;
        u.y += 1u;
        if (u.y == middle) {
            u.y = 0u;
            u.x += 1u;
        }
    }
    return u;
}

// The input under window entry `tap` at output pixel `px`, 0 over the padding and, when
// spread, between the input's elements: an element of the column matrix.
fn column(tap: vec3<u32>, px: vec3<u32>) -> f32 {
    // A negative padding (an input gradient's) travels as its two's complement.
    var h = i32(px.y * p.stride_h + tap.y * p.dilation_h) - i32(p.pad_h);
    var w = i32(px.z * p.stride_w + tap.z * p.dilation_w) - i32(p.pad_w);
    if (h < 0 || w < 0) {
        return 0.0;
    }
    if (SPREAD) {
        let sh = i32(p.spread_h);
        let sw = i32(p.spread_w);
        if (h % sh != 0 || w % sw != 0) {
            return 0.0;
        }
        h /= sh;
        w /= sw;
    }
    if (h >= i32(p.height) || w >= i32(p.width)) {
        return 0.0;
    }
    return b_src[((px.x * p.channels + tap.x) * p.height + u32(h)) * p.width + u32(w)];
}

// One quad of B an invocation stages every slice: four consecutive columns of one k. The
// convolution's columns are pixels, decoded once, and its k a tap, stepped along; the
// weight gradient's the other way round.
struct QuadB {
    fixed: array<vec3<u32>, 4>,
    count: u32, // how many of the four columns exist
    k: u32,
    at: vec3<u32>,
}

fn quad_b(k: u32, col: u32, size: vec3<u32>) -> QuadB {
    var q: QuadB;
    q.k = k;
    q.count = min(size.y - min(col, size.y), 4u);
    if (PRODUCT == 2u) {
        q.at = pixel_of(k, p.out_height, p.out_width);
        var tap = tap_of(col);
        for (var j = 0u; j < 4u; j++) {
            q.fixed[j] = tap;
            tap = step(tap, 1u, p.kernel_h, p.kernel_w);
        }
    } else {
        q.at = tap_of(k);
        var px = pixel_of(col, p.out_height, p.out_width);
        for (var j = 0u; j < 4u; j++) {
            q.fixed[j] = px;
            px = step(px, 1u, p.out_height, p.out_width);
        }
    }
    return q;
}

fn stage_b(q: QuadB, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (q.k >= k_end) {
        return v;
    }
    // Loops of a constant count, here and below, so that a compiler can unroll them and
    // keep the quads in registers.
    for (var j = 0u; j < 4u; j++) {
        if (j < q.count) {
            if (PRODUCT == 2u) {
                v[j] = column(q.fixed[j], q.at);
            } else {
                v[j] = column(q.at, q.fixed[j]);
            }
        }
    }
    return v;
}

fn next_slice_b(q: QuadB) -> QuadB {
    var u = q;
    u.k += SLICE;
    if (PRODUCT == 2u) {
        u.at = step(q.at, SLICE, p.out_height, p.out_width);
    } else {
        u.at = step(q.at, SLICE, p.kernel_h, p.kernel_w);
    }
    return u;
}

// One quad of A an invocation stages every slice: four consecutive k of one row. The
// forward weight is read as stored; the others step their k along as (outer, inner):
// (output channel of the forward weight, tap) for the input gradient, (image, pixel) of
// the output gradient for the weight gradient.
struct QuadA {
    row: u32,
    k: u32,
    at: vec2<u32>,
}

// Inner positions per outer one.
fn a_period() -> u32 {
    if (PRODUCT == 1u) {
        return p.kernel_h * p.kernel_w;
    }
    return p.out_height * p.out_width;
}

fn quad_a(row: u32, k: u32) -> QuadA {
    let inner = a_period();
    return QuadA(row, k, vec2<u32>(k / inner, k % inner));
}

fn stage_a(q: QuadA, k_end: u32, size: vec3<u32>) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (q.row >= size.x) {
        return v;
    }
    if (PRODUCT == 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (q.k + j < k_end) {
                v[j] = a_src[q.row * size.z + q.k + j];
            }
        }
        return v;
    }
    let inner = a_period();
    var at = q.at;
    for (var j = 0u; j < 4u; j++) {
        if (q.k + j < k_end) {
            // The input gradient's row is an input channel of the forward weight
            // [channels, out_channels, KH, KW] (in this launch's terms), its window turned.
            if (PRODUCT == 1u) {
                v[j] = a_src[(at.x * p.out_channels + q.row) * inner + inner - 1u - at.y];
            } else {
                v[j] = a_src[(at.x * p.out_channels + q.row) * inner + at.y];
            }
        }
        at.y += 1u;
        if (at.y == inner) {
            at.y = 0u;
            at.x += 1u;
        }
    }
    return v;
}

fn next_slice_a(q: QuadA) -> QuadA {
    var u = q;
    u.k += SLICE;
    if (PRODUCT != 0u) {
        let inner = a_period();
        u.at.y += SLICE;
        while (u.at.y >= inner) {
            u.at.y -= inner;
            u.at.x += 1u;
        }
    }
    return u;
}

@compute @workgroup_size(256)
fn conv2d_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let size = dims();
    let rows_q = TILE_M / 4u;
    let cols_q = tile_n() / 4u;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * tile_n();
    // This invocation's 4×4 block of the tile.
    let ly = t / cols_q;
    let lx = t % cols_q;
    var k_begin = 0u;
    var k_end = size.z;
    if (PRODUCT == 2u) {
        k_begin = wid.z * p.chunk;
        k_end = min(k_begin + p.chunk, size.z);
    }

    // The quads this invocation stages: of A one (64 rows) or, for invocations below 128,
    // one (32 rows); of B one (64 columns) or two (128). A quad of A is 4 consecutive k of
    // one row; of B, 4 consecutive columns of one k.
    let stages_a = t < rows_q * 16u;
    var qa = quad_a(row0 + t / 4u, k_begin + (t % 4u) * 4u);
    var qb: array<QuadB, 2>;
    let quads_b = cols_q * 16u / INVOCATIONS;
    for (var s = 0u; s < quads_b; s++) {
        let q = t + s * INVOCATIONS;
        qb[s] = quad_b(k_begin + q / cols_q, col0 + (q % cols_q) * 4u, size);
    }

    var acc: array<vec4<f32>, 4>;
    for (var k0 = k_begin; k0 < k_end; k0 += SLICE) {
        if (stages_a) {
            let m = t / 4u;
            let kq = (t % 4u) * 4u;
            let va = stage_a(qa, k_end, size);
            for (var j = 0u; j < 4u; j++) {
                tile_a[(kq + j) * rows_q + m / 4u][m % 4u] = va[j];
            }
            qa = next_slice_a(qa);
        }
        for (var s = 0u; s < quads_b; s++) {
            let q = t + s * INVOCATIONS;
            tile_b[q] = stage_b(qb[s], k_end);
            qb[s] = next_slice_b(qb[s]);
        }
        workgroupBarrier();
        for (var k = 0u; k < SLICE; k++) {
            let av = tile_a[k * rows_q + ly];
            let bv = tile_b[k * cols_q + lx];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }

    let first_col = col0 + lx * 4u;
    if (first_col >= size.y) {
        return;
    }
    // A convolution's column (n, i) of row r goes to out[n, r, i]; the weight gradient's
    // results to partial wid.z, [M × N] row-major.
    let plane = p.out_height * p.out_width;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + ly * 4u + i;
        if (row >= size.x) {
            return;
        }
        var n = first_col / plane;
        var pixel = first_col % plane;
        for (var j = 0u; j < 4u && first_col + j < size.y; j++) {
            var v = acc[i][j];
            if (HAS_BIAS) {
                v += bias[row];
            }
            if (RELU) {
                v = max(v, 0.0);
            }
            if (PRODUCT == 2u) {
                dst[(wid.z * size.x + row) * size.y + first_col + j] = v;
            } else {
                dst[(n * size.x + row) * plane + pixel] = v;
            }
            pixel += 1u;
            if (pixel == plane) {
                pixel = 0u;
                n += 1u;
            }
        }
    }
}
