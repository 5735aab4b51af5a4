//! Whether operations are recorded for differentiation on this thread.

use std::cell::Cell;

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// True unless inside [`no_grad`] (or while a [`NoGradGuard`] lives) on this thread.
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|depth| depth.get() == 0)
}

/// Turns recording off until dropped, as `torch.no_grad()` does for a `with` block.
pub struct NoGradGuard {
    // Recording state is per thread: the guard must drop on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl NoGradGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NO_GRAD_DEPTH.with(|depth| depth.set(depth.get() + 1));
        Self { _not_send: std::marker::PhantomData }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Runs `f` without recording anything: evaluation and optimizer updates.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}
