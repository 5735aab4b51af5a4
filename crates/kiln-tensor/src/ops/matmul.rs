//! Matrix products, batched over leading dimensions.

use std::ops::Range;

use kiln_wgsl::kernels::matmul::{MatmulShape, matmul, matmul_sum};
use rayon::prelude::*;

use super::row_dots;
use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

impl Tensor {
    /// The matrix product over the last two axes, batched over the others: `[.., M, K]` by
    /// `[.., K, N]`. Leading axes must match, or one operand must be a plain matrix that is
    /// then used for every batch entry.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let _op = profile::enter("matmul");
        self.matmul_t(other, false, false)
    }

    /// As [`Tensor::matmul`], with either operand used transposed (its last two axes
    /// swapped) without materialising the transpose: `x.matmul_t(&w, false, true)` is
    /// x · wᵀ for a weight stored `[out, in]`.
    pub fn matmul_t(&self, other: &Tensor, trans_self: bool, trans_other: bool) -> Result<Tensor> {
        let _op = profile::enter("matmul_t");
        let (shape, batch_shape) = self.matmul_shape("matmul", other, trans_self, trans_other)?;
        let out_shape = [batch_shape.as_slice(), &[shape.m, shape.n]].concat();
        match &self.device() {
            Device::Cpu => Ok(Tensor::cpu_f32(cpu_matmul(self.cpu_values(), other.cpu_values(), shape), out_shape)),
            Device::Gpu(ctx) => {
                let out = matmul(ctx, self.gpu_buffer(), other.gpu_buffer(), shape)?;
                Ok(Tensor::gpu(out, out_shape, DType::F32))
            }
        }
    }

    /// The sum over the batch of [`Tensor::matmul_t`]'s products: `[M, N]`. A convolution's
    /// weight gradient is this sum over the images; on the CPU the products accumulate in
    /// place instead of being stored per image first.
    pub fn matmul_t_sum(&self, other: &Tensor, trans_self: bool, trans_other: bool) -> Result<Tensor> {
        let _op = profile::enter("matmul_t_sum");
        let (shape, _) = self.matmul_shape("matmul_t_sum", other, trans_self, trans_other)?;
        match &self.device() {
            Device::Cpu => Ok(Tensor::cpu_f32(
                cpu_matmul_sum(self.cpu_values(), other.cpu_values(), shape),
                vec![shape.m, shape.n],
            )),
            Device::Gpu(ctx) => {
                let out = matmul_sum(ctx, self.gpu_buffer(), other.gpu_buffer(), shape)?;
                Ok(Tensor::gpu(out, vec![shape.m, shape.n], DType::F32))
            }
        }
    }

    /// The kernel-level problem of `self · other` (each maybe transposed) and the batch axes
    /// of the result, after checking the operands fit.
    pub(crate) fn matmul_shape(
        &self,
        op: &'static str,
        other: &Tensor,
        trans_self: bool,
        trans_other: bool,
    ) -> Result<(MatmulShape, Vec<usize>)> {
        self.expect_dtype(op, DType::F32)?;
        other.expect_dtype(op, DType::F32)?;
        self.expect_same_device(op, other)?;
        let mismatch = |why| TensorError::ShapeMismatch { op, lhs: self.shape.clone(), rhs: other.shape.clone(), why };
        if self.rank() < 2 || other.rank() < 2 {
            return Err(mismatch("both operands need at least two axes"));
        }
        let (a_batch, a_mat) = self.shape.split_at(self.rank() - 2);
        let (b_batch, b_mat) = other.shape.split_at(other.rank() - 2);
        let (m, k) = if trans_self { (a_mat[1], a_mat[0]) } else { (a_mat[0], a_mat[1]) };
        let (k2, n) = if trans_other { (b_mat[1], b_mat[0]) } else { (b_mat[0], b_mat[1]) };
        if k != k2 {
            return Err(mismatch("inner dimensions differ"));
        }
        let batch_shape = match (a_batch.is_empty(), b_batch.is_empty()) {
            (_, true) => a_batch,
            (true, false) => b_batch,
            (false, false) if a_batch == b_batch => a_batch,
            _ => return Err(mismatch("batch axes differ")),
        };
        let batch: usize = batch_shape.iter().product();
        let shape = MatmulShape {
            batch,
            m,
            n,
            k,
            trans_a: trans_self,
            trans_b: trans_other,
            a_batch_stride: if a_batch.is_empty() { 0 } else { m * k },
            b_batch_stride: if b_batch.is_empty() { 0 } else { k * n },
        };
        Ok((shape, batch_shape.to_vec()))
    }
}

/// Products smaller than this many multiply-adds run on one thread: below it, handing work
/// to other cores costs more than it saves (measured with benches/matmul.rs).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Rows of C per task when a large product with many rows is cut across the cores (a
/// weight gradient, [out, in] with the batch as K). `gemm`'s own threading scales poorly
/// there: on 2 cores of an AMD EPYC, 512×784×64 ran at 54 GFLOP/s on two threads and 69 on
/// one. A fixed block size, not a share per core, so every machine adds in the same order.
const ROWS_PER_TASK: usize = 64;

/// Columns of C per task when a large product with few rows but many columns is cut
/// across the cores (a linear layer's forward pass, [batch, out]). With its AVX-512
/// kernels `gemm`'s own threading is slower on two threads than on one at these shapes: on
/// 2 cores of an Intel Xeon, 32×512×784 (B transposed) ran at 47 GFLOP/s that way, 81 on
/// one thread and 130 in blocks of 64 columns (128: 133, 256: 125), and 32×128×784 at 53,
/// 100 and 135. On 2 cores of an AMD EPYC, blocks of 32 columns ran 64×512×512 (B
/// transposed, where the rows of B alias in the cache) at 83–100 GFLOP/s against 64–68 in
/// blocks of 64, and 64×512×784 alike (92–150 both). Fixed, as the rows.
const COLUMNS_PER_TASK: usize = 32;

/// C = op(A)·op(B) for every batch entry, with the `gemm` crate's kernels. Operands are
/// addressed through strides, so a transposed operand is read in place. Large products
/// are cut into blocks of rows or columns, one core each; other large products split
/// across cores inside `gemm`; a batch of small ones (a convolution's images) splits
/// across cores by batch entry.
fn cpu_matmul(a: &[f32], b: &[f32], s: MatmulShape) -> Vec<f32> {
    let len = s.batch * s.m * s.n;
    if s.k == 0 {
        return vec![0.0; len];
    }
    // Not zeroed first: that pass over the output (up to 1.6 MB a step for the
    // Fashion-MNIST MLP's weight gradients) would be overwritten anyway.
    let mut c = Vec::with_capacity(len);
    // SAFETY: `c` has room for all `len` outputs and nothing else sees it; with k > 0 and
    // `accumulate` off, every output is written and none read, so all are initialised
    // before the length covers them.
    unsafe {
        matmul_to(SharedOutput(c.as_mut_ptr()), a, b, s, false);
        c.set_len(len);
    }
    c
}

/// `c = op(A)·op(B)`, or with `accumulate` `c += op(A)·op(B)` (a bias already in `c` is
/// then added as the products are stored, with no pass of its own), per batch entry.
pub(crate) fn cpu_matmul_into(c: &mut [f32], a: &[f32], b: &[f32], s: MatmulShape, accumulate: bool) {
    assert!(c.len() == s.batch * s.m * s.n, "output sized by the caller");
    // SAFETY: `c` is the whole output, initialised, and borrowed mutably for the call.
    unsafe { matmul_to(SharedOutput(c.as_mut_ptr()), a, b, s, accumulate) }
}

/// [`cpu_matmul_into`] through a pointer, so that an output not yet initialised can be
/// written.
///
/// # Safety
/// `c` must be valid for writes of `batch·m·n` elements (and for reads, holding initialised
/// values, with `accumulate`), with nothing else accessing them during the call.
unsafe fn matmul_to(c: SharedOutput, a: &[f32], b: &[f32], s: MatmulShape, accumulate: bool) {
    let entry = s.m * s.n;
    if entry == 0 {
        return;
    }
    let operands = |i: usize| (&a[i * s.a_batch_stride..], &b[i * s.b_batch_stride..]);
    if s.m * s.n * s.k < PARALLEL_MIN_MACS {
        (0..s.batch).into_par_iter().for_each(|i| {
            let (a, b) = operands(i);
            // SAFETY: entry i's outputs, written by this task alone (the contract above).
            unsafe { gemm_tile(c.at(i * entry), a, b, &s, 0..s.m, 0..s.n, accumulate, gemm::Parallelism::None) }
        });
        return;
    }
    for i in 0..s.batch {
        // SAFETY: entry i's outputs start inside the batch·m·n the contract covers.
        let ((a, b), c) = (operands(i), SharedOutput(unsafe { c.at(i * entry) }));
        if s.m >= 2 * ROWS_PER_TASK {
            (0..s.m.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|block| {
                let rows = block * ROWS_PER_TASK..((block + 1) * ROWS_PER_TASK).min(s.m);
                // SAFETY: each task writes only its own rows of this entry's C.
                unsafe {
                    gemm_tile(c.at(rows.start * s.n), a, b, &s, rows, 0..s.n, accumulate, gemm::Parallelism::None)
                }
            });
        } else if s.n >= 2 * COLUMNS_PER_TASK {
            (0..s.n.div_ceil(COLUMNS_PER_TASK)).into_par_iter().for_each(|block| {
                let columns = block * COLUMNS_PER_TASK..((block + 1) * COLUMNS_PER_TASK).min(s.n);
                // SAFETY: each task writes only its own columns of the rows of this entry's C
                // (m·n elements from `c`), so no two tasks touch the same element.
                unsafe {
                    gemm_tile(c.at(columns.start), a, b, &s, 0..s.m, columns, accumulate, gemm::Parallelism::None)
                }
            });
        } else {
            // SAFETY: this entry's outputs, as the contract says.
            unsafe { gemm_tile(c.0, a, b, &s, 0..s.m, 0..s.n, accumulate, gemm::Parallelism::Rayon(0)) }
        }
    }
}

/// A product's output shared by tasks that each write their own part of it.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);
// SAFETY: only handed to tasks whose writes are disjoint (see `matmul_to`).
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The output element `offset` along.
    ///
    /// # Safety
    /// `offset` must lie inside the output.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: as the caller promises.
        unsafe { self.0.add(offset) }
    }
}

/// Σᵢ op(Aᵢ)·op(Bᵢ) over the batch. The batch is cut into a fixed number of runs, whatever
/// the core count; each run accumulates its products in order into a partial of its own,
/// and the partials are added in order, so every machine gets the same bits.
fn cpu_matmul_sum(a: &[f32], b: &[f32], s: MatmulShape) -> Vec<f32> {
    sum_over_batch(
        s.batch,
        s.m * s.n,
        || (),
        |_, i, partial, first| {
            let (a, b) = (&a[i * s.a_batch_stride..], &b[i * s.b_batch_stride..]);
            gemm_accumulate(partial, a, b, &s, !first, gemm::Parallelism::None);
        },
    )
}

/// Σᵢ of `len`-long terms over `0..batch`, where `add(scratch, i, partial, first)` adds
/// term i into `partial` (overwriting it when `first`). The batch is cut into a fixed
/// number of runs, whatever the core count; each run adds its terms in order into a partial
/// of its own (with `scratch` from `new_scratch`), and the partials are added in order, so
/// every machine gets the same bits.
pub(crate) fn sum_over_batch<S>(
    batch: usize,
    len: usize,
    new_scratch: impl Fn() -> S + Sync,
    add: impl Fn(&mut S, usize, &mut [f32], bool) + Sync,
) -> Vec<f32> {
    sum_over_batch_writing(batch, len, &mut [], new_scratch, |scratch, i, partial, first, _| {
        add(scratch, i, partial, first)
    })
}

/// [`sum_over_batch`] for terms that also each write an output of their own: `outputs`
/// holds `batch` equal pieces, and `add` gets piece i with term i (a convolution's input
/// gradient per image, computed beside the weight gradient's term).
pub(crate) fn sum_over_batch_writing<S>(
    batch: usize,
    len: usize,
    outputs: &mut [f32],
    new_scratch: impl Fn() -> S + Sync,
    add: impl Fn(&mut S, usize, &mut [f32], bool, &mut [f32]) + Sync,
) -> Vec<f32> {
    const RUNS: usize = 8;
    let mut sum = vec![0.0f32; len];
    if len == 0 || batch == 0 {
        return sum;
    }
    let output_len = outputs.len() / batch;
    assert!(outputs.len() == output_len * batch, "one output piece per term");
    let per_run = batch.div_ceil(RUNS);
    let mut rest = outputs;
    let runs: Vec<(Range<usize>, &mut [f32])> = (0..batch)
        .step_by(per_run)
        .map(|start| {
            let terms = start..(start + per_run).min(batch);
            let (pieces, others) = std::mem::take(&mut rest).split_at_mut(terms.len() * output_len);
            rest = others;
            (terms, pieces)
        })
        .collect();
    let partials: Vec<Vec<f32>> = runs
        .into_par_iter()
        .map(|(terms, mut pieces)| {
            let (mut scratch, mut partial) = (new_scratch(), vec![0.0f32; len]);
            let first = terms.start;
            for i in terms {
                let (piece, others) = std::mem::take(&mut pieces).split_at_mut(output_len);
                pieces = others;
                add(&mut scratch, i, &mut partial, i == first, piece);
            }
            partial
        })
        .collect();
    for partial in partials {
        sum.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
    }
    sum
}

/// The problem of one plain (unbatched) product op(A)·op(B), [m × k]·[k × n].
pub(crate) fn single_product(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> MatmulShape {
    MatmulShape { batch: 1, m, n, k, trans_a, trans_b, a_batch_stride: 0, b_batch_stride: 0 }
}

/// `out = op(A)·op(B)`, or with `accumulate` `out += op(A)·op(B)`.
pub(crate) fn gemm_accumulate(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    s: &MatmulShape,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(out.len() == s.m * s.n, "output sized by the caller");
    // SAFETY: `out` is the whole m × n product.
    unsafe { gemm_tile(out.as_mut_ptr(), a, b, s, 0..s.m, 0..s.n, accumulate, parallelism) }
}

/// Rows `rows` × columns `columns` of op(A)·op(B), written (or with `accumulate` added)
/// to `out`, which points at the tile's first element in an output of row stride n.
///
/// # Safety
/// `out` must be valid for writes of the tile's elements, `(rows.len()−1)·n +
/// columns.len()` from it, and nothing else may access them during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tile(
    out: *mut f32,
    a: &[f32],
    b: &[f32],
    s: &MatmulShape,
    rows: Range<usize>,
    columns: Range<usize>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    // (row stride, column stride) of op(A) [m × k] and op(B) [k × n] as stored.
    let (a_rs, a_cs) = if s.trans_a { (1, s.m) } else { (s.k, 1) };
    let (b_rs, b_cs) = if s.trans_b { (1, s.k) } else { (s.n, 1) };
    assert!(rows.end <= s.m && columns.end <= s.n, "a tile of the product");
    assert!(a.len() >= s.m * s.k && b.len() >= s.k * s.n, "operands sized by the caller");
    if !s.trans_a && s.trans_b {
        // SAFETY: A and B are whole (asserted above) and row-major, the output the caller's.
        if unsafe { row_dots::try_product(out, s.n, a, b, s.k, rows.clone(), columns.clone(), accumulate) } {
            return;
        }
    }
    let (a, b) = (&a[rows.start * a_rs..], &b[columns.start * b_cs..]);
    // SAFETY: with the strides above, op(A)'s rows `rows` reach at most element
    // (rows.end−1)·a_rs + (k−1)·a_cs < m·k of the full `a`, below the end of the slice
    // taken from row `rows.start`; op(B)'s columns likewise stay below k·n of the full `b`;
    // the output is the caller's to write, as the contract says.
    unsafe {
        gemm::gemm(
            rows.len(),
            columns.len(),
            s.k,
            out,
            1,
            s.n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
