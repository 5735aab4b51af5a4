//! The parts of the hardware-GPU check (benches/gpu/) that need no GPU: the dataset slices
//! it carries read back through Kiln's readers as the first images of the real files, and
//! its table gives Kiln's ratio to each PyTorch run and fails on a missing row.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use common::data_root;
use kiln::tutorials::Tutorial;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("gpu-check", name)
}

fn python(script: &str, args: &[&OsStr]) -> std::process::Output {
    Command::new("python3")
        .arg(repo().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 {script}: {e} (the GPU check's scripts need python3)"))
}

#[test]
fn dataset_slices_read_back_as_the_first_images_of_the_real_files() {
    let Some(root) = data_root("dataset_slices_read_back_as_the_first_images_of_the_real_files") else { return };
    let dest = scratch("slices");
    let (from, to) = (root.as_os_str(), dest.as_os_str());
    let counts = ["--train", "300", "--test", "50", "--cifar-train", "40"].map(OsStr::new);
    let output = python("benches/gpu/slice_data.py", &[&[from, to], &counts[..]].concat());
    assert!(output.status.success(), "slice_data.py: {}", String::from_utf8_lossy(&output.stderr));
    for (tutorial, train_len) in
        [(Tutorial::MnistMlp, 300), (Tutorial::FashionMnistMlp, 300), (Tutorial::Cifar10Lenet, 40)]
    {
        let dir = tutorial.dataset_dir();
        let (full_train, full_test) = tutorial.datasets(&root.join(dir)).unwrap();
        let (train, test) = tutorial.datasets(&dest.join(dir)).unwrap();
        assert_eq!((train.len(), test.len()), (train_len, 50), "{tutorial}");
        assert_eq!(train.images(), full_train.take(train_len).images(), "{tutorial}: training images");
        assert_eq!(train.labels(), full_train.take(train_len).labels(), "{tutorial}: training labels");
        assert_eq!(test.images(), full_test.take(50).images(), "{tutorial}: test images");
        assert_eq!(test.labels(), full_test.take(50).labels(), "{tutorial}: test labels");
    }

    let too_many = python("benches/gpu/slice_data.py", &[from, to, "--cifar-train".as_ref(), "10001".as_ref()]);
    let why = String::from_utf8_lossy(&too_many.stderr);
    assert!(!too_many.status.success() && why.contains("data_batch_1.bin") && why.contains("10001"), "{why}");
    std::fs::remove_dir_all(&dest).unwrap();
}

fn rows(framework: &str, device: &str, samples_per_second: f64, tutorials: &[&str]) -> String {
    let rows: Vec<String> = tutorials
        .iter()
        .map(|t| {
            format!(
                r#"{{"tutorial": "{t}", "framework": "{framework}", "device": "{device}", "batch_size": 32,
                    "samples_per_second": {samples_per_second}, "per_step": {{"dispatches": 12.5}},
                    "device_kind": "cuda", "compiled": false}}"#
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

#[test]
fn the_table_gives_each_ratio_and_fails_on_a_missing_row() {
    let all = ["asl_cnn", "asl_mlp", "fashion_mnist_cnn", "fashion_mnist_mlp", "mnist_mlp", "cifar10_lenet"];
    let dir = scratch("table");
    let (kiln, torch) = (dir.join("kiln.json"), dir.join("torch.json"));
    std::fs::write(&kiln, rows("kiln", "gpu: Some GPU", 3000.0, &all)).unwrap();
    std::fs::write(&torch, rows("pytorch", "cuda eager: Some GPU", 1500.0, &all)).unwrap();

    let output = python("benches/gpu/table.py", &[kiln.as_os_str(), torch.as_os_str()]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("| asl_cnn (32) | 3,000 | 12.5 | 1,500 | 2.00× |"), "{table}");
    assert_eq!(table.matches("2.00×").count(), all.len(), "{table}");

    std::fs::write(&torch, rows("pytorch", "cuda eager: Some GPU", 1500.0, &all[1..])).unwrap();
    let output = python("benches/gpu/table.py", &[kiln.as_os_str(), torch.as_os_str()]);
    let why = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && why.contains("asl_cnn (PyTorch cuda eager)"), "{why}");

    std::fs::write(&kiln, "[]").unwrap();
    std::fs::write(&torch, "[]").unwrap();
    let output = python("benches/gpu/table.py", &[kiln.as_os_str(), torch.as_os_str()]);
    let why = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && why.contains("nothing ran"), "{why}");
    std::fs::remove_dir_all(&dir).unwrap();
}
