use std::sync::OnceLock;

use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, KernelClass, Result};

pub(crate) static FAMILY: KernelFamily = KernelFamily { name: "matmul", source: include_str!("matmul.wgsl") };

/// The software adapters' kernel (`KernelClass::Software`), a module of its own for its
/// subgroup operations.
pub(crate) static SOFTWARE_FAMILY: KernelFamily = KernelFamily {
    name: "matmul_software",
    source: concat!(include_str!("software_tiles.wgsl"), include_str!("matmul_software.wgsl")),
};

/// Rows and columns of C one workgroup computes (see matmul.wgsl).
const TILE: usize = 64;
/// Rows of C one workgroup of the software kernel computes, and columns per invocation
/// (matmul_software.wgsl).
const SOFTWARE_TILE: [usize; 2] = [32, 4];

/// The software kernel's workgroup: 64 invocations (256 columns of C), or one subgroup of 8
/// (32 columns) for a product of at least `SOFTWARE_SPREAD_FROM` multiply-adds whose grid of
/// 64 would leave a core of the host idle — llvmpipe runs a workgroup on one core, and the
/// host's cores are its. On 2 Zen 4 cores the MNIST MLP's first product (32×128×784: one
/// workgroup of 64, half of it past C) took 1.07 ms alone and as four workgroups of 8
/// 0.33 ms; the larger products of the Fashion-MNIST MLP ran 30–45% slower in workgroups of
/// 8, and small ones (LeNet's at batch 4) lost more to waking a second core, which also
/// records the next launches, than they gained.
fn software_workgroup(m: usize, n: usize, k: usize, products: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let wide = n.div_ceil(64 * SOFTWARE_TILE[1]) * m.div_ceil(SOFTWARE_TILE[0]) * products;
    if wide < cores && m * n * k * products >= SOFTWARE_SPREAD_FROM { 8 } else { 64 }
}

/// Multiply-adds from which a software product is spread over the host's cores.
const SOFTWARE_SPREAD_FROM: usize = 1 << 20;

/// The problem: `batch` products of an M×K by a K×N matrix, each operand stored row-major
/// either as written or transposed. A batch stride of 0 reuses one matrix for every batch
/// entry (a weight shared across the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored K×M.
    pub trans_a: bool,
    /// B is stored N×K.
    pub trans_b: bool,
    pub a_batch_stride: usize,
    pub b_batch_stride: usize,
}

impl MatmulShape {
    /// A plain batched product with every operand packed.
    pub fn new(batch: usize, m: usize, n: usize, k: usize) -> Self {
        Self { batch, m, n, k, trans_a: false, trans_b: false, a_batch_stride: m * k, b_batch_stride: k * n }
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
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

/// K-slices of 16 one workgroup of `matmul_sum` walks at most (entries × slices per entry).
/// Lavapipe returned wrong sums from a workgroup walking 3,456 (96 entries of K = 576) and
/// right ones at 2,304: llvmpipe's cap on loop iterations (`conv::SOFTWARE_LOOP_BUDGET`),
/// which the slices' inner loops count towards.
const SUM_MAX_SLICES: usize = 2048;

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout =
    params_layout!(Params: m, n, k, a_batch_stride, b_batch_stride, c_batch_stride, batch, per_group);

/// Which index of C a bias is indexed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAxis {
    /// One value per column (N): a linear layer's output `[batch, out]`.
    Column = 1,
    /// One value per row (M): a convolution's output `[O, OH·OW]` per image.
    Row = 2,
}

/// What is applied to each element of C as it is stored: a bias, then a ReLU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<(&'a GpuBuffer, BiasAxis)>,
    pub relu: bool,
}

/// C = op(A) · op(B), batched; C is packed `batch × M × N`.
pub fn matmul(ctx: &GpuContext, a: &GpuBuffer, b: &GpuBuffer, shape: MatmulShape) -> Result<GpuBuffer> {
    launch(ctx, a, b, shape, Epilogue::default(), false)
}

/// [`matmul`] with a bias and/or ReLU applied to every result in the same launch.
pub fn matmul_with(
    ctx: &GpuContext,
    a: &GpuBuffer,
    b: &GpuBuffer,
    shape: MatmulShape,
    epilogue: Epilogue,
) -> Result<GpuBuffer> {
    launch(ctx, a, b, shape, epilogue, false)
}

/// Σ over the batch of op(A[b]) · op(B[b]): one packed M × N matrix, summed in batch order.
pub fn matmul_sum(ctx: &GpuContext, a: &GpuBuffer, b: &GpuBuffer, shape: MatmulShape) -> Result<GpuBuffer> {
    launch(ctx, a, b, shape, Epilogue::default(), true)
}

fn launch(
    ctx: &GpuContext,
    a: &GpuBuffer,
    b: &GpuBuffer,
    shape: MatmulShape,
    epilogue: Epilogue,
    sum_batch: bool,
) -> Result<GpuBuffer> {
    let MatmulShape { batch, m, n, k, trans_a, trans_b, a_batch_stride, b_batch_stride } = shape;
    let a_len = if batch == 0 { 0 } else { (batch - 1) * a_batch_stride + m * k };
    let b_len = if batch == 0 { 0 } else { (batch - 1) * b_batch_stride + k * n };
    for (name, len, buffer) in [("A", a_len, a), ("B", b_len, b)] {
        if len as u64 * 4 > buffer.len_bytes() {
            return Err(crate::GpuError::InvalidLaunch {
                kernel: "matmul",
                reason: format!("{name} needs {len} elements but its buffer holds {}", buffer.len_bytes() / 4),
            });
        }
    }
    super::check_indexable("matmul", (batch * m * n).max(a_len).max(b_len), 1)?;
    if let Some((bias, axis)) = epilogue.bias {
        let want = if axis == BiasAxis::Column { n } else { m };
        if (want as u64) * 4 > bias.len_bytes() {
            return Err(crate::GpuError::InvalidLaunch {
                kernel: "matmul",
                reason: format!("the bias needs {want} elements but its buffer holds {}", bias.len_bytes() / 4),
            });
        }
    }
    // The software kernel runs k + 1 iterations per entry; past the loop budget, the portable one.
    let software = ctx.kernel_class() == KernelClass::Software && k < super::conv::SOFTWARE_LOOP_BUDGET;
    // Summed: groups of consecutive entries, each to a partial product, added below.
    let per_group = if software {
        (super::conv::SOFTWARE_LOOP_BUDGET / (k + 1)).max(1)
    } else {
        (SUM_MAX_SLICES / k.div_ceil(16).max(1)).max(1)
    };
    let products = if sum_batch { batch.div_ceil(per_group).max(1) } else { batch };
    let out = ctx.alloc((products * m * n) as u64 * 4)?;
    // A contiguous row of each operand, and every batch offset, must fall on a vec4 boundary.
    let a_row = if trans_a { m } else { k };
    let b_row = if trans_b { k } else { n };
    const SLOTS: &[Slot] =
        &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(3, Access::ReadWrite), Slot(4, Access::Read)];
    let workgroup = software_workgroup(m, n, k, products);
    let spec = if software {
        KernelSpec::new(&SOFTWARE_FAMILY, "matmul", SLOTS).constant("WORKGROUP", workgroup as u32)
    } else {
        KernelSpec::new(&FAMILY, "matmul", SLOTS)
            .constant("VEC_A", a_row % 4 == 0 && a_batch_stride % 4 == 0)
            .constant("VEC_B", b_row % 4 == 0 && b_batch_stride % 4 == 0)
            .constant("VEC_C", n % 4 == 0)
    }
    .constant("TRANS_A", trans_a)
    .constant("TRANS_B", trans_b)
    .constant("BIAS", epilogue.bias.map_or(0, |(_, axis)| axis as u32))
    .constant("RELU", epilogue.relu)
    .constant("SUM_BATCH", sum_batch);
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        a_batch_stride: a_batch_stride as u32,
        b_batch_stride: b_batch_stride as u32,
        c_batch_stride: (m * n) as u32,
        batch: batch as u32,
        per_group: per_group as u32,
    };
    let grid = if software {
        [n.div_ceil(workgroup * SOFTWARE_TILE[1]) as u32, m.div_ceil(SOFTWARE_TILE[0]) as u32, products as u32]
    } else {
        [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, products as u32]
    };
    // Without a bias, A stands in for the binding the kernel then does not read.
    let bias = epilogue.bias.map_or(a, |(bias, _)| bias);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[a, b, &out, bias], grid)?;
    if sum_batch && products > 1 {
        return super::reduce::reduce(ctx, super::reduce::ReduceOp::Sum, &out, 1, products, m * n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, values};
    use crate::testing::contexts_of_each_class;
    use proptest::prelude::*;

    fn host(a: &[f32], b: &[f32], s: MatmulShape) -> Vec<f32> {
        let mut c = vec![0.0f32; s.batch * s.m * s.n];
        for bt in 0..s.batch {
            for i in 0..s.m {
                for j in 0..s.n {
                    let mut acc = 0.0f32;
                    for p in 0..s.k {
                        let av = if s.trans_a {
                            a[bt * s.a_batch_stride + p * s.m + i]
                        } else {
                            a[bt * s.a_batch_stride + i * s.k + p]
                        };
                        let bv = if s.trans_b {
                            b[bt * s.b_batch_stride + j * s.k + p]
                        } else {
                            b[bt * s.b_batch_stride + p * s.n + j]
                        };
                        acc += av * bv;
                    }
                    c[(bt * s.m + i) * s.n + j] = acc;
                }
            }
        }
        c
    }

    fn check(ctx: &GpuContext, s: MatmulShape) {
        let a_len = (s.batch - 1) * s.a_batch_stride + s.m * s.k;
        let b_len = (s.batch - 1) * s.b_batch_stride + s.k * s.n;
        let (a, b) = (values(a_len, 11), values(b_len, 12));
        let out = matmul(ctx, &ctx.upload(&a).unwrap(), &ctx.upload(&b).unwrap(), s).unwrap();
        let got = ctx.read::<f32>(&out, s.batch * s.m * s.n).unwrap();
        assert_close(&got, &host(&a, &b, s), 1e-5 * (s.k as f32).sqrt().max(1.0) * 4.0);
    }

    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![1..=9usize, Just(16usize), Just(63), Just(64), Just(65), Just(97), Just(128)]
    }

    /// The host's product with the epilogue applied, or its sum over the batch.
    fn host_with(
        a: &[f32],
        b: &[f32],
        s: MatmulShape,
        bias: Option<(&[f32], BiasAxis)>,
        relu: bool,
        sum: bool,
    ) -> Vec<f32> {
        let mut c = host(a, b, s);
        if sum {
            let mut total = vec![0.0f32; s.m * s.n];
            for entry in c.chunks(s.m * s.n) {
                total.iter_mut().zip(entry).for_each(|(t, v)| *t += v);
            }
            c = total;
        }
        for (e, v) in c.iter_mut().enumerate() {
            let (row, col) = (e / s.n % s.m, e % s.n);
            match bias {
                Some((bias, BiasAxis::Column)) => *v += bias[col],
                Some((bias, BiasAxis::Row)) => *v += bias[row],
                None => {}
            }
            if relu {
                *v = v.max(0.0);
            }
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn epilogues_and_batch_sums_match_the_host(
            batch in prop_oneof![1..=3usize, Just(100)], m in size(), n in size(), k in size(),
            trans_a in any::<bool>(), bias in 0..3u32, relu in any::<bool>(), sum in any::<bool>(),
        ) {
            for ctx in contexts_of_each_class("matmul::epilogues_and_batch_sums_match_the_host") {
                let mut s = MatmulShape::new(batch, m, n, k);
                s.trans_a = trans_a;
                let (a, b) = (values(batch * m * k, 21), values(batch * k * n, 22));
                let (ga, gb) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap());
                let (out, want) = if sum {
                    (matmul_sum(&ctx, &ga, &gb, s).unwrap(), host_with(&a, &b, s, None, false, true))
                } else {
                    let axis = [None, Some(BiasAxis::Column), Some(BiasAxis::Row)][bias as usize];
                    let bias_values = axis.map(|axis| (values(if axis == BiasAxis::Column { n } else { m }, 23), axis));
                    let buffer = bias_values.as_ref().map(|(v, axis)| (ctx.upload(v).unwrap(), *axis));
                    let epilogue = Epilogue { bias: buffer.as_ref().map(|(b, axis)| (b, *axis)), relu };
                    let want = host_with(&a, &b, s, bias_values.as_ref().map(|(v, axis)| (v.as_slice(), *axis)), relu, false);
                    (matmul_with(&ctx, &ga, &gb, s, epilogue).unwrap(), want)
                };
                let got = ctx.read::<f32>(&out, want.len()).unwrap();
                assert_close(&got, &want, 1e-5 * (k as f32 * batch as f32).sqrt().max(1.0) * 4.0);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn every_variant_matches_the_host(
            batch in 1..=3usize, m in size(), n in size(), k in size(),
            trans_a in any::<bool>(), trans_b in any::<bool>(), shared_b in any::<bool>(),
        ) {
            for ctx in contexts_of_each_class("matmul::every_variant_matches_the_host") {
                let mut s = MatmulShape::new(batch, m, n, k);
                s.trans_a = trans_a;
                s.trans_b = trans_b;
                if shared_b {
                    s.b_batch_stride = 0;
                }
                check(&ctx, s);
            }
        }
    }

    #[test]
    fn products_spread_over_small_workgroups_match_the_host() {
        // Large enough to spread on a host of 2 or more cores (one core keeps 64).
        let shapes = [(32, 128, 784, false, true), (9, 200, 700, true, false), (32, 13, 4000, false, false)];
        for ctx in contexts_of_each_class("matmul::products_spread_over_small_workgroups_match_the_host") {
            for (m, n, k, trans_a, trans_b) in shapes {
                if std::thread::available_parallelism().map_or(1, |c| c.get()) > 1 {
                    assert_eq!(software_workgroup(m, n, k, 1), 8, "{m}×{n}×{k}");
                }
                let mut s = MatmulShape::new(1, m, n, k);
                (s.trans_a, s.trans_b) = (trans_a, trans_b);
                check(&ctx, s);
            }
        }
    }

    #[test]
    fn long_batch_sums_are_split_and_added() {
        // 96 entries of K = 576: one workgroup walking them all gave wrong sums on lavapipe.
        for ctx in contexts_of_each_class("matmul::long_batch_sums_are_split_and_added") {
            let mut s = MatmulShape::new(96, 5, 7, 576);
            s.trans_b = true;
            let (a, b) = (values(96 * 5 * 576, 31), values(96 * 7 * 576, 32));
            let got = matmul_sum(&ctx, &ctx.upload(&a).unwrap(), &ctx.upload(&b).unwrap(), s).unwrap();
            let want = host_with(&a, &b, s, None, false, true);
            assert_close(&ctx.read::<f32>(&got, 35).unwrap(), &want, 1e-3);
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        for ctx in contexts_of_each_class("matmul::empty_inner_dimension_gives_zeros") {
            let a = ctx.alloc(4).unwrap();
            let out = matmul(&ctx, &a, &a, MatmulShape::new(1, 3, 2, 0)).unwrap();
            assert_eq!(ctx.read::<f32>(&out, 6).unwrap(), vec![0.0; 6]);
        }
    }

    #[test]
    fn short_operand_is_an_error() {
        for ctx in contexts_of_each_class("matmul::short_operand_is_an_error") {
            let small = ctx.upload(&[1.0f32; 4]).unwrap();
            assert!(matmul(&ctx, &small, &small, MatmulShape::new(1, 8, 8, 8)).is_err());
        }
    }
}
