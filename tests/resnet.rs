//! The CIFAR-10 ResNet of the cifar10_resnet example (`kiln::nn::models::cifar10_resnet`) on
//! a slice of the real data: it learns on the CPU, and a GPU run from the same seed gives
//! the CPU's losses (batch norm, residual additions and global average pooling included).

mod common;

use common::data_root;
use kiln::Device;
use kiln::data::presets::Split;
use kiln::data::{DataLoader, ImageDataset, Transform, read_cifar10};
use kiln::nn::{CrossEntropyLoss, Module, Seeds, models};
use kiln::optim::Adam;
use kiln::training::{self, EpochMetrics};
use kiln::wgsl::testing::context_or_skip;

fn slice(root: &std::path::Path, samples: usize) -> ImageDataset {
    read_cifar10(&root.join("cifar-10"), Split::Train).unwrap().take(samples)
}

/// Per-epoch training metrics of the ResNet from seed 5, batch `batch`, Adam 1e-3.
fn run(data: &ImageDataset, device: &Device, epochs: usize, batch: usize) -> Vec<EpochMetrics> {
    let mut model = models::cifar10_resnet(&mut Seeds::new(5)).unwrap();
    model.to_device(device).unwrap();
    let mut optimizer = Adam::new(model.parameters().into_iter().map(|(_, p)| p).collect(), 1e-3);
    let loader = DataLoader::on_device(data, batch, device, Transform::to_float()).unwrap().shuffle(true).seed(5);
    let loss_fn = CrossEntropyLoss::new();
    (0..epochs)
        .map(|epoch| {
            let batches = loader.epoch(epoch as u64).unwrap();
            training::train_epoch(&mut model, &mut optimizer, &loss_fn, batches, |_| {}).unwrap()
        })
        .collect()
}

#[test]
fn the_resnet_learns_on_the_cpu() {
    let Some(root) = data_root("the_resnet_learns_on_the_cpu") else { return };
    let losses: Vec<f32> = run(&slice(&root, 1024), &Device::Cpu, 3, 32).iter().map(|m| m.loss).collect();
    println!("cifar10_resnet on the CPU: {losses:?}");
    assert!(losses[2] < 0.95 * losses[0] && losses[1] < losses[0], "{losses:?}");
}

#[test]
fn the_resnet_trains_alike_on_the_gpu() {
    let Some(ctx) = context_or_skip("the_resnet_trains_alike_on_the_gpu") else { return };
    let Some(root) = data_root("the_resnet_trains_alike_on_the_gpu") else { return };
    let data = slice(&root, 96);
    let (cpu, gpu) = (run(&data, &Device::Cpu, 2, 16), run(&data, &Device::Gpu(ctx), 2, 16));
    for (c, g) in cpu.iter().zip(&gpu) {
        assert!((c.loss - g.loss).abs() < 2e-3 * c.loss.max(1.0), "cpu {c:?} gpu {g:?}");
    }
}
