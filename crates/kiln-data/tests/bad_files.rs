//! Malformed files of every format are refused with an error naming the file, where in it,
//! and what was wrong; garbage never panics.

mod common;

use common::error_of;

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_data::presets::Split;
use kiln_data::{
    CsvImageOptions, LabelMap, numbered_classes, read_cifar10, read_cifar10_batch, read_csv_images, read_idx,
    read_idx_images,
};
use proptest::prelude::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

const HEADER: &str = "label,pixel1,pixel2,pixel3,pixel4";

#[test]
fn csv_tables() {
    let dir = common::scratch("bad-csv");
    let options = CsvImageOptions::default();
    let good = write(&dir, "good.csv", format!("{HEADER}\r\n1,0,255,3,4\r\n0,5,6,7,8\r\n").as_bytes());
    let data = read_csv_images(&good, &options).unwrap();
    assert_eq!((data.len(), data.shape(), data.image(0)), (2, [1, 2, 2], &[0u8, 255, 3, 4][..]));
    let gz = write(&dir, "good.csv.gz", &gzip(format!("{HEADER}\n1,0,255,3,4\n0,5,6,7,8\n").as_bytes()));
    assert_eq!(read_csv_images(&gz, &options).unwrap(), data, "gzip and LF read alike");

    let cases: [(&str, String, &[&str]); 8] = [
        ("ragged.csv", format!("{HEADER}\n1,0,255,3,4\n0,5,6,7\n"), &["line 3", "4 fields", "header has 5"]),
        ("word.csv", format!("{HEADER}\n1,0,x7,3,4\n"), &["line 2", "column 'pixel2'", "'x7' is not a whole number"]),
        ("bright.csv", format!("{HEADER}\n1,0,256,3,4\n"), &["line 2", "column 'pixel2'", "256 is outside 0..255"]),
        ("negative.csv", format!("{HEADER}\n1,0,-1,3,4\n"), &["line 2", "outside 0..255"]),
        (
            "nolabel.csv",
            "class,pixel1,pixel2,pixel3,pixel4\n1,0,0,0,0\n".into(),
            &["header", "no column named 'label'"],
        ),
        ("empty.csv", String::new(), &["empty"]),
        ("header-only.csv", format!("{HEADER}\n"), &["line 2", "no rows after the header"]),
        ("notsquare.csv", "label,a,b,c\n1,0,0,0\n".into(), &["3 pixel columns", "not a square"]),
    ];
    for (name, text, parts) in cases {
        let path = write(&dir, name, text.as_bytes());
        error_of(read_csv_images(&path, &options), &path, parts);
    }

    let kaggle = CsvImageOptions { labels: LabelMap::Classes(vec![0, 1, 2]), ..CsvImageOptions::default() };
    let unknown = write(&dir, "unknown.csv", format!("{HEADER}\n7,0,0,0,0\n").as_bytes());
    error_of(read_csv_images(&unknown, &kaggle), &unknown, &["line 2", "label 7 is not a known class"]);
    let named = CsvImageOptions { class_names: Some(numbered_classes(1)), ..CsvImageOptions::default() };
    error_of(read_csv_images(&good, &named), &good, &["line 2", "outside the 1 classes"]);

    let truncated_gz = write(&dir, "cut.csv.gz", &gzip(format!("{HEADER}\n1,0,255,3,4\n").as_bytes())[..30]);
    assert!(read_csv_images(&truncated_gz, &options).is_err(), "a cut gzip stream is an error");
    let missing = dir.join("missing.csv");
    error_of(read_csv_images(&missing, &options), &missing, &[]);
}

/// A gzipped table cut short deep inside: the error names the last whole line read.
#[test]
fn a_cut_gzip_names_the_last_whole_line() {
    let dir = common::scratch("cut-gz");
    let row = format!("3,{}\n", ["128"; 4].join(","));
    let text = format!("{HEADER}\n") + &row.repeat(200_000);
    let zipped = gzip(text.as_bytes());
    let cut = write(&dir, "cut.csv.gz", &zipped[..zipped.len() / 2]);
    // What a reader gets from the cut stream before it breaks off: its whole lines.
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&zipped[..zipped.len() / 2]), &mut got);
    let whole = got.iter().filter(|&&b| b == b'\n').count();
    assert!(whole > 10_000, "cut deep inside ({whole} lines)");
    let location = format!("after line {whole}, the last whole one");
    error_of(read_csv_images(&cut, &CsvImageOptions::default()), &cut, &[&location, "the data breaks off"]);
}

#[test]
fn faults_deep_in_a_large_file_name_their_line() {
    // Several parsing chunks' worth of CRLF rows; the first fault decides the error.
    let dir = common::scratch("deep-csv");
    let row = format!("3,{}\r\n", vec!["128"; 784].join(","));
    let header = format!("label,{}\r\n", (1..=784).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(","));
    let mut text = header.clone() + &row.repeat(6000);
    let good = write(&dir, "big.csv", text.as_bytes());
    assert_eq!(read_csv_images(&good, &CsvImageOptions::default()).unwrap().len(), 6000);
    // Line 4001 (row 4000) gets a bad pixel, line 5001 a ragged row.
    let offset = |line: usize| header.len() + (line - 2) * row.len();
    text.replace_range(offset(4001) + 2..offset(4001) + 5, "999");
    text.replace_range(offset(5001)..offset(5001) + 6, "3,1\r\n");
    let bad = write(&dir, "bad.csv", text.as_bytes());
    error_of(read_csv_images(&bad, &CsvImageOptions::default()), &bad, &["line 4001, column 'pixel1'", "999"]);
}

fn idx(type_byte: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, type_byte, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn idx_files() {
    let dir = common::scratch("bad-idx");
    let images = write(&dir, "images", &idx(8, &[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]));
    let labels = write(&dir, "labels.gz", &gzip(&idx(8, &[2], &[1, 0])));
    let data = read_idx_images(&images, &labels, numbered_classes(2)).unwrap();
    assert_eq!((data.labels(), data.image(1)), (&[1, 0][..], &[5u8, 6, 7, 8][..]));

    let magic = write(&dir, "magic", b"\x08\x03\x00\x00rest");
    error_of(read_idx(&magic), &magic, &["offset 0", "not an IDX header"]);
    let floats = write(&dir, "floats", &idx(0x0d, &[1], &[0, 0, 0, 0]));
    error_of(read_idx(&floats), &floats, &["offset 2", "0x0d is not supported"]);
    let short = write(&dir, "short", &idx(8, &[2, 2, 2], &[1, 2, 3]));
    error_of(read_idx(&short), &short, &["truncated", "need 8 data bytes", "has 3"]);
    let long = write(&dir, "long", &idx(8, &[2], &[1, 2, 3]));
    error_of(read_idx(&long), &long, &["offset 10", "1 bytes follow"]);
    let header = write(&dir, "header", &[0, 0, 8, 3, 0, 0]);
    error_of(read_idx(&header), &header, &["header of 3 dimensions is truncated"]);

    let three = write(&dir, "three-labels", &idx(8, &[3], &[0, 1, 1]));
    let message = read_idx_images(&images, &three, numbered_classes(2)).unwrap_err().to_string();
    assert!(message.contains("2 images") && message.contains("3 labels"), "{message}");
    let big = write(&dir, "big-label", &idx(8, &[2], &[0, 10]));
    error_of(
        read_idx_images(&images, &big, numbered_classes(10)),
        &big,
        &["offset 9", "label 10 is outside the 10 classes"],
    );
    error_of(read_idx_images(&labels, &labels, numbered_classes(2)), &labels, &["images need 3 dimensions"]);
    let none = write(&dir, "no-images", &idx(8, &[0, 2, 2], &[]));
    let no_labels = write(&dir, "no-labels", &idx(8, &[0], &[]));
    error_of(read_idx_images(&none, &no_labels, numbered_classes(2)), &none, &["holds no images"]);
    let cut = write(&dir, "cut.gz", &gzip(&idx(8, &[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]))[..20]);
    error_of(read_idx(&cut), &cut, &["of the decompressed data", "the data breaks off"]);
}

#[test]
fn cifar_batches() {
    let dir = common::scratch("bad-cifar");
    let record = |label: u8| std::iter::once(label).chain(std::iter::repeat_n(label, 3072)).collect::<Vec<u8>>();
    let good = write(&dir, "data_batch_1.bin", &[record(3), record(9)].concat());
    assert_eq!(read_cifar10_batch(&good).unwrap().labels(), &[3, 9]);
    assert_eq!(read_cifar10(&dir, Split::Train).unwrap().len(), 2);
    error_of(read_cifar10(&dir, Split::Test), &dir, &["test_batch.bin"]);

    let partial = write(&dir, "partial.bin", &[record(1), vec![1; 100]].concat());
    error_of(read_cifar10_batch(&partial), &partial, &["offset 3073", "1 whole, then 100 left"]);
    let label = write(&dir, "label.bin", &[record(1), record(10)].concat());
    error_of(read_cifar10_batch(&label), &label, &["record 1 (offset 3073)", "label 10"]);
    let not_tar = write(&dir, "cifar-10-binary.tar.gz", &gzip(b"this is not a tar archive at all"));
    assert!(read_cifar10(&not_tar, Split::Train).is_err());
    let empty = write(&dir, "empty.bin", &[]);
    error_of(read_cifar10_batch(&empty), &empty, &["holds no records"]);
    let cut = write(&dir, "cut.bin.gz", &gzip(&[record(3), record(9)].concat())[..40]);
    error_of(read_cifar10_batch(&cut), &cut, &["of the decompressed data", "the data breaks off"]);

    // An archive of two batches, cut inside the second: named after the first, whole one.
    let mut tarball = tar::Builder::new(Vec::new());
    for name in ["cifar-10-batches-bin/data_batch_1.bin", "cifar-10-batches-bin/data_batch_2.bin"] {
        let batch = [record(3), record(9)].concat();
        let mut header = tar::Header::new_gnu();
        header.set_size(batch.len() as u64);
        header.set_cksum();
        tarball.append_data(&mut header, name, &batch[..]).unwrap();
    }
    let archive = tarball.into_inner().unwrap();
    let cut = write(&dir, "cut-cifar-10-binary.tar.gz", &gzip(&archive[..archive.len() / 2 + 3000]));
    let message = read_cifar10(&cut, Split::Train).unwrap_err().to_string();
    assert!(message.contains("data_batch_2.bin") && message.contains("the data breaks off"), "{message}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Garbage, plain or gzipped, yields an error or (rarely) a valid dataset — never a panic.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4000), zipped in any::<bool>(), cut in any::<prop::sample::Index>()) {
        let dir = common::scratch("garbage");
        let bytes = if zipped { gzip(&bytes) } else { bytes };
        let path = write(&dir, "garbage", &bytes);
        let _ = read_csv_images(&path, &CsvImageOptions::default());
        let _ = read_idx(&path);
        let _ = read_cifar10_batch(&path);
        let _ = read_cifar10(&path, Split::Train);
        // A valid file cut anywhere is always an error.
        let valid = idx(8, &[3, 4, 5], &[7; 60]);
        let cut = write(&dir, "cut", &valid[..cut.index(valid.len())]);
        prop_assert!(read_idx(&cut).is_err());
    }

    /// CSV text built from random fields: ragged rows, words, big numbers.
    #[test]
    fn random_csv_rows_never_panic(rows in prop::collection::vec(prop::collection::vec("[0-9]{1,4}|-?[a-z.]{0,3}", 0..7), 0..6)) {
        let dir = common::scratch("random-csv");
        let text = std::iter::once(HEADER.to_string()).chain(rows.iter().map(|r| r.join(","))).collect::<Vec<_>>().join("\n");
        let path = write(&dir, "rows.csv", text.as_bytes());
        if let Ok(data) = read_csv_images(&path, &CsvImageOptions::default()) {
            // A row of one empty field is a blank line, which CSV readers (and pandas) skip.
            prop_assert_eq!(data.len(), rows.iter().filter(|r| !r.join(",").is_empty()).count());
        }
    }
}
