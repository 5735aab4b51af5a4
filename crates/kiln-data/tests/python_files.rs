//! The files Python leaves: pickled CIFAR-10 batches and NumPy `.npz` archives. The good
//! ones read as their originals; malformed ones are refused with an error naming the file,
//! where in it and what was wrong; garbage never panics. (Files made by Python itself, in
//! every pickle protocol, are read in the facade's tests/dataset_files.rs.)

mod common;

use common::error_of;

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_data::presets::{self, Split};
use kiln_data::{read_cifar10, read_cifar10_batch, read_npz};
use proptest::prelude::*;

/// CIFAR-10's first three training images as Python 2 pickled them in
/// `cifar-10-batches-py/data_batch_1` (made by tests/dataset_files.py --small).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar-10-batches-py/data_batch_1")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the fixture holds the pattern");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

#[test]
fn a_python_2_batch_reads_as_the_binary_batch() {
    let batch = read_cifar10_batch(&fixture()).unwrap();
    assert_eq!(batch.labels(), &[6, 9, 9]);
    assert_eq!(batch.shape(), [3, 32, 32]);
    let sums: Vec<u64> = (0..3).map(|i| batch.image(i).iter().map(|&p| p as u64).sum()).collect();
    assert_eq!(sums, [317_790, 400_427, 410_851], "pixel sums of the binary version's first records");
    if let Some(data) = common::data_dir("a_python_2_batch_reads_as_the_binary_batch") {
        let binary = read_cifar10_batch(&data.join("cifar-10/data_batch_1.bin.gz")).unwrap();
        assert!(batch.images() == &binary.images()[..3 * 3072]);
    }
    // A directory of Python batches, found by their names.
    assert_eq!(read_cifar10(fixture().parent().unwrap(), Split::Train).unwrap(), batch);
}

#[test]
fn malformed_pickles() {
    let dir = common::scratch("bad-pickles");
    let good = std::fs::read(fixture()).unwrap();
    for cut in [1, 40, 200, good.len() - 1] {
        let path = write(&dir, &format!("cut-{cut}"), &good[..cut]);
        error_of(read_cifar10_batch(&path), &path, &["byte", "breaks off"]);
    }
    let call = write(&dir, "calls", &replaced(&good, b"numpy.core.multiarray\n_reconstruct\n", b"os\nsystem\n"));
    error_of(read_cifar10_batch(&call), &call, &["calls os.system", "no need of"]);
    let key = write(&dir, "key", &replaced(&good, b"U\x06labels", b"U\x06lables"));
    error_of(read_cifar10_batch(&key), &key, &["key 'labels'", "no such key"]);
    let label = write(&dir, "label", &replaced(&good, b"K\x06K\x09K\x09", b"K\x06K\x0bK\x09"));
    error_of(read_cifar10_batch(&label), &label, &["key 'labels'", "item 1, 11"]);
    let count = write(&dir, "count", &replaced(&good, b"K\x06K\x09K\x09e", b"K\x06K\x09e"));
    error_of(read_cifar10_batch(&count), &count, &["2 labels for 3 images"]);
    let short = write(&dir, "short", &replaced(&good, b"K\x03M\x00\x0c\x86", b"K\x04M\x00\x0c\x86"));
    error_of(read_cifar10_batch(&short), &short, &["needs 12288 bytes of data, 9216 are there"]);
    let list = write(&dir, "list", b"\x80\x02]q\x00.");
    error_of(read_cifar10_batch(&list), &list, &["a list, not a dict"]);
    let opcode = write(&dir, "opcode", b"\x80\x02\xff");
    error_of(read_cifar10_batch(&opcode), &opcode, &["byte 2", "opcode 0xff"]);
    let memo = write(&dir, "memo", b"\x80\x02h\x07.");
    error_of(read_cifar10_batch(&memo), &memo, &["memo entry 7"]);
}

/// A `.npy` file as NumPy writes it (format 1.0, header padded to 64 bytes).
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: String = shape.iter().map(|d| format!("{d},")).collect();
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    [b"\x93NUMPY\x01\x00".as_slice(), &(header.len() as u16).to_le_bytes(), header.as_bytes(), data].concat()
}

fn npz(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        writer.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Keras's four arrays for two training and one test image of 2×2 pixels.
fn mnist_members(y_train: Vec<u8>) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("x_train.npy", npy("|u1", &[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8])),
        ("y_train.npy", y_train),
        ("x_test.npy", npy("|u1", &[1, 2, 2], &[9, 9, 9, 9])),
        ("y_test.npy", npy("<i8", &[1], &7i64.to_le_bytes())),
    ]
}

#[test]
fn npz_archives_stored_and_deflated() {
    let dir = common::scratch("npz");
    for method in [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated] {
        let path = write(&dir, "mnist.npz", &npz(&mnist_members(npy("|u1", &[2], &[3, 0])), method));
        let (train, test) = presets::mnist_from(&dir).unwrap();
        assert_eq!(
            (train.labels(), train.images(), train.shape()),
            (&[3, 0][..], &[1, 2, 3, 4, 5, 6, 7, 8][..], [1, 2, 2])
        );
        assert_eq!((test.labels(), test.images()), (&[7][..], &[9, 9, 9, 9][..]));
        assert_eq!(presets::mnist_from(&path).unwrap(), (train, test));
    }
    let big_endian = read_npz(
        &write(
            &dir,
            "be.npz",
            &npz(&[("a.npy", npy(">i2", &[2], &[0xff, 0xfe, 0, 5]))], zip::CompressionMethod::Stored),
        ),
        &["a"],
    );
    assert_eq!(big_endian.unwrap()[0].integers(), [-2, 5]);
}

#[test]
fn malformed_npz_archives() {
    let dir = common::scratch("bad-npz");
    let stored = zip::CompressionMethod::Stored;
    let cases: [(&str, Vec<u8>, &[&str]); 7] = [
        (
            "floats",
            npz(&mnist_members(npy("<f4", &[2], &[0; 8])), stored),
            &["y_train.npy", "\"<f4\" is not an integer type"],
        ),
        (
            "range",
            npz(&mnist_members(npy("|u1", &[2], &[3, 10])), stored),
            &["y_train.npy", "element 1, 10, is outside the 10 classes"],
        ),
        ("count", npz(&mnist_members(npy("|u1", &[3], &[3, 1, 2])), stored), &["y_train.npy", "shape [3], not [2]"]),
        (
            "short",
            npz(&mnist_members(npy("|u1", &[2], &[3])), stored),
            &["y_train.npy", "needs 2 bytes of data, 1 are there"],
        ),
        ("magic", npz(&mnist_members(b"not numpy".to_vec()), stored), &["y_train.npy", "no \\x93NUMPY magic"]),
        ("missing", npz(&mnist_members(npy("|u1", &[2], &[3, 0]))[..3], stored), &["member y_test.npy", "x_train.npy"]),
        ("not-zip", b"PK but not really a zip archive".to_vec(), &["not a readable .npz archive"]),
    ];
    for (name, bytes, parts) in cases {
        let path = write(&dir, &format!("{name}/mnist.npz"), &bytes);
        error_of(presets::mnist_from(&path), &path, parts);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Garbage, and the fixture with one byte changed or cut anywhere, yield an error or a
    /// dataset — never a panic; a cut pickle is always an error.
    #[test]
    fn damaged_pickles_and_archives_never_panic(garbage in prop::collection::vec(any::<u8>(), 0..2000), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let dir = common::scratch("damaged-python-files");
        let good = std::fs::read(fixture()).unwrap();
        let mut changed = good.clone();
        changed[at.index(good.len())] = byte;
        let _ = read_cifar10_batch(&write(&dir, "changed", &changed));
        let _ = read_cifar10_batch(&write(&dir, "garbage", &[&[0x80u8][..], &garbage].concat()));
        let cut = write(&dir, "cut", &good[..at.index(good.len())]);
        prop_assert!(read_cifar10_batch(&cut).is_err());
        let archive = npz(&mnist_members(npy("|u1", &[2], &[3, 0])), zip::CompressionMethod::Deflated);
        let mut changed = archive.clone();
        changed[at.index(archive.len())] = byte;
        let _ = presets::mnist_from(&write(&dir, "changed.npz", &changed));
        let _ = presets::mnist_from(&write(&dir, "cut.npz", &archive[..at.index(archive.len())]));
    }
}
