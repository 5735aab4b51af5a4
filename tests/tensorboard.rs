//! TensorBoard logs read back by TensorBoard itself (the `tensorboard` package, through
//! tests/tensorboard_read.py): what `SummaryWriter` writes, a restarted session dropping the
//! points it replaces, and every tag of the examples' epoch loop (examples/support/fitting.rs,
//! included here) with its steps and values.

mod common;
#[path = "../examples/support/fitting.rs"]
mod fitting;

use std::path::PathBuf;

use common::{TensorBoardLog, data_root, python_has};
use kiln::Device;
use kiln::figures;
use kiln::optim::StepLr;
use kiln::schedules::Schedule;
use kiln::tensorboard::SummaryWriter;
use kiln::training::{EpochMetrics, History};
use kiln::tutorials::Tutorial;

/// A fresh directory for `test`'s log.
fn log_dir(test: &str) -> PathBuf {
    common::scratch("tensorboard", test)
}

fn epoch(loss: f32, accuracy: f32) -> EpochMetrics {
    EpochMetrics { loss, accuracy, samples: 100, seconds: 1.0 }
}

#[test]
fn scalars_and_images_read_back_with_their_tags_steps_and_values() {
    const TEST: &str = "scalars_and_images_read_back_with_their_tags_steps_and_values";
    if !python_has(TEST, &["tensorboard"]) {
        return;
    }
    let dir = log_dir("scalars");
    let history =
        History { train: vec![epoch(1.5, 0.4), epoch(0.5, 0.8)], valid: vec![epoch(1.2, 0.5)], ..Default::default() };
    let curves = figures::curves(&history);
    {
        let mut writer = SummaryWriter::new(&dir).unwrap();
        writer.add_scalar("loss/train", 0.25, 1).unwrap();
        writer.add_scalar("loss/train", 0.125, 2).unwrap();
        writer.add_scalar("tiny", 1e-30, 0).unwrap();
        writer.add_scalar("huge", -3.4e38, 1 << 40).unwrap();
        writer.add_png("figures/curves", curves.png().unwrap(), curves.size(), 3, 7).unwrap();
    } // dropped: flushed

    let log = TensorBoardLog::read(&dir);
    assert_eq!(log.scalar("loss/train"), [(1, 0.25), (2, 0.125)]);
    assert_eq!(log.scalar("tiny"), [(0, 1e-30)]);
    assert_eq!(log.scalar("huge"), [(1 << 40, -3.4e38)]);
    assert_eq!(log.scalars.len(), 3, "{log:?}");
    assert_eq!(log.images.len(), 1);
    assert_eq!(log.images["figures/curves"], [(7, [1000, 430])]);
}

#[test]
fn a_restarted_session_replaces_the_points_from_its_step_on() {
    const TEST: &str = "a_restarted_session_replaces_the_points_from_its_step_on";
    if !python_has(TEST, &["tensorboard"]) {
        return;
    }
    let dir = log_dir("restart");
    let mut first = SummaryWriter::new(&dir).unwrap();
    first.start_session(1).unwrap();
    for step in 1..=5 {
        first.add_scalar("x", 1.0, step).unwrap();
    }
    drop(first);
    // A run resumed from its checkpoint at step 3, which the first run had gone past.
    let mut resumed = SummaryWriter::new(&dir).unwrap();
    resumed.start_session(4).unwrap();
    for step in 4..=6 {
        resumed.add_scalar("x", 2.0, step).unwrap();
    }
    drop(resumed);
    let log = TensorBoardLog::read(&dir);
    assert_eq!(log.scalar("x"), [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0), (6, 2.0)]);
}

#[test]
fn the_examples_epoch_loop_logs_every_tag_at_its_steps() {
    const TEST: &str = "the_examples_epoch_loop_logs_every_tag_at_its_steps";
    let Some(root) = data_root(TEST) else { return };
    if !python_has(TEST, &["tensorboard"]) {
        return;
    }
    let tutorial = Tutorial::MnistMlp;
    let (train_set, test_set) = tutorial.datasets(&root.join(tutorial.dataset_dir())).unwrap();
    let (train_set, test_set) = (train_set.take(1000), test_set.take(300));
    let mut model = tutorial.model(3).unwrap();
    let mut optimizer = tutorial.optimizer(&model, 1e-3);
    // Halved each epoch, so each epoch's point shows the rate that epoch trained with.
    let mut schedule = Schedule::PerEpoch(Box::new(StepLr::new(optimizer.as_ref(), 1, 0.5)));
    let (train, test) = tutorial.loaders(&train_set, &test_set, &Device::Cpu, 3, false).unwrap();
    assert_eq!(train.len(), 32, "1000 images in batches of 32");
    let dir = log_dir("fit");
    let run = fitting::Run {
        train: &train,
        test: &test,
        test_set: &test_set,
        epochs: 2,
        label: "",
        tensorboard: Some(&dir),
        out: None,
        world: None,
    };
    let history = fitting::fit(&mut model, optimizer.as_mut(), Some(&mut schedule), &run).unwrap();

    let log = TensorBoardLog::read(&dir);
    let tags: Vec<&str> = log.scalars.keys().map(String::as_str).collect();
    let expected = ["accuracy/train", "accuracy/valid", "learning_rate", "loss/train", "loss/train_step", "loss/valid"];
    assert_eq!(tags, expected);
    let per_epoch = |metrics: &[EpochMetrics], value: fn(&EpochMetrics) -> f32| {
        metrics.iter().enumerate().map(|(i, m)| (i as u64 + 1, value(m))).collect::<Vec<_>>()
    };
    assert_eq!(log.scalar("loss/train"), per_epoch(&history.train, |m| m.loss));
    assert_eq!(log.scalar("accuracy/train"), per_epoch(&history.train, |m| m.accuracy));
    assert_eq!(log.scalar("loss/valid"), per_epoch(&history.valid, |m| m.loss));
    assert_eq!(log.scalar("accuracy/valid"), per_epoch(&history.valid, |m| m.accuracy));
    assert_eq!(log.scalar("learning_rate"), [(1, 1e-3), (2, 5e-4)]);
    // A point every 20 of the run's 64 batches, each a batch's loss near the epoch's mean.
    let steps = log.scalar("loss/train_step");
    assert_eq!(steps.iter().map(|p| p.0).collect::<Vec<_>>(), [20, 40, 60]);
    for &(step, loss) in steps {
        let mean = history.train[(step as usize - 1) / 32].loss;
        assert!(loss > 0.0 && loss < 3.0 * mean, "step {step}: {loss} against the epoch's mean {mean}");
    }

    let images: Vec<&str> = log.images.keys().map(String::as_str).collect();
    assert_eq!(images, ["figures/confusion", "figures/curves", "figures/predictions"]);
    assert_eq!(log.images["figures/curves"], [(1, [1000, 430]), (2, [1000, 430])]);
    // 36 digits in 6 rows of 6 cells of 28×3 + 20 by 28×3 + 30 pixels, under a title.
    assert_eq!(log.images["figures/predictions"], [(2, [6 * 104 + 10, 6 * 114 + 40])]);
    assert_eq!(log.images["figures/confusion"], [(2, [70 + 10 * 34 + 20; 2])]);
}
