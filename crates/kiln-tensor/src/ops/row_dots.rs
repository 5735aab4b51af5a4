//! A·Bᵀ for row-major A and B (a linear layer's x · Wᵀ with W stored `[out, in]`) as dot
//! products of their rows, on AVX-512. `gemm` first packs B into column panels, which for
//! Bᵀ means a transposing gather of the whole weight on every call, paid back only over
//! the product's few rows; here each output is the dot product of two rows read as stored,
//! four rows of B staying in L1 while the rows of A pass by. On 2 cores of an AMD EPYC (Zen
//! 5), throwaway probes against `gemm` in the same run, GFLOP/s: 32×512×512 in blocks of
//! 32 columns 152–166 → 169–317, 64×512×512 175–239 → 257–327, 32×512×784 180–206 →
//! 239–307, 64×10×512 62 → 143–181, and in blocks of 64 rows 256×512×1024 93 → 269–297;
//! on one core, convolution weight gradients 6×75×784 44–47 → 146–197 and 32×25×784 95–109
//! → 154–187. Its cost is a reduction per output, so it loses where the sums are short
//! against the rows (one core: 64×800×196 158–178 → 100–141, 75×450×49 152–174 → 57–76).

use std::ops::Range;

/// Products whose sums are at least this many times as long as the rows the call computes
/// run here (the probes above: the wins have k ≥ 8·rows, the losses k ≤ 4·rows).
const MIN_TERMS_PER_ROW: usize = 8;

/// Writes rows `rows` × columns `columns` of A·Bᵀ (or adds them, with `accumulate`) for A
/// `[m, k]` and B `[n, k]`, both row-major, into `out` (row stride `row_stride`, pointing at
/// the tile's first element), and returns true; returns false, touching nothing, where this
/// kernel does not suit the product or the CPU lacks AVX-512F.
///
/// Every output is summed in 16 lanes in the order of k, then across the lanes in one fixed
/// tree, whatever the tile it falls in: the bits do not depend on how the caller cuts the
/// product.
///
/// # Safety
/// `a` must hold the tile's rows of A (`rows.end·k` elements), `b` its rows of B
/// (`columns.end·k`), and `out` must be valid for writes of the tile at that row stride
/// with nothing else accessing them during the call.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn try_product(
    out: *mut f32,
    row_stride: usize,
    a: &[f32],
    b: &[f32],
    k: usize,
    rows: Range<usize>,
    columns: Range<usize>,
    accumulate: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if k >= MIN_TERMS_PER_ROW * rows.len() && k > 0 && std::arch::is_x86_feature_detected!("avx512f") {
        assert!(a.len() >= rows.end * k && b.len() >= columns.end * k, "operands sized by the caller");
        // SAFETY: the CPU has AVX-512F; the operands were checked above and the output is
        // the caller's, as the contract says.
        unsafe { avx512::product(out, row_stride, a, b, k, rows, columns, accumulate) };
        return true;
    }
    let _ = (out, row_stride, a, b, k, rows, columns, accumulate);
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// The tile of outputs one call of [`tile`] computes: up to 4 rows of A by 4 of B.
    const TILE: usize = 4;

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn product(
        out: *mut f32,
        row_stride: usize,
        a: &[f32],
        b: &[f32],
        k: usize,
        rows: Range<usize>,
        columns: Range<usize>,
        accumulate: bool,
    ) {
        for j in columns.clone().step_by(TILE) {
            let width = TILE.min(columns.end - j);
            let b_rows = std::array::from_fn(|c| b[(j + c.min(width - 1)) * k..].as_ptr());
            for i in rows.clone().step_by(TILE) {
                let height = TILE.min(rows.end - i);
                let a_rows = std::array::from_fn(|r| a[(i + r.min(height - 1)) * k..].as_ptr());
                // SAFETY: every row pointer starts a full row of k elements (checked by the
                // caller); rows past the tile's edge repeat its last row and are not stored.
                let sums = unsafe { tile_of(height, width, a_rows, b_rows, k) };
                for r in 0..height {
                    for c in 0..width {
                        // SAFETY: (i + r, j + c) lies in the caller's tile of `out`.
                        unsafe {
                            let o = out.add((i - rows.start + r) * row_stride + j - columns.start + c);
                            *o = if accumulate { *o + sums[r * TILE + c] } else { sums[r * TILE + c] };
                        }
                    }
                }
            }
        }
    }

    /// [`tile`] for a tile of `height` × `width` outputs, each from 1 to 4.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_of(
        height: usize,
        width: usize,
        a: [*const f32; TILE],
        b: [*const f32; TILE],
        k: usize,
    ) -> [f32; 16] {
        macro_rules! sized {
            ($(($r:literal, $c:literal)),*) => {
                match (height, width) {
                    // SAFETY: as the caller promises for `tile`.
                    $(($r, $c) => unsafe { tile::<$r, $c>(a, b, k) },)*
                    _ => unreachable!("tiles are 1 to 4 outputs a side"),
                }
            };
        }
        sized!(
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2),
            (2, 3),
            (2, 4),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4),
            (4, 1),
            (4, 2),
            (4, 3),
            (4, 4)
        )
    }

    /// The dot products of rows `a[..R]` with rows `b[..C]`, k long, as `[r·4 + c]`: one
    /// accumulator of 16 lanes per output, the tail of k through a masked load.
    ///
    /// # Safety
    /// Each pointer must start k readable elements.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const C: usize>(
        a: [*const f32; TILE],
        b: [*const f32; TILE],
        k: usize,
    ) -> [f32; 16] {
        let mut acc = [_mm512_setzero_ps(); 16];
        for p in (0..k).step_by(16) {
            // All 16 lanes but in the last step of a k that is not a multiple of 16.
            let mask = if p + 16 <= k { !0 } else { ((1u32 << (k - p)) - 1) as __mmask16 };
            let mut x = [_mm512_setzero_ps(); TILE];
            for r in 0..R {
                // SAFETY: the mask's lanes lie inside the row (the caller's promise).
                x[r] = unsafe { _mm512_maskz_loadu_ps(mask, a[r].add(p)) };
            }
            for c in 0..C {
                // SAFETY: as above.
                let y = unsafe { _mm512_maskz_loadu_ps(mask, b[c].add(p)) };
                for r in 0..R {
                    acc[r * TILE + c] = _mm512_fmadd_ps(x[r], y, acc[r * TILE + c]);
                }
            }
        }
        let mut sums = [0.0f32; 16];
        // SAFETY: `sums` holds 16 floats.
        unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), sum_lanes(&acc)) };
        sums
    }

    /// The lane sums of 16 accumulators `[r·4 + c]` as one vector whose lane r·4 + c holds
    /// accumulator r·4 + c's sum: 45 shuffles and adds instead of 16 separate reductions.
    #[target_feature(enable = "avx512f")]
    fn sum_lanes(acc: &[__m512; 16]) -> __m512 {
        // Per row r: within each 128-bit quarter, the four accumulators' partial sums.
        let quarters: [__m512; TILE] = std::array::from_fn(|r| {
            let [p, q, s, t] = [acc[r * TILE], acc[r * TILE + 1], acc[r * TILE + 2], acc[r * TILE + 3]];
            let pq = _mm512_add_ps(_mm512_unpacklo_ps(p, q), _mm512_unpackhi_ps(p, q));
            let st = _mm512_add_ps(_mm512_unpacklo_ps(s, t), _mm512_unpackhi_ps(s, t));
            let (pq, st) = (_mm512_castps_pd(pq), _mm512_castps_pd(st));
            _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(pq, st)), _mm512_castpd_ps(_mm512_unpackhi_pd(pq, st)))
        });
        // Across the quarters: 0x88 picks quarters (0, 2) of each operand, 0xDD (1, 3).
        let halves = |x: __m512, y: __m512| {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(x, y), _mm512_shuffle_f32x4::<0xDD>(x, y))
        };
        halves(halves(quarters[0], quarters[1]), halves(quarters[2], quarters[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    fn has_avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Every tile size at the edges (1 to 9 rows and columns), sums around the 16 lanes,
    /// written and added into a tile inside a wider output, against f64 sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn row_dot_products_match_f64_sums() {
        if !has_avx512() {
            println!("this CPU has no AVX-512F: the row-dot kernel cannot run here (gemm_tile uses gemm)");
            return;
        }
        for k in [1, 8, 15, 16, 17, 33, 100, 784] {
            for (m, n) in [(1, 1), (3, 5), (4, 4), (5, 9), (9, 2), (8, 7)] {
                let (a, b) = (values(m * k, 1), values(n * k, 2));
                // A tile of rows 1.. and columns 1.. inside an output with 3 more columns, to
                // catch a stride or offset mix-up.
                let (rows, columns) = (1.min(m - 1)..m, 1.min(n - 1)..n);
                let stride = columns.len() + 3;
                for accumulate in [false, true] {
                    let start = values(rows.len() * stride, 3);
                    let mut out = start.clone();
                    // SAFETY: the CPU has AVX-512F, the operands are whole, `out` holds the tile.
                    unsafe {
                        avx512::product(out.as_mut_ptr(), stride, &a, &b, k, rows.clone(), columns.clone(), accumulate)
                    };
                    for (r, i) in rows.clone().enumerate() {
                        for (o, (got, before)) in
                            out[r * stride..(r + 1) * stride].iter().zip(&start[r * stride..]).enumerate()
                        {
                            if o >= columns.len() {
                                assert_eq!(got, before, "k {k} {m}×{n} row {i}: element {o} is outside the tile");
                                continue;
                            }
                            let j = columns.start + o;
                            let terms = (0..k).map(|p| a[i * k + p] as f64 * b[j * k + p] as f64);
                            let (exact, magnitude) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                            let (want, magnitude) = if accumulate {
                                (exact + *before as f64, magnitude + before.abs() as f64)
                            } else {
                                (exact, magnitude)
                            };
                            // 16 lanes of k/16 terms, then 4 levels across lanes, plus the add
                            // onto the output: far fewer roundings than this allows.
                            let bound = (k as f64 / 16.0 + 6.0) * f32::EPSILON as f64 * magnitude;
                            assert!(
                                (*got as f64 - want).abs() <= bound,
                                "k {k} {m}×{n} ({i}, {j}) {accumulate}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn only_long_sums_take_the_kernel() {
        let (a, b) = (values(4 * 32, 1), values(4 * 32, 2));
        let mut out = [0.0f32; 16];
        // SAFETY: 4 rows of 31 or 32 of each operand; `out` holds 4×4.
        let short = unsafe { try_product(out.as_mut_ptr(), 4, &a, &b, 31, 0..4, 0..4, false) };
        assert!(!short, "31 terms < 8·4 rows");
        assert_eq!(out, [0.0; 16], "a product left to gemm is untouched");
        // SAFETY: as above.
        let long = unsafe { try_product(out.as_mut_ptr(), 4, &a, &b, 32, 0..4, 0..4, false) };
        assert_eq!(long, has_avx512(), "32 terms = 8·4 rows run here where the CPU has AVX-512F");
        if long {
            let want: f32 = (0..32).map(|p| a[p] * b[p]).sum();
            assert!((out[0] - want).abs() < 1e-5, "{} vs {want}", out[0]);
        }
    }
}
