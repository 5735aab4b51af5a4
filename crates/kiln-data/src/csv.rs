//! Image tables in CSV: one label column plus one column per pixel (Sign Language MNIST,
//! Fashion-MNIST's Kaggle copies). Plain or gzipped, CRLF or LF.

use std::path::Path;

use csv::{ByteRecord, ReaderBuilder};

use crate::dataset::{ImageDataset, numbered_classes};
use crate::{DataError, Result, source};

/// How the file's label values become class indices.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelMap {
    /// The labels already are class indices 0..n.
    Identity,
    /// `classes[i]` is the file's label for class i; any other label is an error. Kaggle's
    /// Sign Language MNIST, labelled 0..24 with 9 (J) absent, uses 0..=8 and 10..=24.
    Classes(Vec<i64>),
}

/// What to expect of a CSV image table.
#[derive(Clone, Debug)]
pub struct CsvImageOptions {
    /// The header name of the label column; every other column is a pixel.
    pub label_column: String,
    pub labels: LabelMap,
    /// Names of the classes; by default "0", "1", … as many as the labels need.
    pub class_names: Option<Vec<String>>,
    /// [C, H, W]; by default a square greyscale image of all the pixel columns.
    pub shape: Option<[usize; 3]>,
}

impl Default for CsvImageOptions {
    fn default() -> Self {
        Self { label_column: "label".into(), labels: LabelMap::Identity, class_names: None, shape: None }
    }
}

/// A whole number from a CSV cell (surrounding spaces allowed).
fn parse_int(cell: &[u8]) -> Option<i64> {
    let cell = cell.trim_ascii();
    let (negative, digits) = match cell.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, cell),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value = 0i64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (d - b'0') as i64;
    }
    Some(if negative { -value } else { value })
}

fn shown(cell: &[u8]) -> String {
    let text = String::from_utf8_lossy(cell);
    if text.chars().count() > 20 {
        format!("{}…", text.chars().take(20).collect::<String>())
    } else {
        text.into_owned()
    }
}

/// Reads a CSV image table, rejecting anything malformed with the file, line and column.
pub fn read_csv_images(path: &Path, options: &CsvImageOptions) -> Result<ImageDataset> {
    // Records end at '\n' only: a CRLF file's '\r' stays on the last cell, where parsing
    // trims it. With the default CRLF terminator the csv crate reports the line of a CRLF
    // file's records one too low, and errors must name the right line.
    let mut reader = ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(source::open(path)?);
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or("header".to_string(), |p| format!("line {}", p.line()));
        match e.into_kind() {
            csv::ErrorKind::Io(io) => DataError::io(path, io),
            other => DataError::format(path, line, format!("{other:?}")),
        }
    };
    let header = reader.byte_headers().map_err(csv_error)?.clone();
    if header.is_empty() {
        return Err(DataError::format(path, "line 1", "the file is empty: no header row"));
    }
    let label_at =
        header.iter().position(|name| name.trim_ascii() == options.label_column.as_bytes()).ok_or_else(|| {
            DataError::format(path, "header", format!("no column named '{}' holds the labels", options.label_column))
        })?;
    let pixels = header.len() - 1;
    let shape = match options.shape {
        Some(shape) if shape.iter().product::<usize>() == pixels => shape,
        Some(shape) => {
            return Err(DataError::format(
                path,
                "header",
                format!("{pixels} pixel columns do not make images of {shape:?}"),
            ));
        }
        None => {
            let side = (pixels as f64).sqrt().round() as usize;
            if side * side != pixels || side == 0 {
                return Err(DataError::format(
                    path,
                    "header",
                    format!("{pixels} pixel columns are not a square image; give the shape"),
                ));
            }
            [1, side, side]
        }
    };

    let mut images = Vec::new();
    let mut raw_labels = Vec::new();
    let mut record = ByteRecord::new();
    while reader.read_byte_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, |p| p.line());
        let at = || format!("line {line}");
        if record.len() != header.len() {
            return Err(DataError::format(
                path,
                at(),
                format!("{} fields, but the header has {}", record.len(), header.len()),
            ));
        }
        for (column, cell) in record.iter().enumerate() {
            let name = || String::from_utf8_lossy(header[column].trim_ascii()).into_owned();
            let value = parse_int(cell).ok_or_else(|| {
                DataError::format(
                    path,
                    format!("{}, column '{}'", at(), name()),
                    format!("'{}' is not a whole number", shown(cell)),
                )
            })?;
            if column == label_at {
                raw_labels.push((value, line));
            } else if (0..=255).contains(&value) {
                images.push(value as u8);
            } else {
                return Err(DataError::format(
                    path,
                    format!("{}, column '{}'", at(), name()),
                    format!("pixel value {value} is outside 0..255"),
                ));
            }
        }
    }

    let labels = map_labels(path, &raw_labels, &options.labels)?;
    let class_names = match &options.class_names {
        Some(names) => names.clone(),
        None => match &options.labels {
            LabelMap::Classes(classes) => numbered_classes(classes.len()),
            LabelMap::Identity => numbered_classes(labels.iter().max().map_or(0, |&m| m as usize + 1)),
        },
    };
    if let Some((&bad, &(raw, line))) = labels.iter().zip(&raw_labels).find(|&(&l, _)| l as usize >= class_names.len())
    {
        return Err(DataError::format(
            path,
            format!("line {line}"),
            format!("label {raw} (class {bad}) is outside the {} classes", class_names.len()),
        ));
    }
    ImageDataset::new(images, labels, shape, class_names)
}

fn map_labels(path: &Path, raw: &[(i64, u64)], map: &LabelMap) -> Result<Vec<i32>> {
    raw.iter()
        .map(|&(value, line)| {
            let class = match map {
                LabelMap::Identity => (0..i32::MAX as i64).contains(&value).then_some(value as i32),
                LabelMap::Classes(classes) => classes.iter().position(|&c| c == value).map(|i| i as i32),
            };
            class.ok_or_else(|| {
                DataError::format(path, format!("line {line}"), format!("label {value} is not a known class"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_int;

    #[test]
    fn whole_numbers_only() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b" 255 "), Some(255));
        assert_eq!(parse_int(b"-3"), Some(-3));
        for bad in [&b""[..], b"-", b"1.5", b"x1", b"1e3", b"9999999999999999999"] {
            assert_eq!(parse_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
