//! Where a training step's time goes, op by op: every tensor op, when profiling is on, adds
//! its wall time to the phase the training loop says it is in (data, forward, backward,
//! optimizer, …). An op called by another op counts towards the outer one only, so the
//! times add up. Ops on other threads (a data loader's workers) run alongside the step:
//! they are listed apart, under [`OVERLAPPING`], and not counted in its wall time. On the CPU an op's time is its compute; on a GPU it is the host's cost of
//! recording it (the work runs later), and the wait shows up in the op that reads a result.
//!
//! ```no_run
//! kiln_tensor::profile::enable(true);
//! // … train: kiln's training loop names its phases with `set_phase` …
//! println!("{}", kiln_tensor::profile::take());
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{subnormals, threads};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The phase of ops on threads that never named one.
pub const OVERLAPPING: &str = "other threads (overlapping)";

struct Recording {
    /// The loop's phase; wall time before the first `set_phase` belongs to none.
    phase: Option<&'static str>,
    phase_started: Instant,
    phases: HashMap<&'static str, PhaseTotals>,
    /// Phases in the order they were first entered, for the report.
    order: Vec<&'static str>,
}

#[derive(Default)]
struct PhaseTotals {
    wall: Duration,
    ops: HashMap<&'static str, (u64, Duration)>,
}

static RECORDING: Mutex<Option<Recording>> = Mutex::new(None);

fn recording<T>(f: impl FnOnce(&mut Recording) -> T) -> T {
    let mut guard = RECORDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let recording = guard.get_or_insert_with(|| Recording {
        phase: None,
        phase_started: Instant::now(),
        phases: HashMap::new(),
        order: Vec::new(),
    });
    f(recording)
}

impl Recording {
    fn totals(&mut self, phase: &'static str) -> &mut PhaseTotals {
        if !self.phases.contains_key(phase) {
            self.order.push(phase);
        }
        self.phases.entry(phase).or_default()
    }

    fn close_phase(&mut self, now: Instant) {
        let elapsed = now - self.phase_started;
        if let Some(phase) = self.phase {
            self.totals(phase).wall += elapsed;
        }
        self.phase_started = now;
    }
}

/// Turns recording on or off (off by default; while off an op pays one atomic load).
pub fn enable(on: bool) {
    if on {
        recording(|r| r.phase_started = Instant::now());
    }
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Names the part of the step that runs from now on, on the calling thread (the training
/// loop's): its wall time, ops and everything between them, is counted under this name.
pub fn set_phase(phase: &'static str) {
    if !is_enabled() {
        return;
    }
    PHASE.set(Some(phase));
    recording(|r| {
        r.close_phase(Instant::now());
        r.phase = Some(phase);
    });
}

/// What was recorded since the last `take`, and a fresh start.
pub fn take() -> Profile {
    recording(|r| {
        r.close_phase(Instant::now());
        let mut phases: Vec<PhaseProfile> = r
            .order
            .drain(..)
            .map(|name| {
                let totals = r.phases.remove(name).unwrap_or_default();
                let mut ops: Vec<OpProfile> =
                    totals.ops.into_iter().map(|(name, (calls, time))| OpProfile { name, calls, time }).collect();
                ops.sort_by(|a, b| b.time.cmp(&a.time).then(a.name.cmp(b.name)));
                PhaseProfile { name, wall: totals.wall, ops }
            })
            .collect();
        phases.retain(|p| !p.ops.is_empty() || p.wall >= Duration::from_micros(1));
        // Last: not part of the step's time.
        phases.sort_by_key(|p| p.name == OVERLAPPING);
        Profile { phases }
    })
}

/// One op's share of a phase.
#[derive(Clone, Debug, PartialEq)]
pub struct OpProfile {
    pub name: &'static str,
    pub calls: u64,
    pub time: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PhaseProfile {
    pub name: &'static str,
    /// All the time spent in the phase, inside ops or not.
    pub wall: Duration,
    /// Slowest first.
    pub ops: Vec<OpProfile>,
}

impl PhaseProfile {
    /// The phase's time outside any tensor op (graph bookkeeping, allocation, the loop).
    pub fn outside_ops(&self) -> Duration {
        self.wall.saturating_sub(self.ops.iter().map(|op| op.time).sum())
    }
}

/// The phases in the order the loop entered them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub phases: Vec<PhaseProfile>,
}

impl Profile {
    /// The step's time: every phase but the other threads'.
    pub fn wall(&self) -> Duration {
        self.phases.iter().map(|p| p.wall).sum()
    }

    /// The phase named `name`, if it ran.
    pub fn phase(&self, name: &str) -> Option<&PhaseProfile> {
        self.phases.iter().find(|p| p.name == name)
    }
}

impl fmt::Display for Profile {
    /// A table: each phase with its share of the wall time, then its ops, slowest first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.wall().as_secs_f64().max(1e-12);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let share = |d: Duration| 100.0 * d.as_secs_f64() / total;
        writeln!(f, "{:<32} {:>10} {:>11} {:>7}", "phase / op", "calls", "total ms", "share")?;
        for phase in &self.phases {
            let overlapping = phase.name == OVERLAPPING;
            if overlapping {
                writeln!(f, "{}", phase.name)?;
            } else {
                writeln!(f, "{:<32} {:>10} {:>11.2} {:>6.1}%", phase.name, "", ms(phase.wall), share(phase.wall))?;
            }
            for op in &phase.ops {
                writeln!(f, "  {:<30} {:>10} {:>11.2} {:>6.1}%", op.name, op.calls, ms(op.time), share(op.time))?;
            }
            if overlapping {
                continue;
            }
            let outside = phase.outside_ops();
            writeln!(f, "  {:<30} {:>10} {:>11.2} {:>6.1}%", "(outside ops)", "", ms(outside), share(outside))?;
        }
        Ok(())
    }
}

thread_local! {
    /// How many ops the thread is inside: only the outermost times itself and sets the
    /// float mode.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The phase this thread's ops count towards (`None`: [`OVERLAPPING`]).
    static PHASE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// What an op holds while it runs (see [`enter`]).
pub(crate) struct OpScope {
    outermost: Option<Outermost>,
}

struct Outermost {
    name: &'static str,
    started: Option<Instant>,
    _flushed: subnormals::Flushed,
}

/// Called first by every public tensor op: subnormals flushed while it runs (see
/// `subnormals`) and, when profiling is on, its time recorded under `name`.
pub(crate) fn enter(name: &'static str) -> OpScope {
    let depth = DEPTH.get();
    DEPTH.set(depth + 1);
    if depth > 0 {
        return OpScope { outermost: None };
    }
    threads::prepare_workers();
    let _flushed = subnormals::for_this_op();
    let started = is_enabled().then(Instant::now);
    OpScope { outermost: Some(Outermost { name, started, _flushed }) }
}

impl Drop for OpScope {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get() - 1);
        if let Some(Outermost { name, started: Some(started), .. }) = &self.outermost {
            let elapsed = started.elapsed();
            let phase = PHASE.get().unwrap_or(OVERLAPPING);
            recording(|r| {
                let (calls, time) = r.totals(phase).ops.entry(name).or_default();
                *calls += 1;
                *time += elapsed;
            });
        }
    }
}
