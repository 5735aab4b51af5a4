//! The tutorials' datasets by name, read from wherever the user keeps them.

use std::path::{Path, PathBuf};

use crate::csv::{CsvImageOptions, LabelMap, read_csv_images};
use crate::dataset::{ImageDataset, numbered_classes};
use crate::idx::read_idx_images;
use crate::numpy::read_npz;
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

/// The training and test sets of a dataset whose files may be laid out in several ways.
type Pair = (ImageDataset, ImageDataset);

/// The directory among `path` and its `subdirs` that holds `train-images-idx3-ubyte[.gz]`.
fn idx_dir(path: &Path, subdirs: &[&str]) -> Option<PathBuf> {
    std::iter::once(path.to_path_buf())
        .chain(subdirs.iter().map(|sub| path.join(sub)))
        .find(|dir| find_plain_or_gz(dir, "train-images-idx3-ubyte").is_some())
}

/// MNIST from wherever a framework left it: a directory of the four IDX files (plain or
/// gzipped, as Yann LeCun's site serves them), torchvision's root (`MNIST/raw/`) or that
/// folder itself, or Keras's `mnist.npz` (the file, or a directory holding it).
pub fn mnist_from(path: &Path) -> Result<Pair> {
    const SUBDIRS: [&str; 2] = ["raw", "MNIST/raw"];
    let npz = if path.is_file() { path.to_path_buf() } else { path.join("mnist.npz") };
    if let Some(dir) = idx_dir(path, &SUBDIRS) {
        Ok((mnist(&dir, Split::Train)?, mnist(&dir, Split::Test)?))
    } else if npz.is_file() {
        Ok((
            npz_images(&npz, Split::Train, numbered_classes(10))?,
            npz_images(&npz, Split::Test, numbered_classes(10))?,
        ))
    } else {
        Err(not_found(path, "MNIST", &SUBDIRS, "or mnist.npz"))
    }
}

/// Fashion-MNIST from wherever a framework left it: a directory of the four IDX files (as
/// Zalando and Keras download them), torchvision's root (`FashionMNIST/raw/`) or that folder
/// itself, or Kaggle's `fashion-mnist_train.csv` and `fashion-mnist_test.csv` (each plain
/// or gzipped).
pub fn fashion_mnist_from(path: &Path) -> Result<Pair> {
    const SUBDIRS: [&str; 2] = ["raw", "FashionMNIST/raw"];
    if let Some(dir) = idx_dir(path, &SUBDIRS) {
        return Ok((fashion_mnist(&dir, Split::Train)?, fashion_mnist(&dir, Split::Test)?));
    }
    if find_plain_or_gz(path, "fashion-mnist_train.csv").is_some() {
        let options = CsvImageOptions {
            class_names: Some(FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()),
            ..CsvImageOptions::default()
        };
        let train = read_csv_images(&plain_or_gz(path, "fashion-mnist_train.csv")?, &options)?;
        let test = read_csv_images(&plain_or_gz(path, "fashion-mnist_test.csv")?, &options)?;
        return Ok((train, test));
    }
    Err(not_found(path, "Fashion-MNIST", &SUBDIRS, "or Kaggle's fashion-mnist_train.csv"))
}

fn not_found(path: &Path, dataset: &str, subdirs: &[&str], besides: &str) -> DataError {
    DataError::Invalid(format!(
        "{} holds no {dataset} files: looked for train-images-idx3-ubyte (or .gz) there and in {}, {besides}",
        path.display(),
        subdirs.join(", ")
    ))
}

/// One split of an image `.npz` as Keras saves its datasets: `x_train` [n, h, w] bytes and
/// `y_train` [n] class numbers (`x_test`, `y_test` for the test split).
fn npz_images(path: &Path, split: Split, class_names: Vec<String>) -> Result<ImageDataset> {
    let (x, y) = match split {
        Split::Train => ("x_train", "y_train"),
        Split::Test => ("x_test", "y_test"),
    };
    let [images, labels]: [_; 2] = read_npz(path, &[x, y])?.try_into().expect("two arrays asked for");
    let bad = |member: &str, what: String| DataError::format(path, format!("member {member}.npy"), what);
    let pixels = images.bytes().map_err(|why| bad(x, why))?;
    let [n, h, w] = images.shape()[..] else {
        return Err(bad(x, format!("has shape {:?}, not [images, height, width]", images.shape())));
    };
    if labels.shape() != [n] {
        return Err(bad(y, format!("has shape {:?}, not [{n}] for {x}'s {n} images", labels.shape())));
    }
    let classes = labels.integers();
    if let Some(i) = classes.iter().position(|&c| !(0..class_names.len() as i64).contains(&c)) {
        return Err(bad(y, format!("element {i}, {}, is outside the {} classes", classes[i], class_names.len())));
    }
    ImageDataset::new(pixels.to_vec(), classes.iter().map(|&c| c as i32).collect(), [1, h, w], class_names)
}
