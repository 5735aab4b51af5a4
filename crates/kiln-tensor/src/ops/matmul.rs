//! Matrix products, batched over leading dimensions.

use kiln_wgsl::kernels::matmul::{MatmulShape, matmul};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::{DType, Device, Result, Tensor, TensorError};

impl Tensor {
    /// The matrix product over the last two axes, batched over the others: `[.., M, K]` by
    /// `[.., K, N]`. Leading axes must match, or one operand must be a plain matrix that is
    /// then used for every batch entry.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_t(other, false, false)
    }

    /// As [`Tensor::matmul`], with either operand used transposed (its last two axes
    /// swapped) without materialising the transpose: `x.matmul_t(&w, false, true)` is
    /// x · wᵀ for a weight stored `[out, in]`.
    pub fn matmul_t(&self, other: &Tensor, trans_self: bool, trans_other: bool) -> Result<Tensor> {
        const OP: &str = "matmul";
        self.expect_dtype(OP, DType::F32)?;
        other.expect_dtype(OP, DType::F32)?;
        self.expect_same_device(OP, other)?;
        let mismatch =
            |why| TensorError::ShapeMismatch { op: OP, lhs: self.shape.clone(), rhs: other.shape.clone(), why };
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
        let out_shape = [batch_shape, &[m, n]].concat();
        match &self.device {
            Device::Cpu => Ok(Tensor::cpu_f32(cpu_matmul(self.cpu_values(), other.cpu_values(), shape), out_shape)),
            Device::Gpu(ctx) => {
                let out = matmul(ctx, self.gpu_buffer(), other.gpu_buffer(), shape)?;
                Ok(Tensor::gpu(out, out_shape, DType::F32, &self.device))
            }
        }
    }
}

fn matrix(data: &[f32], offset: usize, rows: usize, cols: usize, transposed: bool) -> ArrayView2<'_, f32> {
    let slice = &data[offset..offset + rows * cols];
    if transposed {
        ArrayView2::from_shape((cols, rows), slice).expect("sized above").reversed_axes()
    } else {
        ArrayView2::from_shape((rows, cols), slice).expect("sized above")
    }
}

fn cpu_matmul(a: &[f32], b: &[f32], s: MatmulShape) -> Vec<f32> {
    let mut c = vec![0.0f32; s.batch * s.m * s.n];
    if s.m * s.n == 0 {
        return c;
    }
    for (i, out) in c.chunks_mut(s.m * s.n).enumerate() {
        let a = matrix(a, i * s.a_batch_stride, s.m, s.k, s.trans_a);
        let b = matrix(b, i * s.b_batch_stride, s.k, s.n, s.trans_b);
        let mut out = ArrayViewMut2::from_shape((s.m, s.n), out).expect("sized above");
        general_mat_mul(1.0, &a, &b, 0.0, &mut out);
    }
    c
}
