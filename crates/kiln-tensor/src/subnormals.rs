//! Subnormal floats flushed to zero on the threads that run Kiln's CPU ops.
//!
//! Adam's moment estimates of parameters whose gradient is zero decay geometrically through
//! the subnormal range, and Intel cores compute on subnormals through microcode assists
//! about a hundred times slower than normal arithmetic (AMD's cost far less): on a Xeon that
//! alone halved the ASL MLP's training speed. So the CPU path computes with FTZ (results
//! that would be subnormal become zero) and DAZ (subnormal inputs read as zero), as GPUs do.
//! Values below 1.2e-38 are all that change, far inside every parity tolerance.
//!
//! The calling thread gets the mode only while one of Kiln's ops runs (`for_this_op`), so
//! the user's own float code keeps IEEE semantics; rayon's worker threads, which run the
//! ops' parallel parts and gemm's, get it for good (`crate::threads`).

#[cfg(target_arch = "x86_64")]
mod arch {
    /// MXCSR's flush-to-zero and denormals-are-zero bits.
    pub const FLUSH: u64 = (1 << 15) | (1 << 6);

    pub fn read() -> u64 {
        let mut csr = 0u32;
        // SAFETY: stores the 32-bit MXCSR into a local.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
        u64::from(csr)
    }

    pub fn write(csr: u64) {
        let csr = csr as u32;
        // SAFETY: loads MXCSR from a value read by `read` with only FTZ/DAZ changed.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags)) };
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    /// FPCR's flush-to-zero bit (it covers inputs and results alike).
    pub const FLUSH: u64 = 1 << 24;

    pub fn read() -> u64 {
        let fpcr: u64;
        // SAFETY: reads the floating-point control register.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
        fpcr
    }

    pub fn write(fpcr: u64) {
        // SAFETY: writes back a value read by `read` with only FZ changed.
        unsafe { std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags)) };
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod arch {
    /// No control of subnormals here: the CPU computes with IEEE semantics.
    pub const FLUSH: u64 = 0;

    pub fn read() -> u64 {
        0
    }

    pub fn write(_: u64) {}
}

/// Whether this thread flushes subnormals now.
pub fn flushing_on_this_thread() -> bool {
    arch::read() & arch::FLUSH == arch::FLUSH
}

pub(crate) fn flush_for_good() {
    arch::write(arch::read() | arch::FLUSH);
}

/// Restores the calling thread's float mode when the op that set it ends.
pub(crate) struct Flushed {
    saved: Option<u64>,
}

impl Drop for Flushed {
    fn drop(&mut self) {
        if let Some(mode) = self.saved {
            arch::write(mode);
        }
    }
}

/// Flushes subnormals on the calling thread until the guard drops.
pub(crate) fn for_this_op() -> Flushed {
    let mode = arch::read();
    if mode & arch::FLUSH == arch::FLUSH {
        return Flushed { saved: None };
    }
    arch::write(mode | arch::FLUSH);
    Flushed { saved: Some(mode) }
}
