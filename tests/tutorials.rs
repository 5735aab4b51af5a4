//! Every tutorial's recipe (model, optimizer, batch size, transform) trained on a slice of
//! its real dataset: on the CPU the loss falls and accuracy ends at least twice chance; on the
//! GPU the same run gives the same losses, since initialisation, shuffling and dropout
//! masks come from the seed alone.
//!
//! The datasets come from `KILN_DATA_DIR` (default `../shared/data` beside the checkout).
//! The Fashion-MNIST MLP is also checked against PyTorch from the same weights
//! (fixtures/fashion_mlp_run.json, made by fixtures/make_fashion_mlp_run.py).

mod common;

use common::data_root;
use kiln::nn::{CrossEntropyLoss, Module};
use kiln::training::{self, EpochMetrics};
use kiln::tutorials::Tutorial;
use kiln::wgsl::testing::context_or_skip;
use kiln::{Device, data::ImageDataset};

fn slices(tutorial: Tutorial, root: &std::path::Path, samples: usize) -> (ImageDataset, ImageDataset) {
    let (train, test) = tutorial.datasets(&root.join(tutorial.dataset_dir())).unwrap();
    (train.take(samples), test.take(samples))
}

/// Per-epoch training metrics, and the test metrics after the last epoch.
fn run(
    tutorial: Tutorial,
    data: &(ImageDataset, ImageDataset),
    device: &Device,
    epochs: usize,
    lr: f32,
    augment: bool,
) -> (Vec<EpochMetrics>, EpochMetrics) {
    let mut model = tutorial.model(7).unwrap();
    model.to_device(device).unwrap();
    let mut optimizer = tutorial.optimizer(&model, lr);
    let (train, test) = tutorial.loaders(&data.0, &data.1, device, 7, augment).unwrap();
    let loss_fn = CrossEntropyLoss::new();
    let per_epoch = (0..epochs)
        .map(|epoch| {
            let batches = train.epoch(epoch as u64).unwrap();
            training::train_epoch(&mut model, optimizer.as_mut(), &loss_fn, batches, |_| {}).unwrap()
        })
        .collect();
    (per_epoch, training::evaluate(&mut model, &loss_fn, test.epoch(0).unwrap()).unwrap())
}

#[test]
fn each_tutorial_learns_on_the_cpu() {
    let Some(root) = data_root("each_tutorial_learns_on_the_cpu") else { return };
    for tutorial in Tutorial::ALL {
        // Plain SGD at 1e-3 (the Fashion-MNIST quickstart) needs the full epochs to move far,
        // so its slice runs at a higher rate; the others run exactly as the tutorial.
        let lr = if tutorial == Tutorial::FashionMnistMlp { 0.05 } else { tutorial.lr() };
        let data = slices(tutorial, &root, 2048);
        let (train, test) = run(tutorial, &data, &Device::Cpu, 3, lr, false);
        let chance = 1.0 / data.0.num_classes() as f32;
        println!(
            "{tutorial}: train {:?}, test loss {:.3} accuracy {:.3}",
            train.iter().map(|m| m.loss).collect::<Vec<_>>(),
            test.loss,
            test.accuracy
        );
        assert!(train[2].loss < 0.95 * train[0].loss && train[1].loss < train[0].loss, "{tutorial}: {train:?}");
        assert!(test.accuracy > 2.0 * chance, "{tutorial}: {test:?}");
    }
}

#[test]
fn each_tutorial_trains_alike_on_the_gpu() {
    let Some(ctx) = context_or_skip("each_tutorial_trains_alike_on_the_gpu") else { return };
    let Some(root) = data_root("each_tutorial_trains_alike_on_the_gpu") else { return };
    let gpu = Device::Gpu(ctx);
    // The ASL models' GPU runs are tested end to end by asl-app; lavapipe is slow. The
    // augmented run checks that augmentation, made on the host, is the same for both devices.
    let runs = [
        (Tutorial::FashionMnistCnn, false),
        (Tutorial::FashionMnistCnn, true),
        (Tutorial::FashionMnistMlp, false),
        (Tutorial::MnistMlp, false),
        (Tutorial::Cifar10Lenet, false),
    ];
    for (tutorial, augment) in runs {
        let data = slices(tutorial, &root, 256);
        let (cpu, cpu_test) = run(tutorial, &data, &Device::Cpu, 2, tutorial.lr(), augment);
        let (on_gpu, gpu_test) = run(tutorial, &data, &gpu, 2, tutorial.lr(), augment);
        for (c, g) in cpu.iter().zip(&on_gpu).chain([(&cpu_test, &gpu_test)]) {
            let run = format!("{tutorial}{}", if augment { " augmented" } else { "" });
            assert!((c.loss - g.loss).abs() < 2e-3 * c.loss.max(1.0), "{run}: cpu {c:?} gpu {g:?}");
            assert!((c.accuracy - g.accuracy).abs() <= 2.0 / 256.0, "{run}: cpu {c:?} gpu {g:?}");
        }
    }
}

/// The first training batch of epoch 0 and the first test batch, as host values.
fn first_batches(tutorial: Tutorial, data: &(ImageDataset, ImageDataset), augment: bool) -> (Vec<f32>, Vec<f32>) {
    let (train, test) = tutorial.loaders(&data.0, &data.1, &Device::Cpu, 3, augment).unwrap();
    let first = |loader: &kiln::data::DataLoader| loader.epoch(0).unwrap().next().unwrap().unwrap().images;
    (first(&train).to_vec().unwrap(), first(&test).to_vec().unwrap())
}

#[test]
fn augmentation_changes_training_images_reproducibly_and_never_test_images() {
    let Some(root) = data_root("augmentation_changes_training_images_reproducibly_and_never_test_images") else {
        return;
    };
    for tutorial in Tutorial::ALL {
        let data = slices(tutorial, &root, 64);
        let (plain_train, plain_test) = first_batches(tutorial, &data, false);
        let (augmented_train, augmented_test) = first_batches(tutorial, &data, true);
        assert_eq!(augmented_train.len(), plain_train.len(), "{tutorial}");
        assert_ne!(augmented_train, plain_train, "{tutorial}: augmentation changed nothing");
        assert_eq!(first_batches(tutorial, &data, true).0, augmented_train, "{tutorial}: not reproducible");
        assert_eq!(augmented_test, plain_test, "{tutorial}: the test set must not be augmented");
        // Augmentation works on pixels, before scaling: values stay in the scaled range.
        let lowest = if tutorial == Tutorial::Cifar10Lenet { -1.0 } else { 0.0 };
        let outside = augmented_train.iter().find(|v| !(lowest - 1e-6..=1.0 + 1e-6).contains(*v));
        assert!(outside.is_none(), "{tutorial}: {outside:?} outside {lowest}..=1");
    }
}

/// PyTorch's run of the Fashion-MNIST MLP recipe from Kiln's seed-0 weights (which
/// fixtures/make_fashion_mlp_run.py re-derives from Kiln's definitions of its random numbers,
/// not from a file Kiln wrote): the same losses and accuracies, epoch by epoch, on a slice of
/// the real data. Plain SGD without shuffling or dropout leaves nothing else to differ.
#[test]
fn the_fashion_mlp_trains_as_in_pytorch_from_the_same_weights() {
    let Some(root) = data_root("the_fashion_mlp_trains_as_in_pytorch_from_the_same_weights") else { return };
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/fashion_mlp_run.json")).unwrap();
    let count = |key: &str| fixture[key].as_u64().unwrap() as usize;
    let tutorial = Tutorial::FashionMnistMlp;
    let (train, test) = tutorial.datasets(&root.join(tutorial.dataset_dir())).unwrap();
    let (train, test) = (train.take(count("train_samples")), test.take(count("test_samples")));
    let mut model = tutorial.model(0).unwrap();
    let mut optimizer = tutorial.optimizer(&model, tutorial.lr());
    let (train, test) = tutorial.loaders(&train, &test, &Device::Cpu, 0, false).unwrap();
    let loss_fn = CrossEntropyLoss::new();
    for (epoch, want) in fixture["epochs"].as_array().unwrap().iter().enumerate() {
        let batches = train.epoch(epoch as u64).unwrap();
        let trained = training::train_epoch(&mut model, optimizer.as_mut(), &loss_fn, batches, |_| {}).unwrap();
        let tested = training::evaluate(&mut model, &loss_fn, test.epoch(0).unwrap()).unwrap();
        let value = |key: &str| want[key].as_f64().unwrap() as f32;
        let close = |got: f32, key: &str| (got - value(key)).abs() <= 1e-4 * value(key).abs();
        assert!(close(trained.loss, "train_loss"), "epoch {epoch}: train loss {} vs {want}", trained.loss);
        assert!(close(tested.loss, "test_loss"), "epoch {epoch}: test loss {} vs {want}", tested.loss);
        let one_sample = 1.0 / count("test_samples") as f32;
        assert!((tested.accuracy - value("test_accuracy")).abs() <= one_sample, "epoch {epoch}: {tested:?} vs {want}");
    }
}
