//! CIFAR-10 in both of its official versions. The binary version's batches are records of
//! one label byte and a 32×32 image as its red, green and blue planes (3,073 bytes); the
//! Python version's (`cifar-10-batches-py`, as torchvision and Keras download it) are
//! pickled dicts of a `data` array [n, 3072] of the same planes and a `labels` list. Reads
//! single batch files (plain or gzipped), a directory of them, or either official archive
//! without unpacking it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::ImageDataset;
use crate::pickle::{self, Value};
use crate::presets::Split;
use crate::{DataError, Result, source};

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

const SIDE: usize = 32;
const IMAGE: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + IMAGE;

fn class_names() -> Vec<String> {
    CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// Splits batch bytes into images and labels, refusing a partial record or a bad label.
fn parse_records(path: &Path, bytes: &[u8], images: &mut Vec<u8>, labels: &mut Vec<i32>) -> Result<()> {
    if !bytes.len().is_multiple_of(RECORD) {
        let whole = bytes.len() / RECORD;
        return Err(DataError::format(
            path,
            format!("offset {}", whole * RECORD),
            format!(
                "{} bytes are not a whole number of {RECORD}-byte records ({whole} whole, then {} left)",
                bytes.len(),
                bytes.len() % RECORD
            ),
        ));
    }
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] as usize >= CIFAR10_CLASSES.len() {
            return Err(DataError::format(
                path,
                format!("record {i} (offset {})", i * RECORD),
                format!("label {} is outside the 10 classes", record[0]),
            ));
        }
        labels.push(record[0] as i32);
        images.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Labels and images from a pickled batch: a dict with `data` ([n, 3072] bytes) and
/// `labels` (a list or array of n class numbers).
fn parse_pickled_batch(path: &Path, bytes: &[u8], images: &mut Vec<u8>, labels: &mut Vec<i32>) -> Result<()> {
    let batch = pickle::load(path, bytes)?;
    if !matches!(batch, Value::Dict(_)) {
        return Err(DataError::format(path, "the pickled object", format!("is {}, not a dict", batch.kind())));
    }
    let field = |key: &str| {
        batch.get(key).ok_or_else(|| DataError::format(path, format!("key '{key}'"), "the batch has no such key"))
    };
    let bad = |key: &str, what: String| DataError::format(path, format!("key '{key}'"), what);
    let data = match field("data")? {
        Value::Array(Some(array)) => array,
        other => return Err(bad("data", format!("is {}, not a NumPy array", other.kind()))),
    };
    let pixels = data.bytes().map_err(|why| bad("data", why))?;
    let rows = match data.shape()[..] {
        [n, IMAGE] | [n, 3, SIDE, SIDE] => n,
        _ => return Err(bad("data", format!("has shape {:?}, not [n, {IMAGE}]", data.shape()))),
    };
    let classes: Vec<i64> = match field("labels")? {
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Int(n) => Ok(*n),
                other => Err(bad("labels", format!("item {i} is {}, not an int", other.kind()))),
            })
            .collect::<Result<_>>()?,
        Value::Array(Some(array)) => array.integers(),
        other => return Err(bad("labels", format!("is {}, not a list", other.kind()))),
    };
    if classes.len() != rows {
        return Err(bad("labels", format!("holds {} labels for {rows} images", classes.len())));
    }
    if let Some(i) = classes.iter().position(|&c| !(0..CIFAR10_CLASSES.len() as i64).contains(&c)) {
        return Err(bad("labels", format!("item {i}, {}, is outside the 10 classes", classes[i])));
    }
    labels.extend(classes.iter().map(|&c| c as i32));
    images.extend_from_slice(pixels);
    Ok(())
}

/// A batch of either version, told apart by its first byte: a binary batch starts with a
/// label (0 to 9), a pickle with an opcode (0x80, or `(` or `}` in protocols 0 and 1).
fn parse_batch(path: &Path, bytes: &[u8], images: &mut Vec<u8>, labels: &mut Vec<i32>) -> Result<()> {
    match bytes.first() {
        Some(&first) if first as usize >= CIFAR10_CLASSES.len() => parse_pickled_batch(path, bytes, images, labels),
        _ => parse_records(path, bytes, images, labels),
    }
}

/// One batch file of either version, such as `data_batch_1.bin`, `test_batch.bin.gz` or the
/// Python version's `data_batch_1`.
pub fn read_cifar10_batch(path: &Path) -> Result<ImageDataset> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    parse_batch(path, &source::read_all(path)?, &mut images, &mut labels)?;
    if labels.is_empty() {
        return Err(DataError::format(path, "offset 0", "the file holds no records"));
    }
    ImageDataset::new(images, labels, [3, SIDE, SIDE], class_names())
}

/// The names a split's batches have in either version: `data_batch_1.bin` … or
/// `data_batch_1` …, one list per batch.
fn batch_names(split: Split) -> Vec<[String; 2]> {
    let stems: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}")).collect(),
        Split::Test => vec!["test_batch".into()],
    };
    stems.into_iter().map(|stem| [format!("{stem}.bin"), stem]).collect()
}

/// The directories and archives, inside a directory, that the official downloads unpack to
/// or are: the binary version's and the Python version's.
const LAYOUTS: [&str; 4] =
    ["cifar-10-batches-bin", "cifar-10-batches-py", "cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"];

/// The training batches present (1 to 5) or the test batch, of either version: from a
/// directory of batch files (each plain or gzipped), from an official `.tar.gz` archive, or
/// from a directory holding one of those (as torchvision's and Keras's roots do).
pub fn read_cifar10(path: &Path, split: Split) -> Result<ImageDataset> {
    let names = batch_names(split);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    if path.is_dir() {
        let batches: Vec<PathBuf> = names.iter().filter_map(|versions| find_batch(path, versions)).collect();
        if batches.is_empty() {
            // A root that holds an unpacked or packed download.
            if let Some(inner) = LAYOUTS.iter().map(|name| path.join(name)).find(|p| p.exists()) {
                return read_cifar10(&inner, split);
            }
            let wanted: Vec<&str> = names.iter().map(|[binary, _]| binary.as_str()).collect();
            return Err(DataError::Invalid(format!(
                "{} holds no CIFAR-10 batches: none of {wanted:?} (or without .bin, or .gz), nor any of {LAYOUTS:?}",
                path.display()
            )));
        }
        for batch in batches {
            parse_batch(&batch, &source::read_all(&batch)?, &mut images, &mut labels)?;
        }
    } else {
        read_archive(path, &names, &mut images, &mut labels)?;
    }
    if labels.is_empty() {
        return Err(DataError::Invalid(format!("{}: the {split:?} batches hold no records", path.display())));
    }
    ImageDataset::new(images, labels, [3, SIDE, SIDE], class_names())
}

/// The file of one batch in `dir`, under any of its names, plain or gzipped.
fn find_batch(dir: &Path, versions: &[String; 2]) -> Option<PathBuf> {
    versions.iter().flat_map(|name| [dir.join(name), dir.join(format!("{name}.gz"))]).find(|p| p.is_file())
}

/// The batches named by `names` from a (gzipped) tar archive, in the order of `names`.
fn read_archive(path: &Path, names: &[[String; 2]], images: &mut Vec<u8>, labels: &mut Vec<i32>) -> Result<()> {
    let mut archive = tar::Archive::new(source::open(path)?);
    let mut batches = BTreeMap::new();
    // The last member begun, for an archive that breaks off between or inside members.
    let mut reached = String::from("the start");
    let broken = |reached: &str, e: std::io::Error| {
        DataError::format(path, format!("at or after member {reached}"), format!("the archive breaks off: {e}"))
    };
    for entry in archive.entries().map_err(|e| broken(&reached, e))? {
        let mut entry = entry.map_err(|e| broken(&reached, e))?;
        let entry_path = entry.path().map_err(|e| broken(&reached, e))?.into_owned();
        reached = entry_path.display().to_string();
        let Some(file) = entry_path.file_name().and_then(|f| f.to_str()) else { continue };
        if let Some(order) = names.iter().position(|versions| versions.iter().any(|n| n == file)) {
            let member = path.join(&entry_path);
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| source::broken_off(&member, bytes.len(), e))?;
            // A member cut short reads as fewer bytes than its header gives, not as an error.
            let size = entry.header().size().map_err(|e| broken(&reached, e))?;
            if (bytes.len() as u64) < size {
                let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{size} bytes were due"));
                return Err(source::broken_off(&member, bytes.len(), e));
            }
            batches.insert(order, (member, bytes));
        }
    }
    if batches.is_empty() {
        let wanted: Vec<&String> = names.iter().flatten().collect();
        return Err(DataError::Invalid(format!("the archive {} holds none of {wanted:?}", path.display())));
    }
    for (member, bytes) in batches.values() {
        parse_batch(member, bytes, images, labels)?;
    }
    Ok(())
}
