//! Kiln's data: readers for the tutorials' file formats, an in-memory image dataset, a
//! `DataLoader` and transforms.
//!
//! - [`read_csv_images`]: CSV image tables (Sign Language MNIST, Fashion-MNIST on Kaggle);
//! - [`read_idx`], [`read_idx_images`]: IDX files (MNIST, Fashion-MNIST);
//! - [`read_cifar10`], [`read_cifar10_batch`]: CIFAR-10 batches, binary or pickled by Python, or
//!   either official tarball;
//! - [`read_npz`]: NumPy `.npz` archives (Keras's `mnist.npz`);
//! - [`presets`]: the datasets by name, with their class names.
//!
//! Files may be plain or gzipped, from any path. Malformed input is a [`DataError`] naming
//! the file and the line, record or byte offset — never a panic, never a silent truncation.
//!
//! ```no_run
//! use kiln_data::{DataLoader, Transform, presets::{self, AslLabels}};
//! # fn main() -> kiln_data::Result<()> {
//! let train = presets::sign_language_mnist("data/sign_mnist_train.csv.gz".as_ref(), AslLabels::Kaggle)?;
//! let loader = DataLoader::new(train, 32).shuffle(true).seed(0).transform(Transform::to_float());
//! for batch in loader.epoch(0)? {
//!     let batch = batch?; // images [32, 1, 28, 28], labels [32]
//! #   let _ = batch;
//! }
//! # Ok(())
//! # }
//! ```

mod cifar;
mod csv;
mod dataset;
mod error;
mod idx;
mod loader;
mod numpy;
mod pickle;
pub mod presets;
mod source;
mod transform;

pub use cifar::{CIFAR10_CLASSES, read_cifar10, read_cifar10_batch};
pub use csv::{CsvImageOptions, LabelMap, read_csv_images};
pub use dataset::{Dataset, ImageDataset, numbered_classes};
pub use error::{DataError, Result};
pub use idx::{IdxArray, read_idx, read_idx_images};
pub use loader::{Batch, Batches, DataLoader};
pub use numpy::{NumpyArray, read_npz};
pub use presets::Split;
pub use transform::Transform;
