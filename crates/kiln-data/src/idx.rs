//! IDX files (MNIST, Fashion-MNIST): a big-endian header `0 0 type ndims`, ndims u32
//! dimensions, then the data. Kiln reads the u8 type (0x08), which is what those datasets use.

use std::path::Path;

use crate::dataset::ImageDataset;
use crate::{DataError, Result, source};

const U8_TYPE: u8 = 0x08;

/// The dimensions and bytes of one IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads and validates an IDX file, plain or gzipped.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(path, &source::read_all(path)?)
}

pub(crate) fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            "offset 0",
            format!("{} bytes are too few for an IDX header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            "offset 0",
            format!("magic {:02x} {:02x} {:02x} {:02x} is not an IDX header", bytes[0], bytes[1], bytes[2], bytes[3]),
        ));
    }
    if bytes[2] != U8_TYPE {
        return Err(DataError::format(
            path,
            "offset 2",
            format!("element type 0x{:02x} is not supported (only u8, 0x08)", bytes[2]),
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err(DataError::format(path, "offset 3", format!("header of {ndims} dimensions is truncated or empty")));
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let found = bytes.len() - header;
    match expected {
        Some(n) if n == found => Ok(IdxArray { dims, data: bytes[header..].to_vec() }),
        Some(n) if n > found => Err(DataError::format(
            path,
            format!("offset {}", bytes.len()),
            format!("truncated: dimensions {dims:?} need {n} data bytes, the file has {found}"),
        )),
        Some(n) => Err(DataError::format(
            path,
            format!("offset {}", header + n),
            format!("{} bytes follow the {n} that dimensions {dims:?} describe", found - n),
        )),
        None => Err(DataError::format(path, "offset 4", format!("dimensions {dims:?} overflow"))),
    }
}

/// An image file (`[n, h, w]`) and its label file (`[n]`) as one dataset.
pub fn read_idx_images(images: &Path, labels: &Path, class_names: Vec<String>) -> Result<ImageDataset> {
    let pictures = read_idx(images)?;
    let [n, h, w] = pictures.dims[..] else {
        return Err(DataError::format(
            images,
            "offset 3",
            format!("images need 3 dimensions, found {:?}", pictures.dims),
        ));
    };
    if n == 0 {
        return Err(DataError::format(images, "offset 4", "the file holds no images (its count is 0)"));
    }
    let tags = read_idx(labels)?;
    if tags.dims.len() != 1 {
        return Err(DataError::format(labels, "offset 3", format!("labels need 1 dimension, found {:?}", tags.dims)));
    }
    if tags.dims[0] != n {
        return Err(DataError::Invalid(format!(
            "{} holds {n} images but {} holds {} labels",
            images.display(),
            labels.display(),
            tags.dims[0]
        )));
    }
    if let Some(i) = tags.data.iter().position(|&l| l as usize >= class_names.len()) {
        return Err(DataError::format(
            labels,
            format!("offset {}", 8 + i),
            format!("label {} is outside the {} classes", tags.data[i], class_names.len()),
        ));
    }
    let labels = tags.data.iter().map(|&l| l as i32).collect();
    ImageDataset::new(pictures.data, labels, [1, h, w], class_names)
}
