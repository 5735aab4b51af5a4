//! A small ResNet on CIFAR-10, beyond the tutorials: residual blocks written as a user's
//! own module (`kiln::nn::models::BasicBlock`), global average pooling, batch norm
//! throughout (`kiln::nn::models::cifar10_resnet`, ResNet-8, 78k parameters). Adam 1e-3
//! decayed along a cosine over the epochs (`--scheduler` for another), batch 128, pixels
//! normalised per channel; with `--augment`, training images mirrored and shifted by up to
//! 4 pixels as torchvision's `RandomHorizontalFlip` and `RandomCrop(32, padding=4)` do.
//! Prints the per-class report at the end.
//!
//! `cargo run --release --example cifar10_resnet -- --data DIR --augment` (see `--help`).
//! DIR holds CIFAR-10's binary or Python batches, unpacked or in their official archive;
//! the training batches present are all used.

mod support;

use kiln::data::presets::Split;
use kiln::data::{DataLoader, Transform, read_cifar10};
use kiln::nn::{Module, Seeds, models};
use kiln::optim::Adam;
use kiln::schedules::ScheduleKind;
use support::{Data, Defaults, Error, Options};

const DEFAULTS: Defaults = Defaults {
    name: "cifar10_resnet",
    dataset_dir: Some("cifar-10"),
    epochs: 15,
    scheduler: Some(ScheduleKind::Cosine),
};
const BATCH: usize = 128;
/// CIFAR-10's per-channel mean and standard deviation of the training pixels (in [0, 1]).
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

fn main() -> Result<(), Error> {
    Options::from_args(DEFAULTS)?.run(train)
}

fn train(options: &Options) -> Result<(), Error> {
    let (train, test) =
        options.limited((read_cifar10(&options.data, Split::Train)?, read_cifar10(&options.data, Split::Test)?));
    let batch = options.per_process(BATCH)?;
    if options.reports() {
        println!(
            "cifar10_resnet: {} training and {} test images from {}, on {}{}",
            train.len(),
            test.len(),
            options.data.display(),
            options.device,
            if options.augment { ", augmented" } else { "" }
        );
    }
    let seeds = &mut Seeds::new(options.seed);
    let mut model = models::cifar10_resnet(seeds)?;
    options.init.unwrap_or_default().apply(&model, seeds)?;
    if options.reports() {
        println!("{model}");
    }
    options.load_into(&mut model)?;
    model.to_device(&options.device)?;
    options.replicate(&mut model)?;

    let plain = Transform::to_float().normalize(&MEAN, &STD);
    let transform = if options.augment { plain.clone().horizontal_flip(true).shift_pixels(4) } else { plain.clone() };
    let (train_loader, test_loader) = options.share_loaders((
        DataLoader::on_device(&train, batch, &options.device, transform)?.shuffle(true).seed(options.seed),
        DataLoader::on_device(&test, batch, &options.device, plain)?,
    ))?;
    let parameters = model.parameters().into_iter().map(|(_, p)| p).collect();
    let mut optimizer = Adam::new(parameters, options.lr.unwrap_or(1e-3)).weight_decay(options.weight_decay);
    let mut schedule = options.schedule(&mut optimizer, train_loader.len());
    let data = Data { train: train_loader, test: test_loader, test_set: test };
    support::fit(&mut model, &mut optimizer, schedule.as_mut(), &data.run(options))?;
    Ok(())
}
