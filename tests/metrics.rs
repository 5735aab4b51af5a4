//! The confusion matrix against values worked out by hand (scikit-learn's definitions), and
//! `training::predict` against the argmax of the model's own logits, on both devices.

use kiln::data::{DataLoader, ImageDataset, numbered_classes};
use kiln::metrics::{ConfusionMatrix, MetricsError};
use kiln::nn::{Linear, Module, Seeds, Sequential};
use kiln::training;
use kiln::wgsl::testing::context_or_skip;
use kiln::{Device, Tensor};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn per_class_scores_follow_the_definitions() {
    // Rows: truth 0 → [2, 1, 0, 0], truth 1 → [0, 2, 0, 0], truth 2 → [1, 1, 2, 0]; class 3
    // never occurs and is never predicted.
    let labels = [0, 0, 0, 1, 1, 2, 2, 2, 2];
    let predicted = [0, 1, 0, 1, 1, 2, 2, 0, 1];
    let m = ConfusionMatrix::from_predictions(4, &labels, &predicted).unwrap();
    assert_eq!((m.count(0, 1), m.count(2, 0), m.count(1, 0)), (1, 1, 0));
    assert_eq!((m.total(), m.support(2), m.predicted(1)), (9, 4, 4));
    assert!(close(m.accuracy(), 6.0 / 9.0));
    let expected = [(2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0), (0.5, 1.0, 2.0 / 3.0), (1.0, 0.5, 2.0 / 3.0), (0.0, 0.0, 0.0)];
    for (c, (p, r, f)) in expected.into_iter().enumerate() {
        assert!(close(m.precision(c), p) && close(m.recall(c), r) && close(m.f1(c), f), "class {c}");
    }
    assert!(close(m.macro_f1(), 0.5));
    let names = numbered_classes(4);
    let report = m.report(&names);
    assert!(report.lines().nth(2).unwrap().contains("0.5000  1.0000  0.6667        2"), "{report}");
    assert_eq!(m.to_csv(&names).lines().nth(3), Some("2,1,1,2,0"));
}

#[test]
fn bad_labels_and_lengths_are_errors() {
    assert!(matches!(
        ConfusionMatrix::from_predictions(3, &[0, 3], &[0, 0]),
        Err(MetricsError::ClassOutOfRange { what: "label", value: 3, position: 1, .. })
    ));
    assert!(matches!(
        ConfusionMatrix::from_predictions(3, &[0], &[-1]),
        Err(MetricsError::ClassOutOfRange { what: "prediction", value: -1, position: 0, .. })
    ));
    assert!(matches!(ConfusionMatrix::from_predictions(3, &[0], &[]), Err(MetricsError::LengthMismatch { .. })));
}

/// 50 random 2×3×3 images in 5 classes and a linear classifier over them.
fn setup() -> (ImageDataset, Sequential) {
    let pixels: Vec<u8> = (0..50 * 18).map(|i| ((i * 7919) % 251) as u8).collect();
    let labels = (0..50).map(|i| i % 5).collect();
    let dataset = ImageDataset::new(pixels, labels, [2, 3, 3], numbered_classes(5)).unwrap();
    let model = Sequential::new().add(kiln::nn::Flatten::new()).add(Linear::new(18, 5, &mut Seeds::new(3)).unwrap());
    (dataset, model)
}

fn check_predict(device: &Device) {
    let (dataset, mut model) = setup();
    model.to_device(device).unwrap();
    let loader = DataLoader::new(dataset.clone(), 16).to_device(device);
    let predictions = training::predict(&mut model, loader.epoch(0).unwrap()).unwrap();
    assert_eq!(predictions.labels, dataset.labels());

    let images: Vec<f32> = dataset.images().iter().map(|&p| p as f32).collect();
    let x = Tensor::from_vec(images, &[50, 2, 3, 3], device).unwrap();
    let logits = kiln::autograd::no_grad(|| model.forward(&kiln::autograd::Var::constant(x))).unwrap();
    let logits = logits.value().to_vec().unwrap();
    let argmax: Vec<i32> = logits
        .chunks(5)
        .map(|row| (0..5).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap() as i32)
        .collect();
    assert_eq!(predictions.predicted, argmax);
    let matrix = predictions.confusion_matrix(5).unwrap();
    assert_eq!(matrix.total(), 50);
}

#[test]
fn predict_returns_each_samples_argmax_on_the_cpu() {
    check_predict(&Device::Cpu);
}

#[test]
fn predict_returns_each_samples_argmax_on_the_gpu() {
    let Some(ctx) = context_or_skip("predict_returns_each_samples_argmax_on_the_gpu") else { return };
    check_predict(&Device::Gpu(ctx));
}
