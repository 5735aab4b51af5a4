//! A small ResNet on CIFAR-10, beyond the tutorials: residual blocks written as a user's
//! own module (`kiln::nn::models::BasicBlock`), global average pooling, batch norm
//! throughout (`kiln::nn::models::cifar10_resnet`, ResNet-8, 78k parameters). Adam 1e-3
//! decayed along a cosine over the epochs, batch 128, pixels normalised per channel; with
//! `--augment`, training images mirrored and shifted by up to 4 pixels as torchvision's
//! `RandomHorizontalFlip` and `RandomCrop(32, padding=4)` do. Prints the test accuracy
//! overall and per class at the end.
//!
//! `cargo run --release --example cifar10_resnet -- --data DIR --augment` (see `--help`).
//! DIR holds CIFAR-10's binary batches (`data_batch_*.bin`, `test_batch.bin`, plain or
//! gzipped) or the official `cifar-10-binary.tar.gz`; the training batches present are
//! all used.

mod support;

use kiln::data::presets::Split;
use kiln::data::{DataLoader, Transform, read_cifar10};
use kiln::nn::{Module, Seeds, models};
use kiln::optim::{Adam, CosineAnnealingLr};
use kiln::training;
use support::{Data, Defaults, Error, Options};

const DEFAULTS: Defaults = Defaults { name: "cifar10_resnet", dataset_dir: Some("cifar-10"), epochs: 15 };
const BATCH: usize = 128;
/// CIFAR-10's per-channel mean and standard deviation of the training pixels (in [0, 1]).
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

fn main() -> Result<(), Error> {
    let options = Options::from_args(DEFAULTS)?;
    let (train, test) =
        options.limited((read_cifar10(&options.data, Split::Train)?, read_cifar10(&options.data, Split::Test)?));
    println!(
        "cifar10_resnet: {} training and {} test images from {}, on {}{}",
        train.len(),
        test.len(),
        options.data.display(),
        options.device,
        if options.augment { ", augmented" } else { "" }
    );
    let mut model = models::cifar10_resnet(&mut Seeds::new(options.seed))?;
    println!("{model}");
    model.to_device(&options.device)?;

    let plain = Transform::to_float().normalize(&MEAN, &STD);
    let transform = if options.augment { plain.clone().horizontal_flip(true).shift_pixels(4) } else { plain.clone() };
    let train_loader =
        DataLoader::on_device(&train, BATCH, &options.device, transform)?.shuffle(true).seed(options.seed);
    let test_loader = DataLoader::on_device(&test, BATCH, &options.device, plain)?;
    let mut optimizer = Adam::new(model.parameters().into_iter().map(|(_, p)| p).collect(), 1e-3);
    let mut schedule = CosineAnnealingLr::new(&optimizer, options.epochs as u64, 0.0);
    let data = Data { train: train_loader, test: test_loader, test_set: test };
    support::fit(&mut model, &mut optimizer, Some(&mut schedule), &data.run(&options))?;

    let matrix = training::predict(&mut model, data.test.epoch(0)?)?.confusion_matrix(10)?;
    println!("test accuracy {:.4} on {} images", matrix.accuracy(), matrix.total());
    for (class, name) in kiln::data::CIFAR10_CLASSES.iter().enumerate() {
        println!("  {name:5} {:.3}", matrix.recall(class));
    }
    Ok(())
}
