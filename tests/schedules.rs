//! The schedules `--scheduler` names, as the programs step them: each kind's rates, a
//! schedule stepped through an optimizer's own steps, and a resumed run's schedule replayed
//! to where the live one was.

use kiln::autograd::Var;
use kiln::optim::{Adam, Optimizer};
use kiln::schedules::{Schedule, ScheduleKind};
use kiln::training::{EpochMetrics, EpochProgress, History};
use kiln::{Device, Tensor};

fn adam(lr: f32) -> Adam {
    Adam::new(vec![Var::parameter(Tensor::zeros(&[2], &Device::Cpu).unwrap())], lr)
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-6)
}

/// The rate each epoch trains with, over `epochs` epochs of `batches`, the validation loss
/// of each epoch from `losses`.
fn rates(kind: ScheduleKind, epochs: usize, batches: usize, losses: &[f32]) -> Vec<f32> {
    let mut optimizer = adam(1e-3);
    let mut schedule = Schedule::new(kind, &mut optimizer, epochs, batches);
    (0..epochs)
        .map(|epoch| {
            let lr = optimizer.lr();
            for _ in 0..batches {
                schedule.after_batch(&mut optimizer);
            }
            schedule.after_epoch(&mut optimizer, losses[epoch]);
            lr
        })
        .collect()
}

#[test]
fn each_kind_sets_the_rates_its_pytorch_twin_would() {
    let flat = [1.0; 9];
    let step = rates(ScheduleKind::Step, 9, 4, &flat);
    let expected = [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5];
    assert!(step.iter().zip(expected).all(|(&a, b)| close(a, b)), "{step:?}");

    let cosine = rates(ScheduleKind::Cosine, 4, 4, &flat);
    let expected = [
        1e-3,
        1e-3 * (1.0 + std::f32::consts::FRAC_1_SQRT_2) / 2.0,
        5e-4,
        1e-3 * (1.0 - std::f32::consts::FRAC_1_SQRT_2) / 2.0,
    ];
    assert!(cosine.iter().zip(expected).all(|(&a, b)| close(a, b)), "{cosine:?}");

    // ReduceLROnPlateau(factor 0.1, patience 2): the third epoch without a new best cuts.
    let plateau = rates(ScheduleKind::Plateau, 6, 4, &[1.0, 0.9, 0.95, 0.96, 0.97, 0.98]);
    let expected = [1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4];
    assert!(plateau.iter().zip(expected).all(|(&a, b)| close(a, b)), "{plateau:?}");

    // OneCycleLR: from lr/25, per batch, up to lr at 30% of the 40 batches, then down.
    let mut optimizer = adam(1e-3);
    let mut schedule = Schedule::new(ScheduleKind::OneCycle, &mut optimizer, 4, 10);
    let mut per_batch = vec![optimizer.lr()];
    for _ in 0..39 {
        schedule.after_batch(&mut optimizer);
        per_batch.push(optimizer.lr());
    }
    schedule.after_epoch(&mut optimizer, 1.0);
    assert!(close(per_batch[0], 4e-5) && close(per_batch[11], 1e-3), "{per_batch:?}");
    assert!(close(per_batch[39], 4e-9), "ends at lr/25/10⁴: {per_batch:?}");
    assert!(per_batch[..12].windows(2).all(|w| w[1] > w[0]) && per_batch[11..].windows(2).all(|w| w[1] < w[0]));
}

#[test]
fn an_optimizer_stepped_through_its_schedule_steps_it_per_batch() {
    let mut optimizer = adam(1e-3);
    let mut schedule = Schedule::new(ScheduleKind::OneCycle, &mut optimizer, 1, 10);
    let start = optimizer.lr();
    schedule.per_batch(&mut optimizer).step().unwrap();
    assert!(optimizer.lr() > start, "one step of the wrapped optimizer moved the rate on");
    let mut epochs = Schedule::new(ScheduleKind::Step, &mut optimizer, 3, 10);
    let before = optimizer.lr();
    epochs.per_batch(&mut optimizer).step().unwrap();
    assert_eq!(optimizer.lr(), before, "a per-epoch schedule waits for the epoch's end");
}

#[test]
fn a_replayed_schedule_is_where_the_live_one_was() {
    let losses = [1.0, 0.8, 0.85, 0.9, 0.95];
    for kind in [ScheduleKind::Step, ScheduleKind::Cosine, ScheduleKind::OneCycle, ScheduleKind::Plateau] {
        let (epochs, batches, partial) = (6, 7, 3);
        let mut live = adam(1e-3);
        let mut schedule = Schedule::new(kind, &mut live, epochs, batches);
        let mut history = History::default();
        for &loss in &losses {
            for _ in 0..batches {
                schedule.after_batch(&mut live);
            }
            schedule.after_epoch(&mut live, loss);
            history.train.push(EpochMetrics::default());
            history.valid.push(EpochMetrics { loss, ..EpochMetrics::default() });
        }
        for _ in 0..partial {
            schedule.after_batch(&mut live);
        }
        history.partial = Some(EpochProgress { batches: partial, ..EpochProgress::default() });

        let mut resumed = adam(1e-3);
        let mut replayed = Schedule::new(kind, &mut resumed, epochs, batches);
        replayed.replay(&mut resumed, &history, batches);
        assert_eq!(resumed.lr(), live.lr(), "{kind:?}: rate");
        assert_eq!(resumed.beta1(), live.beta1(), "{kind:?}: momentum");
        // And they go on alike.
        schedule.after_batch(&mut live);
        schedule.after_epoch(&mut live, 0.5);
        replayed.after_batch(&mut resumed);
        replayed.after_epoch(&mut resumed, 0.5);
        assert_eq!(resumed.lr(), live.lr(), "{kind:?}: the next rate");
    }
}
