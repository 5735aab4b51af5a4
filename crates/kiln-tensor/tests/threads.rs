//! `threads::compute_on_this_thread`, in a test binary of its own: rayon's global pool is
//! started once per process.

use kiln_tensor::{Device, Tensor, subnormals, threads};

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
}
