//! ONNX export checked by the real runtime: every tutorial's model, the CIFAR-10 ResNet and
//! a model with every other exportable layer, written by `kiln::onnx::export`, pass
//! `onnx.checker` and give Kiln's logits in ONNX Runtime on real images (tests/onnx_check.py);
//! a module that cannot be exported is an error naming it.

mod common;

use std::path::{Path, PathBuf};

use common::{data_root, python_has};
use kiln::autograd::{Var, no_grad};
use kiln::nn::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, GELU, Identity, LeakyReLU,
    Linear, MaxPool2d, Module, ReLU, Seeds, Sequential, Sigmoid, Tanh, models,
};
use kiln::tutorials::Tutorial;
use kiln::{Device, Tensor};

fn scratch(name: &str) -> PathBuf {
    common::scratch("onnx", name)
}

/// The first `n` test images of a tutorial's dataset as its model reads them.
fn images(tutorial: Tutorial, root: &Path, n: usize) -> Tensor {
    let (train, test) = tutorial.datasets(&root.join(tutorial.dataset_dir())).unwrap();
    let (_, loader) = tutorial.loaders(&train.take(n), &test.take(n), &Device::Cpu, 0, false).unwrap();
    let batch = loader.epoch(0).unwrap().next().unwrap().unwrap();
    batch.images.narrow(0, 0, n.min(batch.images.shape()[0])).unwrap()
}

/// Kiln's evaluation-mode logits, and ONNX Runtime's from the exported file.
fn both_logits(model: &mut dyn Module, images: &Tensor, dir: &Path) -> (Vec<f32>, Vec<f32>) {
    // A few training-mode passes first, so batch norm's statistics are not their start.
    model.train();
    for _ in 0..3 {
        no_grad(|| model.forward(&Var::constant(images.clone()))).unwrap();
    }
    let file = dir.join("model.onnx");
    kiln::onnx::export(model, &images.shape()[1..], &file).unwrap();
    let kiln = no_grad(|| model.forward(&Var::constant(images.clone()))).unwrap().value().to_vec().unwrap();

    let (input, output) = (dir.join("input.f32"), dir.join("output.f32"));
    let bytes: Vec<u8> = images.to_vec().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let shape = images.shape().iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_check.py");
    let run =
        std::process::Command::new("python3").arg(script).arg(&file).arg(&input).arg(&shape).arg(&output).output();
    let run = run.unwrap();
    assert!(run.status.success(), "onnx_check.py: {}", String::from_utf8_lossy(&run.stderr));
    let runtime =
        std::fs::read(&output).unwrap().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (kiln, runtime)
}

fn assert_same(what: &str, kiln: &[f32], runtime: &[f32]) {
    assert_eq!(kiln.len(), runtime.len(), "{what}: output size");
    for (i, (k, r)) in kiln.iter().zip(runtime).enumerate() {
        assert!((k - r).abs() <= 1e-4 * k.abs().max(1.0), "{what}[{i}]: Kiln {k}, ONNX Runtime {r}");
    }
}

/// Every layer the tutorials' models do not use, on CIFAR-sized images.
fn every_other_layer() -> Sequential {
    let seeds = &mut Seeds::new(3);
    Sequential::new()
        .add(Conv2d::new(3, 8, 3, seeds).unwrap().padding(1).stride(2))
        .add(BatchNorm2d::new(8).unwrap())
        .add(LeakyReLU::new(0.1))
        .add(AvgPool2d::new(3).stride(2).padding(1))
        .add(Conv2d::new(8, 8, 3, seeds).unwrap().without_bias())
        .add(GELU::new())
        .add(MaxPool2d::new(2).stride(1))
        .add(AdaptiveAvgPool2d::new(1))
        .add(Flatten::new())
        .add(Linear::new(8, 16, seeds).unwrap())
        .add(BatchNorm1d::new(16).unwrap())
        .add(Sigmoid)
        .add(Dropout::new(0.5, seeds))
        .add(Linear::new(16, 12, seeds).unwrap().without_bias())
        .add(Tanh)
        .add(GELU::tanh())
        .add(Identity)
        .add(ReLU)
        .add(Linear::new(12, 10, seeds).unwrap())
}

#[test]
fn exported_models_give_kilns_logits_in_onnx_runtime() {
    const TEST: &str = "exported_models_give_kilns_logits_in_onnx_runtime";
    let Some(root) = data_root(TEST) else { return };
    if !python_has(TEST, &["onnx", "onnxruntime", "numpy"]) {
        return;
    }
    let dir = scratch("models");
    for tutorial in Tutorial::ALL {
        let (kiln, runtime) = both_logits(&mut tutorial.model(5).unwrap(), &images(tutorial, &root, 8), &dir);
        assert_same(&tutorial.to_string(), &kiln, &runtime);
    }
    let cifar = images(Tutorial::Cifar10Lenet, &root, 8);
    let mut resnet = models::cifar10_resnet(&mut Seeds::new(5)).unwrap();
    let (kiln, runtime) = both_logits(&mut resnet, &cifar, &dir);
    assert_same("cifar10_resnet", &kiln, &runtime);
    let (kiln, runtime) = both_logits(&mut every_other_layer(), &cifar, &dir);
    assert_same("every other layer", &kiln, &runtime);
    // Padded average pooling straight into the logits, where each border divisor shows.
    let seeds = &mut Seeds::new(4);
    let mut pooled = Sequential::new()
        .add(AvgPool2d::new(3).stride(2).padding(1))
        .add(Flatten::new())
        .add(Linear::new(3 * 16 * 16, 10, seeds).unwrap());
    let (kiln, runtime) = both_logits(&mut pooled, &cifar, &dir);
    assert_same("padded average pooling", &kiln, &runtime);
}

#[test]
fn what_cannot_be_exported_is_an_error_naming_it_and_writes_nothing() {
    struct Scale;
    impl Module for Scale {
        fn forward(&mut self, input: &Var) -> kiln::nn::Result<Var> {
            input.mul_scalar(2.0).map_err(Into::into)
        }
    }
    let dir = scratch("refused");
    let file = dir.join("refused.onnx");
    let seeds = &mut Seeds::new(0);
    let cases: [(Sequential, &str); 2] = [
        (Sequential::new().add(Linear::new(4, 4, seeds).unwrap()).add(Scale), "Scale() cannot be exported"),
        (
            Sequential::new().add(Conv2d::new(1, 2, 3, seeds).unwrap()).add(AdaptiveAvgPool2d::new(2)),
            "AdaptiveAvgPool2d(output_size=2) cannot be exported: ONNX pools adaptively only to 1×1",
        ),
    ];
    for ((mut model, what), shape) in cases.into_iter().zip([vec![4], vec![1, 8, 8]]) {
        let message = kiln::onnx::export(&mut model, &shape, &file).unwrap_err().to_string();
        assert!(message.contains(what), "{message}");
        assert!(!file.exists(), "nothing written");
    }
    let mut mlp = Tutorial::AslMlp.model(0).unwrap();
    let message = kiln::onnx::export(&mut mlp, &[3, 5, 5], &file).unwrap_err().to_string();
    assert!(message.contains("75") || message.contains("784"), "an input the model cannot take: {message}");
}
