//! Loads the tutorials' datasets from a directory laid out like `../shared/data` and prints
//! what each holds, then draws one shuffled batch of Sign Language MNIST on the best device.
//!
//! `cargo run --release --example dataset_summary -- ../shared/data`

use std::path::PathBuf;
use std::time::Instant;

use kiln::Device;
use kiln::data::presets::{self, AslLabels, Split};
use kiln::data::{DataLoader, ImageDataset, Transform, read_cifar10};

fn describe(name: &str, data: &ImageDataset, seconds: f64) {
    println!(
        "{name:28} {:>6} images of {:?}, {:>2} classes, mean pixel {:6.2}, read in {seconds:.2} s",
        data.len(),
        data.shape(),
        data.num_classes(),
        data.mean_pixel()
    );
}

fn timed(load: impl FnOnce() -> kiln::data::Result<ImageDataset>) -> kiln::data::Result<(ImageDataset, f64)> {
    let start = Instant::now();
    let data = load()?;
    Ok((data, start.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "../shared/data".into()));
    let asl = dir.join("sign-language-mnist/sign_mnist_train.csv.gz");
    let (train, s) = timed(|| presets::sign_language_mnist(&asl, AslLabels::Kaggle))?;
    describe("Sign Language MNIST (train)", &train, s);
    let (d, s) = timed(|| presets::mnist(&dir.join("mnist"), Split::Train))?;
    describe("MNIST (train)", &d, s);
    let (d, s) = timed(|| presets::fashion_mnist(&dir.join("fashion-mnist"), Split::Train))?;
    describe("Fashion-MNIST (train)", &d, s);
    let (d, s) = timed(|| read_cifar10(&dir.join("cifar-10"), Split::Train))?;
    describe("CIFAR-10 (train batches)", &d, s);

    let device = Device::best();
    let loader = DataLoader::new(train, 32).shuffle(true).seed(0).transform(Transform::to_float()).to_device(&device);
    let batch = loader.epoch(0)?.next().expect("at least one batch")?;
    let letters: Vec<String> =
        batch.labels.to_vec_i32()?.iter().map(|&l| presets::ASL_LETTERS[l as usize].to_string()).collect();
    let mean = batch.images.mean_all()?.to_scalar()?;
    println!(
        "first batch on {device}: images {:?}, mean {mean:.3}, letters {}",
        batch.images.shape(),
        letters.join("")
    );
    Ok(())
}
