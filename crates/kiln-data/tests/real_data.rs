//! The four shared datasets load with the counts, per-class totals and mean pixel values
//! that ../shared/data/README.md lists.

mod common;

use std::io::Write;

use kiln_data::presets::{self, AslLabels, Split};
use kiln_data::{ImageDataset, read_cifar10, read_cifar10_batch};

fn check(data: &ImageDataset, shape: [usize; 3], counts: &[usize], mean_pixel: f64) {
    assert_eq!(data.shape(), shape);
    assert_eq!(data.len(), counts.iter().sum::<usize>());
    assert_eq!(data.class_counts(), counts);
    assert!((data.mean_pixel() - mean_pixel).abs() < 0.005, "mean pixel {} vs {mean_pixel}", data.mean_pixel());
}

#[test]
fn mnist() {
    let Some(dir) = common::data_dir("mnist") else { return };
    let train = presets::mnist(&dir.join("mnist"), Split::Train).unwrap();
    check(&train, [1, 28, 28], &[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], 33.32);
    let test = presets::mnist(&dir.join("mnist"), Split::Test).unwrap();
    check(&test, [1, 28, 28], &[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], 33.79);
}

#[test]
fn fashion_mnist() {
    let Some(dir) = common::data_dir("fashion_mnist") else { return };
    let train = presets::fashion_mnist(&dir.join("fashion-mnist"), Split::Train).unwrap();
    check(&train, [1, 28, 28], &[6000; 10], 72.94);
    assert_eq!(train.class_names()[9], "Ankle boot");
    let test = presets::fashion_mnist(&dir.join("fashion-mnist"), Split::Test).unwrap();
    check(&test, [1, 28, 28], &[1000; 10], 73.15);
}

const ASL_TRAIN: [usize; 24] = [
    1126, 1010, 1144, 1196, 957, 1204, 1090, 1013, 1162, 1114, 1241, 1055, 1151, 1196, 1088, 1279, 1294, 1199, 1186,
    1161, 1082, 1225, 1164, 1118,
];
const ASL_TEST: [usize; 24] = [
    331, 432, 310, 245, 498, 247, 348, 436, 288, 331, 209, 394, 291, 246, 347, 164, 144, 246, 248, 266, 346, 206, 267,
    332,
];

#[test]
fn sign_language_mnist() {
    let Some(dir) = common::data_dir("sign_language_mnist") else { return };
    let dir = dir.join("sign-language-mnist");
    let train = presets::sign_language_mnist(&dir.join("sign_mnist_train.csv.gz"), AslLabels::Kaggle).unwrap();
    check(&train, [1, 28, 28], &ASL_TRAIN, 159.29);
    assert_eq!(train.class_names()[9], "K", "J is skipped");
    let test = presets::sign_language_mnist(&dir.join("sign_mnist_test.csv.gz"), AslLabels::Kaggle).unwrap();
    check(&test, [1, 28, 28], &ASL_TEST, 160.57);
}

#[test]
fn sign_language_mnist_as_the_dli_tutorial_labels_it() {
    let Some(dir) = common::data_dir("sign_language_mnist_as_the_dli_tutorial_labels_it") else { return };
    let kaggle =
        presets::sign_language_mnist(&dir.join("sign-language-mnist/sign_mnist_test.csv.gz"), AslLabels::Kaggle)
            .unwrap()
            .take(300);
    // The DLI copy: every label above 9 lowered by one, plain text, LF line ends.
    let scratch = common::scratch("dli");
    let path = scratch.join("sign_mnist_valid.csv");
    let mut file = std::fs::File::create(&path).unwrap();
    let header: Vec<String> =
        std::iter::once("label".to_string()).chain((1..=784).map(|i| format!("pixel{i}"))).collect();
    writeln!(file, "{}", header.join(",")).unwrap();
    for i in 0..kaggle.len() {
        let pixels: Vec<String> = kaggle.image(i).iter().map(|p| p.to_string()).collect();
        writeln!(file, "{},{}", kaggle.label(i), pixels.join(",")).unwrap();
    }
    drop(file);
    let dli = presets::sign_language_mnist(&path, AslLabels::Contiguous).unwrap();
    assert_eq!(dli, kaggle);
}

#[test]
fn cifar10_from_batches_and_from_the_official_tarball() {
    let Some(dir) = common::data_dir("cifar10") else { return };
    let dir = dir.join("cifar-10");
    let train = read_cifar10(&dir, Split::Train).unwrap();
    check(&train, [3, 32, 32], &[1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981], 121.04);
    assert_eq!(train, read_cifar10_batch(&dir.join("data_batch_1.bin.gz")).unwrap());
    let test = read_cifar10(&dir, Split::Test).unwrap();
    check(&test, [3, 32, 32], &[1000; 10], 121.53);

    // The official archive layout: cifar-10-batches-bin/<batch>.bin inside a .tar.gz.
    let scratch = common::scratch("cifar-tar");
    let archive = scratch.join("cifar-10-binary.tar.gz");
    let encoder = flate2::write::GzEncoder::new(std::fs::File::create(&archive).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(encoder);
    for (name, data) in [("data_batch_1.bin", &train), ("test_batch.bin", &test)] {
        let mut bytes = Vec::new();
        for i in 0..data.len() {
            bytes.push(data.label(i) as u8);
            bytes.extend_from_slice(data.image(i));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    assert_eq!(read_cifar10(&archive, Split::Train).unwrap(), train);
    assert_eq!(read_cifar10(&archive, Split::Test).unwrap(), test);
}
