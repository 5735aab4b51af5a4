//! The tutorials' datasets by name, read from wherever the user keeps them.

use std::path::{Path, PathBuf};

use crate::csv::{CsvImageOptions, LabelMap, read_csv_images};
use crate::dataset::{ImageDataset, numbered_classes};
use crate::idx::read_idx_images;
use crate::{DataError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// The 24 letters of Sign Language MNIST: A to Y without J (J and Z need motion).
pub const ASL_LETTERS: [&str; 24] = [
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T", "U", "V", "W", "X",
    "Y",
];

pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// How a Sign Language MNIST CSV numbers its letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AslLabels {
    /// Kaggle's files: 0..24 for A..Y, 9 (J) unused.
    Kaggle,
    /// Already contiguous 0..23, as in NVIDIA DLI's copies.
    Contiguous,
}

/// A Sign Language MNIST CSV (`sign_mnist_train.csv[.gz]` or a copy), classes 0..23 = A..Y.
pub fn sign_language_mnist(csv: &Path, labels: AslLabels) -> Result<ImageDataset> {
    let labels = match labels {
        AslLabels::Kaggle => LabelMap::Classes((0..=24).filter(|&l| l != 9).collect()),
        AslLabels::Contiguous => LabelMap::Identity,
    };
    let options = CsvImageOptions {
        labels,
        class_names: Some(ASL_LETTERS.iter().map(|s| s.to_string()).collect()),
        ..CsvImageOptions::default()
    };
    read_csv_images(csv, &options)
}

/// The training and validation sets of Sign Language MNIST from a directory holding
/// `sign_mnist_train.csv` and either `sign_mnist_test.csv` (Kaggle's copy, Kaggle's labels)
/// or `sign_mnist_valid.csv` (NVIDIA DLI's copy, contiguous labels); each plain or gzipped.
pub fn sign_language_mnist_dir(dir: &Path) -> Result<(ImageDataset, ImageDataset)> {
    let train = plain_or_gz(dir, "sign_mnist_train.csv")?;
    let (valid, labels) = match find_plain_or_gz(dir, "sign_mnist_valid.csv") {
        Some(valid) => (valid, AslLabels::Contiguous),
        None => (plain_or_gz(dir, "sign_mnist_test.csv")?, AslLabels::Kaggle),
    };
    Ok((sign_language_mnist(&train, labels)?, sign_language_mnist(&valid, labels)?))
}

fn find_plain_or_gz(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// `dir/name` or `dir/name.gz`, whichever exists.
fn plain_or_gz(dir: &Path, name: &str) -> Result<PathBuf> {
    find_plain_or_gz(dir, name)
        .ok_or_else(|| DataError::Invalid(format!("{} holds neither {name} nor {name}.gz", dir.display())))
}

fn idx_pair(dir: &Path, split: Split, class_names: Vec<String>) -> Result<ImageDataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = plain_or_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = plain_or_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    read_idx_images(&images, &labels, class_names)
}

/// MNIST from a directory of its four IDX files (plain or gzipped).
pub fn mnist(dir: &Path, split: Split) -> Result<ImageDataset> {
    idx_pair(dir, split, numbered_classes(10))
}

/// Fashion-MNIST from a directory of its four IDX files (plain or gzipped).
pub fn fashion_mnist(dir: &Path, split: Split) -> Result<ImageDataset> {
    idx_pair(dir, split, FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect())
}
