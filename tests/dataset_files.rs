//! The tutorials' dataset files as their frameworks leave them on disk — CIFAR-10's Python
//! batches (as Python 2 wrote them, and pickled again by Python 3 in every protocol),
//! Keras's `mnist.npz` (stored and deflated), Kaggle's Fashion-MNIST CSVs, torchvision's
//! `raw` folders and the official archives — each read through `Tutorial::datasets` as the
//! examples' `--data` does, and compared with the same images read from the shared data's
//! own files. The files are written by tests/dataset_files.py from the shared data.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::data::presets::{self, Split};
use kiln::data::{ImageDataset, read_cifar10};
use kiln::tutorials::Tutorial;

/// The files tests/dataset_files.py writes, in a scratch directory, and the data root.
fn written(test: &str) -> Option<(PathBuf, PathBuf)> {
    let root = common::data_root(test)?;
    if !common::python_has(test, &["numpy"]) {
        return None;
    }
    let out = common::scratch("dataset-files", test);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dataset_files.py");
    let status = Command::new("python3").arg(script).arg(&root).arg(&out).status().expect("python3 runs");
    assert!(status.success(), "tests/dataset_files.py failed");
    Some((root, out))
}

fn same(found: &ImageDataset, expected: &ImageDataset, what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: sample count");
    assert_eq!(found.shape(), expected.shape(), "{what}: image shape");
    assert!(found.labels() == expected.labels(), "{what}: labels differ");
    assert!(found.images() == expected.images(), "{what}: pixels differ");
    assert_eq!(found.class_names(), expected.class_names(), "{what}: class names");
}

#[test]
fn cifar10_python_batches_in_every_pickle_protocol() {
    let Some((root, out)) = written("cifar10_python_batches_in_every_pickle_protocol") else { return };
    let binary = root.join("cifar-10");
    let (train, test) = (read_cifar10(&binary, Split::Train).unwrap(), read_cifar10(&binary, Split::Test).unwrap());
    let versions = std::iter::once("py2".to_string()).chain((0..=5).map(|p| format!("py3-protocol-{p}")));
    for version in versions {
        // The root torchvision and Keras are given, holding cifar-10-batches-py/.
        let (found_train, found_test) = Tutorial::Cifar10Lenet.datasets(&out.join(&version)).unwrap();
        same(&found_train, &train, &format!("{version} training batch"));
        same(&found_test, &test, &format!("{version} test batch"));
    }

    // The official archive, named itself or found in the root, without unpacking it.
    let tarball = out.join("archive/cifar-10-python.tar.gz");
    std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
    let status = Command::new("tar")
        .args(["czf", tarball.to_str().unwrap(), "-C", out.join("py2").to_str().unwrap(), "cifar-10-batches-py"])
        .status()
        .unwrap();
    assert!(status.success(), "tar");
    same(&read_cifar10(&tarball, Split::Test).unwrap(), &test, "the archive's test batch");
    same(&Tutorial::Cifar10Lenet.datasets(&out.join("archive")).unwrap().0, &train, "the archive in a root");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn keras_mnist_npz_stored_and_deflated() {
    let Some((root, out)) = written("keras_mnist_npz_stored_and_deflated") else { return };
    let mnist = root.join("mnist");
    let (train, test) = (presets::mnist(&mnist, Split::Train).unwrap(), presets::mnist(&mnist, Split::Test).unwrap());
    for folder in ["keras", "keras-deflated"] {
        for path in [out.join(folder), out.join(folder).join("mnist.npz")] {
            let (found_train, found_test) = Tutorial::MnistMlp.datasets(&path).unwrap();
            same(&found_train, &train, &format!("{} training set", path.display()));
            same(&found_test, &test, &format!("{} test set", path.display()));
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn kaggle_fashion_mnist_csvs() {
    let Some((root, out)) = written("kaggle_fashion_mnist_csvs") else { return };
    let fashion = root.join("fashion-mnist");
    let train = presets::fashion_mnist(&fashion, Split::Train).unwrap().take(2000);
    let test = presets::fashion_mnist(&fashion, Split::Test).unwrap().take(2000);
    let (found_train, found_test) = Tutorial::FashionMnistCnn.datasets(&out.join("kaggle")).unwrap();
    same(&found_train, &train, "Kaggle's training CSV");
    same(&found_test, &test, "Kaggle's test CSV");
    std::fs::remove_dir_all(&out).unwrap();
}

/// torchvision's roots: `MNIST/raw/` and `FashionMNIST/raw/` holding the IDX files.
#[test]
fn torchvision_raw_folders() {
    let Some(root) = common::data_root("torchvision_raw_folders") else { return };
    let out = common::scratch("dataset-files", "torchvision_raw_folders");
    for (tutorial, source, folder) in
        [(Tutorial::MnistMlp, "mnist", "MNIST"), (Tutorial::FashionMnistMlp, "fashion-mnist", "FashionMNIST")]
    {
        let raw = out.join(folder).join("raw");
        std::fs::create_dir_all(&raw).unwrap();
        for entry in std::fs::read_dir(root.join(source)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), raw.join(entry.file_name())).unwrap();
        }
        let expected = tutorial.datasets(&root.join(source)).unwrap();
        for path in [out.clone(), out.join(folder), raw] {
            let found = tutorial.datasets(&path).unwrap();
            same(&found.0, &expected.0, &format!("{tutorial} from {}", path.display()));
            same(&found.1, &expected.1, &format!("{tutorial} from {}", path.display()));
        }
    }
    let error = Tutorial::MnistMlp.datasets(&out.join("FashionMNIST/raw/missing")).unwrap_err().to_string();
    assert!(error.contains("holds no MNIST files") && error.contains("mnist.npz"), "{error}");
    std::fs::remove_dir_all(&out).unwrap();
}
