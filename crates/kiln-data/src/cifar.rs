//! CIFAR-10, binary version: records of one label byte and a 32×32 image as its red, green
//! and blue planes (3,073 bytes). Reads single batch files (plain or gzipped), a directory of
//! them, or the official `cifar-10-binary.tar.gz` without unpacking it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::dataset::ImageDataset;
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

/// One batch file, such as `data_batch_1.bin` or `test_batch.bin.gz`.
pub fn read_cifar10_batch(path: &Path) -> Result<ImageDataset> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    parse_records(path, &source::read_all(path)?, &mut images, &mut labels)?;
    if labels.is_empty() {
        return Err(DataError::format(path, "offset 0", "the file holds no records"));
    }
    ImageDataset::new(images, labels, [3, SIDE, SIDE], class_names())
}

fn batch_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    }
}

/// The training batches present (1 to 5) or the test batch, from a directory of batch files
/// (`.bin` or `.bin.gz`) or from the official `.tar.gz` archive.
pub fn read_cifar10(path: &Path, split: Split) -> Result<ImageDataset> {
    let names = batch_names(split);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    if path.is_dir() {
        let mut found = 0;
        for name in &names {
            for candidate in [path.join(name), path.join(format!("{name}.gz"))] {
                if candidate.is_file() {
                    parse_records(&candidate, &source::read_all(&candidate)?, &mut images, &mut labels)?;
                    found += 1;
                    break;
                }
            }
        }
        if found == 0 {
            return Err(DataError::Invalid(format!("{} holds none of {names:?} (or .gz)", path.display())));
        }
    } else {
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
            if let Some(order) = names.iter().position(|n| n == file) {
                let member = path.join(&entry_path);
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(|e| source::broken_off(&member, bytes.len(), e))?;
                // A member cut short reads as fewer bytes than its header gives, not as an error.
                let size = entry.header().size().map_err(|e| broken(&reached, e))?;
                if (bytes.len() as u64) < size {
                    let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{size} bytes were due"));
                    return Err(source::broken_off(&member, bytes.len(), e));
                }
                batches.insert(order, (entry_path, bytes));
            }
        }
        if batches.is_empty() {
            return Err(DataError::Invalid(format!("the archive {} holds none of {names:?}", path.display())));
        }
        for (entry_path, bytes) in batches.values() {
            parse_records(&path.join(entry_path), bytes, &mut images, &mut labels)?;
        }
    }
    if labels.is_empty() {
        return Err(DataError::Invalid(format!("{}: the {split:?} batches hold no records", path.display())));
    }
    if labels.is_empty() {
        return Err(DataError::Invalid(format!("{}: the {split:?} batches hold no records", path.display())));
    }
    ImageDataset::new(images, labels, [3, SIDE, SIDE], class_names())
}
