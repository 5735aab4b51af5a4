//! The fine_tune example's run (examples/support/fine_tuning.rs, included here) on slices of
//! the real datasets, on the CPU: the load report names both heads, only the head trains,
//! the frozen convolutions come out bit-identical to the pretrained ones, and the pretrained
//! features beat random frozen ones.

mod common;
#[path = "../examples/support/fine_tuning.rs"]
mod fine_tuning;
#[path = "../examples/support/fitting.rs"]
mod fitting;

use common::data_root;
use fine_tuning::{Place, Pretrained, Training};

const ONE_EPOCH: Training = Training { epochs: 1, lr: 1e-3, weight_decay: 0.0, scheduler: None };
use kiln::Device;
use kiln::nn::Module;

#[test]
fn fine_tuning_keeps_the_frozen_features_and_beats_random_ones() {
    let Some(root) = data_root("fine_tuning_keeps_the_frozen_features_and_beats_random_ones") else { return };
    let [fashion, digits] = fine_tuning::both_datasets(&root, Some(4096)).unwrap();
    let mut pretrained = Pretrained::new(0).unwrap();
    fine_tuning::train(&mut pretrained, &fashion, &Place::alone(&Device::Cpu), 0, &ONE_EPOCH, "pretraining", None)
        .unwrap();
    let state = pretrained.state_dict().unwrap();

    let tuned =
        fine_tuning::fine_tune(Some(&state), &digits, &Place::alone(&Device::Cpu), 1, &ONE_EPOCH, None).unwrap();
    let report = tuned.report.as_ref().unwrap();
    assert_eq!(report.missing_keys, ["head.bias", "head.weight"]);
    let unexpected = ["classifier.0.bias", "classifier.0.weight", "classifier.2.bias", "classifier.2.weight"];
    assert_eq!(report.unexpected_keys, unexpected);
    assert_eq!((tuned.trainable, tuned.total), (1024 * 10 + 10, 62_346), "the head alone trains");
    let features = tuned.model.features.state_dict().unwrap();
    assert_eq!(features.len(), 4);
    for (name, value) in &features {
        let before = state[&format!("features.{name}")].to_vec().unwrap();
        assert_eq!(value.to_vec().unwrap(), before, "{name} moved while frozen");
    }

    let baseline = fine_tuning::fine_tune(None, &digits, &Place::alone(&Device::Cpu), 1, &ONE_EPOCH, None).unwrap();
    println!("MNIST test accuracy: {} pretrained, {} random", tuned.test.accuracy, baseline.test.accuracy);
    assert!(tuned.test.accuracy > baseline.test.accuracy + 0.01, "{:?} vs {:?}", tuned.test, baseline.test);
}
