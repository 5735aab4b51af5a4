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
//!
//! The other threads still slept between ops: a thread that finds no work sleeps after a
//! few dozen microseconds, and the next op's pieces waited while it was woken: `perf stat`
//! counted ~15,000 context switches in a 2.8 s run of the Fashion-MNIST MLP's training
//! bench (~4,900 with the wait below). So every CPU op, as it
//! reads its operands ([`expect_work`]), has the pool's other threads look for work for
//! [`WAIT_FOR_WORK`] after their last piece before they sleep, as OpenMP's threads spin
//! before they block. GPU ops never read host values and leave the threads asleep (on
//! lavapipe a spinning thread would take a core from the adapter's own threads).

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::subnormals;

static POOL: Once = Once::new();

/// Jobs of [`wait_for_work`] queued or running, one per thread of the pool: new ones are
/// queued only when none is left.
static WAIT_JOBS: AtomicUsize = AtomicUsize::new(0);

/// Threads now looking for work in [`wait_for_work`].
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Times a thread has begun looking for work in [`wait_for_work`], since the program began.
static WAITS_BEGUN: AtomicUsize = AtomicUsize::new(0);

/// How long the pool's threads look for work after their last piece. Interleaved 3 s
/// rounds of the training bench on a 2-core Intel Xeon VM, samples/s with no wait → 0.25
/// ms → 1 ms → 4 ms: Fashion-MNIST MLP 33,365 → 38,139 → 38,362 → 36,782, MNIST MLP 89,358
/// → 113,262 → 116,636 → 112,820, LeNet 8,534 → 11,257 → 11,158 → 10,833 (a second round
/// alike); the CNNs moved by 0–8%.
const WAIT_FOR_WORK: Duration = Duration::from_millis(1);

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

/// Called by every CPU op as it reads its operands: unless they are at it already, the
/// pool's threads look for work for [`WAIT_FOR_WORK`] after their last piece, so that this
/// op's pieces and the next ops' are taken at once instead of after a wake-up.
pub(crate) fn expect_work() {
    if WAIT_JOBS.load(Ordering::Relaxed) != 0 {
        return;
    }
    prepare_workers();
    let threads = rayon::current_num_threads();
    if threads > 1 && WAIT_JOBS.compare_exchange(0, threads, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        rayon::spawn_broadcast(|_| wait_for_work());
    }
}

/// The pool's threads now looking for work (see [`expect_work`]): for tests and diagnostics.
pub fn threads_waiting_for_work() -> usize {
    WAITING.load(Ordering::Relaxed)
}

/// How many times, since the program began, one of the pool's threads has begun looking for
/// work (see [`expect_work`]). Unlike [`threads_waiting_for_work`] it cannot be missed by
/// an observer the OS keeps off a core for the whole wait, as happens on 2 cores when the
/// woken thread is placed on the observer's.
pub fn waits_for_work_begun() -> usize {
    WAITS_BEGUN.load(Ordering::Relaxed)
}

/// Runs the pool's pending pieces of work as they come, until none has come for
/// [`WAIT_FOR_WORK`]. Thread 0 returns at once: it is the program's own thread (see
/// [`compute_on_this_thread`]), which runs this job only while it waits inside an op of its
/// own, or, where the program's thread is outside the pool, it leaves that thread a core.
fn wait_for_work() {
    let waits = rayon::current_thread_index() != Some(0);
    if waits {
        WAITING.fetch_add(1, Ordering::Relaxed);
        WAITS_BEGUN.fetch_add(1, Ordering::Relaxed);
        let mut last = Instant::now();
        while last.elapsed() < WAIT_FOR_WORK {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => last = Instant::now(),
                // A short pause between looks, so that looking does not crowd the core's
                // other hyperthread or the deque being looked at.
                _ => (0..8).for_each(|_| std::hint::spin_loop()),
            }
        }
    }
    // The job ends before the thread stops counting as waiting: no thread waiting then means
    // that no job begun is left (tests/threads.rs relies on it).
    WAIT_JOBS.fetch_sub(1, Ordering::AcqRel);
    if waits {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}
