//! The threads Kiln's CPU ops run on: rayon's global pool, whose threads flush subnormals
//! for good (see `subnormals`).
//!
//! An op that splits its work hands it to the pool. Called from a thread outside the pool
//! that is a hand-off each time: the caller queues the pieces and sleeps until the pool's
//! threads, woken for them, are done. On 2 cores of an Intel Xeon VM that waking and
//! switching took ~13% of the Fashion-MNIST MLP's training time (`perf`). A program whose
//! main thread trains can make that thread one of the pool's ([`compute_on_this_thread`]):
//! its ops then keep a piece of their work and leave the rest for the other threads to
//! steal, as the pool's own threads do, and it never sleeps between ops.

use std::sync::Once;

use crate::subnormals;

static POOL: Once = Once::new();

/// The pool's builder: `threads` threads in all (`None`: rayon's default, one per core or
/// `RAYON_NUM_THREADS`), each flushing subnormals from its start.
fn builder(threads: Option<usize>) -> rayon::ThreadPoolBuilder {
    let builder = rayon::ThreadPoolBuilder::new().start_handler(|_| subnormals::flush_for_good());
    match threads {
        Some(threads) => builder.num_threads(threads),
        None => builder,
    }
}

/// Makes the calling thread one of `threads` threads (`None`: one per core, or
/// `RAYON_NUM_THREADS`) that Kiln's CPU ops run on, the others started now. Call it first
/// in a program's main thread, the one that will train, before anything uses rayon (Kiln's
/// ops, its data loading); the thread must live as long as the program, as a main thread
/// does. Returns false, changing nothing, when the pool has started already.
///
/// `asl-app`, the examples and the training bench call it; without it the pool starts on
/// first use with a thread per core and the caller outside it.
pub fn compute_on_this_thread(threads: Option<usize>) -> bool {
    let mut started = false;
    POOL.call_once(|| started = builder(threads).use_current_thread().build_global().is_ok());
    started
}

/// Starts the pool with a thread per core when nothing has, so that its threads flush
/// subnormals; when something else started it, tells each of its threads to flush.
pub(crate) fn prepare_workers() {
    POOL.call_once(|| {
        if builder(None).build_global().is_err() {
            rayon::broadcast(|_| subnormals::flush_for_good());
        }
    });
}
