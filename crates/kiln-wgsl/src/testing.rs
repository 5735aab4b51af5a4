//! The GPU-test policy shared by every Kiln crate's tests.
//!
//! A GPU test asks for the context here. Where no adapter exists it skips, loudly, unless
//! `KILN_REQUIRE_GPU=1` is set (as CI sets it): then a missing adapter fails the test.

use std::sync::{Once, OnceLock};

use crate::GpuContext;

/// Set to `1` to turn a missing GPU adapter into a test failure.
pub const REQUIRE_GPU_ENV: &str = "KILN_REQUIRE_GPU";

pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1")
}

/// The shared context, or `None` after a skip notice when there is no adapter and the GPU
/// is not required. Panics when it is required and missing.
pub fn context_or_skip(test: &str) -> Option<GpuContext> {
    static ANNOUNCE: Once = Once::new();
    match GpuContext::global() {
        Ok(ctx) => {
            ANNOUNCE.call_once(|| eprintln!("kiln GPU tests run on adapter: {}", ctx.adapter()));
            Some(ctx)
        }
        Err(e) if gpu_required() => panic!("{test}: {REQUIRE_GPU_ENV}=1 but no GPU context: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: no GPU adapter ({e}); set {REQUIRE_GPU_ENV}=1 to fail instead");
            None
        }
    }
}

/// The shared context and a second one on the same adapter with the other
/// [`KernelClass`](crate::KernelClass), so both variants of a kernel family are tested. The
/// software class needs subgroups: where the adapter lacks them only the portable kernels
/// are tested, after a notice. Empty when [`context_or_skip`] skips.
pub fn contexts_of_each_class(test: &str) -> Vec<GpuContext> {
    use crate::{AdapterPreference, KernelClass};
    static OTHER: OnceLock<Option<GpuContext>> = OnceLock::new();
    let Some(shared) = context_or_skip(test) else { return Vec::new() };
    let other = OTHER.get_or_init(|| {
        let class = match shared.kernel_class() {
            KernelClass::Software => KernelClass::Hardware,
            KernelClass::Hardware => KernelClass::Software,
        };
        match GpuContext::with_kernel_class(&AdapterPreference::from_env(), class) {
            Ok(ctx) => Some(ctx),
            Err(e) if class == KernelClass::Software => {
                eprintln!("kiln GPU tests: the software kernels are not tested on this adapter: {e}");
                None
            }
            Err(e) => panic!("{test}: no context with the portable kernels: {e}"),
        }
    });
    std::iter::once(shared).chain(other.clone()).collect()
}
