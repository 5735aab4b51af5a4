//! The learning-rate schedules a training program offers by name (`--scheduler`), each set
//! as the PyTorch tutorials' homework uses it and stepped where PyTorch's loops step it:
//! StepLR, CosineAnnealingLR and ReduceLROnPlateau after each epoch, OneCycleLR after each
//! batch.

use kiln_optim::{CosineAnnealingLr, Hooked, LrScheduler, OneCycleLr, Optimizer, ReduceLrOnPlateau, StepLr};

use crate::training::History;

/// A schedule by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// StepLR: the rate × 0.1 after each third of the epochs.
    Step,
    /// CosineAnnealingLR: from the rate down to 0 along a half cosine over the run.
    Cosine,
    /// OneCycleLR peaking at the rate: up over the first 30% of the batches, then down.
    OneCycle,
    /// ReduceLROnPlateau on the validation loss: × 0.1 after 2 epochs without improving.
    Plateau,
}

impl ScheduleKind {
    pub const NAMES: [&str; 4] = ["step", "cosine", "onecycle", "plateau"];
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "step" => Ok(ScheduleKind::Step),
            "cosine" => Ok(ScheduleKind::Cosine),
            "onecycle" => Ok(ScheduleKind::OneCycle),
            "plateau" => Ok(ScheduleKind::Plateau),
            other => Err(format!("{other:?} is not a schedule: one of {}", ScheduleKind::NAMES.join(", "))),
        }
    }
}

/// A schedule driving one optimizer through a run of `epochs` × `batches_per_epoch`.
pub enum Schedule {
    PerEpoch(Box<dyn LrScheduler>),
    PerBatch(OneCycleLr),
    Plateau(ReduceLrOnPlateau),
}

impl Schedule {
    /// The schedule, starting from the optimizer's rate (OneCycleLR sets its starting rate
    /// and momentum at once, as PyTorch's constructor does).
    pub fn new(kind: ScheduleKind, optimizer: &mut dyn Optimizer, epochs: usize, batches_per_epoch: usize) -> Self {
        match kind {
            ScheduleKind::Step => Schedule::PerEpoch(Box::new(StepLr::new(optimizer, epochs.div_ceil(3) as u64, 0.1))),
            ScheduleKind::Cosine => Schedule::PerEpoch(Box::new(CosineAnnealingLr::new(optimizer, epochs as u64, 0.0))),
            ScheduleKind::OneCycle => {
                let peak = optimizer.lr();
                Schedule::PerBatch(OneCycleLr::new(optimizer, peak, (epochs * batches_per_epoch).max(1) as u64))
            }
            ScheduleKind::Plateau => Schedule::Plateau(ReduceLrOnPlateau::new(0.1, 2, 0)),
        }
    }

    /// After each batch's optimizer step.
    pub fn after_batch(&mut self, optimizer: &mut dyn Optimizer) {
        if let Schedule::PerBatch(schedule) = self {
            schedule.step(optimizer);
        }
    }

    /// After each epoch, with that epoch's validation loss.
    pub fn after_epoch(&mut self, optimizer: &mut dyn Optimizer, valid_loss: f32) {
        match self {
            Schedule::PerEpoch(schedule) => schedule.step(optimizer),
            Schedule::PerBatch(_) => {}
            Schedule::Plateau(schedule) => {
                schedule.observe(valid_loss);
                schedule.step(optimizer);
            }
        }
    }

    /// Steps through the part of a run that `history` records (its epochs, and an
    /// interrupted epoch's batches), so that a resumed run goes on with the schedule where
    /// it was. The optimizer's rates it sets are those the run had, which loading the
    /// checkpoint's optimizer state sets again.
    pub fn replay(&mut self, optimizer: &mut dyn Optimizer, history: &History, batches_per_epoch: usize) {
        for valid in &history.valid {
            for _ in 0..batches_per_epoch {
                self.after_batch(optimizer);
            }
            self.after_epoch(optimizer, valid.loss);
        }
        for _ in 0..history.partial.map_or(0, |p| p.batches) {
            self.after_batch(optimizer);
        }
    }

    /// The optimizer, stepping this schedule after each of its steps when the schedule
    /// goes by batches — what a training epoch is given.
    pub fn per_batch<'a>(&'a mut self, optimizer: &'a mut dyn Optimizer) -> impl Optimizer + 'a {
        Hooked::new(optimizer, move |optimizer: &mut dyn Optimizer| {
            optimizer.step()?;
            self.after_batch(optimizer);
            Ok(())
        })
    }
}
