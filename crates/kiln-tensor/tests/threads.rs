//! `threads::compute_on_this_thread`, in a test binary of its own: rayon's global pool is
//! started once per process.

use std::time::{Duration, Instant};

use kiln_tensor::{Device, Tensor, subnormals, threads};
use kiln_wgsl::testing::context_or_skip;

/// Whether `threads_waiting_for_work()` comes to `count` within a second.
fn comes_to(count: usize) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if threads::threads_waiting_for_work() == count {
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
    // stops when none comes; this thread never waits so.
    assert!(comes_to(0), "nothing waits long after the ops above");
    x.relu().unwrap();
    assert!(comes_to(1), "the other thread waits for work after a CPU op");
    assert!(comes_to(0), "and stops when none comes");

    // GPU ops leave the threads asleep: on a software adapter they would take its cores.
    if let Some(ctx) = context_or_skip("threads: GPU ops leave the CPU's threads asleep") {
        let x = x.to(&Device::Gpu(ctx)).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x.relu().unwrap().sum(0, false).unwrap();
            assert_eq!(threads::threads_waiting_for_work(), 0, "a GPU op set the threads waiting");
        }
    }
}
