//! The kernel families: one `.wgsl` file each, with a typed launcher here that allocates the
//! output, fills the uniform block and records the dispatch. Launchers take buffers and
//! plain shapes; what those mean as tensors is kiln-tensor's business.

/// The size and named field offsets of a Rust `Params` struct (padding fields, named `_…`,
/// left out), checked against the WGSL struct of the same fields by `params_match_the_wgsl`.
#[cfg(test)]
macro_rules! params_layout {
    ($ty:ty: $($field:ident),*) => {
        super::test_support::Layout {
            size: size_of::<$ty>(),
            fields: &[$((stringify!($field), std::mem::offset_of!($ty, $field))),*],
        }
    };
}

pub mod batch_norm;
pub mod binary;
pub mod channel_sums;
pub mod classification;
pub mod conv;
pub mod convert;
pub mod dropout;
pub mod fill;
pub mod gather;
pub mod index_add;
pub mod matmul;
pub mod optimizer;
pub mod permute;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

/// Rank of the largest tensor the strided kernels (binary, permute) index.
pub const MAX_RANK: usize = 8;

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// Shapes and strides as the strided kernels' uniforms hold them: two vec4<u32>.
pub(crate) fn packed_dims(dims: &[usize]) -> [u32; MAX_RANK] {
    let mut packed = [0u32; MAX_RANK];
    for (slot, &d) in packed.iter_mut().zip(dims) {
        *slot = d as u32;
    }
    packed
}

/// Fails a launch whose element count or rank the kernels cannot index.
pub(crate) fn check_indexable(kernel: &'static str, len: usize, rank: usize) -> crate::Result<()> {
    if rank > MAX_RANK {
        return Err(crate::GpuError::InvalidLaunch {
            kernel,
            reason: format!("rank {rank} exceeds the {MAX_RANK} dimensions the kernel indexes"),
        });
    }
    if len > u32::MAX as usize {
        return Err(crate::GpuError::InvalidLaunch {
            kernel,
            reason: format!("{len} elements exceed the 32-bit indices the kernels use"),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use proptest::prelude::*;

    /// A Rust parameter block's size and its fields' offsets by name.
    pub struct Layout {
        pub size: usize,
        pub fields: &'static [(&'static str, usize)],
    }

    /// Deterministic values in [-2, 2) so results are checkable without huge magnitudes.
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    pub fn assert_close(got: &[f32], want: &[f32], tolerance: f32) {
        assert_eq!(got.len(), want.len(), "length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let scale = 1.0f32.max(w.abs());
            let same = g == w || (g.is_nan() && w.is_nan());
            assert!(same || (g - w).abs() <= tolerance * scale, "element {i}: got {g}, want {w}");
        }
    }

    /// Sums of f32 terms kept exactly enough (f64) to judge an f32 kernel by the rounding its
    /// additions cause: an f32 reference is itself off by that much, and once failed a correct
    /// kernel (a weight gradient of 165 terms, 9e-6 off the truth where the kernel was 2e-6).
    pub struct Sums {
        value: Vec<f64>,
        magnitude: Vec<f64>,
        partials_squared: Vec<f64>,
    }

    impl Sums {
        pub fn zeros(len: usize) -> Self {
            Sums { value: vec![0.0; len], magnitude: vec![0.0; len], partials_squared: vec![0.0; len] }
        }

        pub fn add(&mut self, i: usize, term: f64) {
            self.value[i] += term;
            self.magnitude[i] += term.abs();
            self.partials_squared[i] += self.value[i] * self.value[i];
        }

        /// Applies a function that moves no two values further apart than they were (ReLU).
        pub fn map_contracting(&mut self, f: impl Fn(f64) -> f64) {
            self.value.iter_mut().for_each(|v| *v = f(*v));
        }

        /// Each element within ε·(Σ|tᵢ| + 4·√ΣSₖ²) of its exact sum. To first order an f32
        /// sum is off by Σδₖ·Sₖ, each addition rounding its partial sum Sₖ by |δₖ| ≤ ε, plus
        /// at most ε·Σ|tᵢ| from rounding the products. The worst case, ε·Σ|Sₖ|, exceeds the
        /// sum itself for long sums; taking the δₖ as independent (spread ε·√(ΣSₖ²/3)) and
        /// allowing 7 spreads keeps one missing term of a long sum visible. The partial sums
        /// are those of the reference's order, which for random terms are as large as any
        /// other order's.
        pub fn assert_matches(&self, got: &[f32]) {
            assert_eq!(got.len(), self.value.len(), "length");
            let epsilon = f64::from(f32::EPSILON);
            for (i, &g) in got.iter().enumerate() {
                let bound = epsilon * (self.magnitude[i] + 4.0 * self.partials_squared[i].sqrt());
                let error = (f64::from(g) - self.value[i]).abs();
                assert!(
                    error <= bound,
                    "element {i}: got {g}, want {} (exact), {error:e} off where rounding allows {bound:e}",
                    self.value[i]
                );
            }
        }
    }

    /// Dimensions including the awkward ones: 1, primes, and sizes just past a workgroup.
    pub fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![1..=9usize, Just(13usize), Just(31), Just(67), Just(257)]
    }

    /// Shapes of 1 to 4 such dimensions, capped at 2¹⁶ elements so host loops stay quick.
    pub fn shape() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(dim(), 1..=4).prop_map(|mut shape| {
            while shape.iter().product::<usize>() > 1 << 16 {
                let largest = (0..shape.len()).max_by_key(|&i| shape[i]).expect("a large shape has axes");
                shape[largest] = (shape[largest] / 4).max(1);
            }
            shape
        })
    }
}

#[cfg(test)]
mod params_tests {
    use super::test_support::Layout;
    use crate::KernelFamily;
    use crate::wgpu::naga;

    /// The struct of the family's `var<uniform> p`: (size, [(field, offset)]), as naga
    /// lays it out from the module the pipelines compile.
    fn wgsl_params(family: &KernelFamily) -> (u32, Vec<(String, u32)>) {
        let source = crate::pipeline::module_source(family, crate::WorkgroupSums::Tree);
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{}: {e}", family.name));
        let (_, uniform) = module
            .global_variables
            .iter()
            .find(|(_, v)| v.space == naga::AddressSpace::Uniform)
            .unwrap_or_else(|| panic!("{}: no uniform parameters", family.name));
        match &module.types[uniform.ty].inner {
            naga::TypeInner::Struct { members, span } => {
                (*span, members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset)).collect())
            }
            other => panic!("{}: the parameters are a {other:?}, not a struct", family.name),
        }
    }

    /// Every WGSL field sits where the Rust field of its name does, there is no Rust field
    /// the WGSL lacks, and the Rust block covers the WGSL struct.
    fn check(family: &KernelFamily, rust: &Layout) {
        let (span, fields) = wgsl_params(family);
        for (name, offset) in &fields {
            let rust_offset = rust.fields.iter().find(|(n, _)| n == name).map(|(_, o)| *o as u32);
            assert_eq!(rust_offset, Some(*offset), "{}: field {name}", family.name);
        }
        for (name, _) in rust.fields {
            assert!(fields.iter().any(|(n, _)| n == name), "{}: WGSL has no field {name}", family.name);
        }
        assert!(rust.size as u32 >= span, "{}: Rust sends {} bytes, WGSL reads {span}", family.name, rust.size);
        assert!(rust.size <= crate::MAX_PARAMS_BYTES, "{}: {} bytes of parameters", family.name, rust.size);
    }

    #[test]
    fn params_match_the_wgsl() {
        use super::*;
        let families = [
            (&batch_norm::FAMILY, &batch_norm::PARAMS),
            (&binary::FAMILY, &binary::PARAMS),
            (&channel_sums::FAMILY, &channel_sums::PARAMS),
            (&classification::FAMILY, &classification::PARAMS),
            (&conv::FAMILY, &conv::PARAMS),
            (&conv::SOFTWARE_FAMILY, &conv::PARAMS),
            (&conv::TILED_FAMILY, &conv::PARAMS),
            (&convert::FAMILY, &convert::PARAMS),
            (&dropout::FAMILY, &dropout::PARAMS),
            (&fill::FAMILY, &fill::PARAMS),
            (&gather::FAMILY, &gather::PARAMS),
            (&index_add::FAMILY, &index_add::PARAMS),
            (&matmul::FAMILY, &matmul::PARAMS),
            (&matmul::SOFTWARE_FAMILY, &matmul::PARAMS),
            (&permute::FAMILY, &permute::PARAMS),
            (&pool::FAMILY, &pool::PARAMS),
            (&reduce::FAMILY, &reduce::PARAMS),
            (&softmax::FAMILY, &softmax::PARAMS),
            (&unary::FAMILY, &unary::PARAMS),
        ];
        for (family, layout) in families {
            check(family, layout);
        }
    }

    #[test]
    fn generated_optimizer_params_match_the_words_sent() {
        for (family, words) in super::optimizer::generated_families() {
            let (span, fields) = wgsl_params(family);
            assert_eq!(span as usize, 4 * words, "{}", family.name);
            assert_eq!(fields.last().map(|(n, o)| (n.as_str(), *o)), Some(("tensors", 32)), "{}", family.name);
        }
    }
}
