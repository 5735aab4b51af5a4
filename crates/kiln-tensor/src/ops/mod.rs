//! Tensor operations, one family per file. Each op validates its operands once, then runs
//! host loops (or ndarray, or `gemm`) on the CPU or records a kiln-wgsl kernel on the GPU.
//! The CPU path is the reference the GPU one is tested against.

/// Compiles `$body` (a call of an `#[inline(always)]` loop; its value is the macro's) for
/// the widest vector unit the CPU has, chosen at run time: the build targets baseline x86-64, whose SSE is 4 lanes.
/// The arithmetic is the same instructions at any width (no FMA contraction), so every
/// path gives the same bits.
macro_rules! widest_simd {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512<T>(f: impl FnOnce() -> T) -> T {
                f()
            }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<T>(f: impl FnOnce() -> T) -> T {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { avx512(|| $body) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { avx2(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

mod avg_pool;
mod batch_norm;
mod batch_norm_pool;
mod conv;
mod conv_pool;
mod convert;
mod dropout;
mod elementwise;
mod indexing;
mod layout;
mod linear;
mod loss;
mod matmul;
mod optimizer;
mod pool;
mod reduce;
mod row_dots;
mod softmax;

pub use batch_norm::{BatchNormConfig, BatchNormGrads, BatchNormSaved};
pub use batch_norm_pool::BatchNormReluPool;
pub use conv::{Conv2d, Conv2dGrads};
pub use conv_pool::ConvReluPool;
pub use linear::LinearGrads;
pub use loss::Reduction;
pub use optimizer::{AdamConfig, AdamParameter, SgdConfig, SgdParameter, adam_steps, sgd_steps};
pub use pool::Pool2d;

use std::iter::Sum;
use std::ops::AddAssign;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// CPU loops over fewer elements than this stay on one thread; past it they are split across
/// cores (measured on the ASL CNN's conv + bias shapes with benches/layers.rs).
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Σ `term(v)` over `values` in `LANES` interleaved running sums, then across them: enough
/// independent additions to keep a vector unit busy (one running sum waits on each
/// addition's latency), in a fixed order, so the same input always gives the same bits.
#[inline(always)]
pub(crate) fn sum_in_lanes<T, const LANES: usize>(values: &[f32], term: impl Fn(f32) -> T) -> T
where
    T: Copy + Default + AddAssign + Sum,
{
    let mut lanes = [T::default(); LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += term(v);
        }
    }
    let mut total: T = lanes.into_iter().sum();
    total += chunks.remainder().iter().map(|&v| term(v)).sum::<T>();
    total
}

/// How many rows (planes, lines) of `row_len` elements one parallel task takes, so that each
/// has about `min_elements` to do: below that, handing work to another core costs more than
/// it saves.
pub(crate) fn rows_per_task(row_len: usize, min_elements: usize) -> usize {
    (min_elements / row_len.max(1)).max(1)
}

/// A read-only ndarray view of contiguous row-major data.
pub(crate) fn view<'a, T>(data: &'a [T], shape: &[usize]) -> ArrayViewD<'a, T> {
    ArrayViewD::from_shape(IxDyn(shape), data).expect("tensor data always matches its shape")
}

/// The elements of an ndarray result in row-major order.
pub(crate) fn into_row_major<T: Clone>(array: ArrayD<T>) -> Vec<T> {
    if array.is_standard_layout() { array.into_raw_vec_and_offset().0 } else { array.iter().cloned().collect() }
}
