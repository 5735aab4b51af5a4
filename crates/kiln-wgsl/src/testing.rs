//! The GPU-test policy shared by every Kiln crate's tests.
//!
//! A GPU test asks for the context here. Where no adapter exists it skips, loudly, unless
//! `KILN_REQUIRE_GPU=1` is set (as CI sets it): then a missing adapter fails the test.

use std::sync::Once;

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
