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

/// Whether no thread of the pool is looking for work within a second.
fn all_stop_waiting() -> bool {
    comes_true(|| threads::threads_waiting_for_work() == 0)
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
    // stops when none comes; this thread never waits so. (The count of waits begun, not the
    // threads waiting now: a wait lasts a millisecond, which this thread may spend off its
    // core.)
    assert!(all_stop_waiting(), "nothing waits long after the ops above");
    let begun = threads::waits_for_work_begun();
    x.relu().unwrap();
    assert!(
        comes_true(|| threads::waits_for_work_begun() == begun + 1),
        "the other thread, and only it, waits for work after a CPU op"
    );
    assert!(all_stop_waiting(), "and stops when none comes");
    assert_eq!(threads::waits_for_work_begun(), begun + 1, "one wait for one op");

    // GPU ops leave the threads asleep: on a software adapter they would take its cores.
    if let Some(ctx) = context_or_skip("threads: GPU ops leave the CPU's threads asleep") {
        let x = x.to(&Device::Gpu(ctx)).unwrap();
        let begun = threads::waits_for_work_begun();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x.relu().unwrap().sum(0, false).unwrap();
        }
        assert_eq!(threads::waits_for_work_begun(), begun, "a GPU op set the threads waiting");
    }
}
