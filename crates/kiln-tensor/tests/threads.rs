//! `threads::compute_on_this_thread`, in a test binary of its own: rayon's global pool is
//! started once per process.

use std::time::{Duration, Instant};

use kiln_tensor::{Device, Tensor, subnormals, threads};
use kiln_wgsl::testing::context_or_skip;

/// Whether `holds()` comes true within a second.
fn comes_true(holds: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if holds() {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

#[test]
fn the_calling_thread_computes_as_one_of_the_pool_s_threads() {
    assert!(threads::compute_on_this_thread(Some(2)), "nothing had started the pool");
    assert_eq!(rayon::current_thread_index(), Some(0), "this thread is the pool's first");
    assert_eq!(rayon::current_num_threads(), 2);
    assert!(!threads::compute_on_this_thread(Some(3)), "a second call changes nothing");
    assert_eq!(rayon::current_num_threads(), 2);

    // Ops split across both threads give the bits one thread gives (a 256-row product is
    // cut into blocks of rows; batch norm and the elementwise maps into tasks).
    let x = Tensor::randn(&[256, 300], 1, &Device::Cpu).unwrap();
    let w = Tensor::randn(&[200, 300], 2, &Device::Cpu).unwrap();
    let run = || x.matmul_t(&w, false, true).unwrap().relu().unwrap().sum(0, false).unwrap().to_vec().unwrap();
    let alone = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    assert_eq!(run(), alone);

    // The other thread flushes subnormals from its start; this one only while an op runs.
    let flushing = rayon::broadcast(|_| subnormals::flushing_on_this_thread());
    assert_eq!(flushing, vec![false, true]);

    // After a CPU op the other thread looks for work for a while instead of sleeping, then
    // stops when none comes. Counted as waits begun, not as threads waiting now: a wait lasts
    // a millisecond, which this thread may spend off its core. `settle` first runs every
    // wait queued so far (this thread's included, which would hold back the next one).
    settle();
    let begun = threads::waits_for_work_begun();
    x.relu().unwrap();
    assert!(comes_true(|| threads::waits_for_work_begun() > begun), "the other thread waits for work after a CPU op");
    assert!(comes_true(|| threads::threads_waiting_for_work() == 0), "and stops when none comes");

    // GPU ops leave the threads asleep: on a software adapter they would take its cores.
    if let Some(ctx) = context_or_skip("threads: GPU ops leave the CPU's threads asleep") {
        let x = x.to(&Device::Gpu(ctx)).unwrap();
        settle();
        let begun = threads::waits_for_work_begun();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x.relu().unwrap().sum(0, false).unwrap();
        }
        settle();
        assert_eq!(threads::waits_for_work_begun(), begun, "a GPU op set the threads waiting");
    }
}

/// Runs every job queued on the pool's threads so far to its end, waits for work included:
/// a broadcast reaches each thread behind the jobs already queued there, and a thread in
/// a wait runs it from inside that wait, so the waits are then waited out.
fn settle() {
    rayon::broadcast(|_| ());
    assert!(comes_true(|| threads::threads_waiting_for_work() == 0), "a wait for work never ended");
}
