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

/// The shared context and others on the same adapter, so that every variant of a kernel
/// family is tested: both [`KernelClass`](crate::KernelClass)es, and both
/// [`WorkgroupSums`](crate::WorkgroupSums) where the adapter has subgroups (the portable
/// kernels' context is then opened without them). The software class needs subgroups:
/// where the adapter lacks them only the portable kernels are tested, after a notice.
/// Empty when [`context_or_skip`] skips.
pub fn contexts_of_each_class(test: &str) -> Vec<GpuContext> {
    use crate::{AdapterPreference, ContextOptions, KernelClass, WorkgroupSums};
    static OTHERS: OnceLock<Vec<GpuContext>> = OnceLock::new();
    let Some(shared) = context_or_skip(test) else { return Vec::new() };
    let others = OTHERS.get_or_init(|| {
        let open = |class, without_subgroups| {
            GpuContext::with_options(
                &AdapterPreference::from_env(),
                ContextOptions { class: Some(class), without_subgroups },
            )
        };
        let portable_with_tree = || match open(KernelClass::Hardware, true) {
            Ok(ctx) => ctx,
            Err(e) => panic!("{test}: no context with the portable kernels: {e}"),
        };
        match shared.kernel_class() {
            KernelClass::Software => vec![portable_with_tree()],
            KernelClass::Hardware => {
                let mut others = Vec::new();
                match open(KernelClass::Software, false) {
                    Ok(ctx) => others.push(ctx),
                    Err(e) => eprintln!("kiln GPU tests: the software kernels are not tested on this adapter: {e}"),
                }
                if shared.workgroup_sums() == WorkgroupSums::Subgroup {
                    others.push(portable_with_tree());
                }
                others
            }
        }
    });
    std::iter::once(shared).chain(others.iter().cloned()).collect()
}
