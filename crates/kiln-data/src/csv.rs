//! Image tables in CSV: one label column plus one column per pixel (Sign Language MNIST,
//! Fashion-MNIST's Kaggle copies). Plain or gzipped, CRLF or LF.

use std::path::Path;

use std::io::Read;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};

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

/// Bytes handed to a parsing thread at a time (whole lines).
const CHUNK_BYTES: usize = 1 << 20;

/// A run of whole lines, and the line number of its first.
struct Chunk {
    index: usize,
    first_line: u64,
    bytes: Vec<u8>,
}

/// A chunk's pixels, and its labels with their line numbers.
struct Parsed {
    index: usize,
    images: Vec<u8>,
    labels: Vec<(i64, u64)>,
}

/// A parsed chunk, or its first fault and that fault's line.
type ChunkResult = Result<Parsed, (u64, DataError)>;

/// What every chunk is parsed against.
struct Layout<'a> {
    path: &'a Path,
    header: &'a ByteRecord,
    label_at: usize,
}

/// A csv reader over `bytes`. Records end at '\n' only: a CRLF file's '\r' stays on the last
/// cell, where parsing trims it. (With the default CRLF terminator the csv crate reports the
/// lines of a CRLF file's records one too low, and errors must name the right line.)
fn csv_reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    ReaderBuilder::new().has_headers(false).flexible(true).terminator(csv::Terminator::Any(b'\n')).from_reader(bytes)
}

/// Reads a CSV image table, rejecting anything malformed with the file, line and column.
///
/// The file is streamed: this thread reads (and decompresses) it in chunks of whole lines
/// while other threads parse them with the csv crate, and the chunks are put back in order.
/// When the file has several faults, the error names the first.
pub fn read_csv_images(path: &Path, options: &CsvImageOptions) -> Result<ImageDataset> {
    let mut input = source::open(path)?;
    let mut pending = Vec::with_capacity(CHUNK_BYTES);
    let mut at_end = false;
    while !at_end && !pending.contains(&b'\n') {
        at_end = fill(path, &mut input, &mut pending)?;
    }
    let header_end = pending.iter().position(|&b| b == b'\n').map_or(pending.len(), |i| i + 1);
    let header =
        csv_reader(&pending[..header_end]).byte_records().next().transpose().ok().flatten().unwrap_or_default();
    pending.drain(..header_end);
    if header.is_empty() {
        return Err(DataError::format(path, "line 1", "the file is empty: no header row"));
    }
    let label_at =
        header.iter().position(|name| name.trim_ascii() == options.label_column.as_bytes()).ok_or_else(|| {
            DataError::format(path, "header", format!("no column named '{}' holds the labels", options.label_column))
        })?;
    let pixels = header.len() - 1;
    let shape = image_shape(path, pixels, options.shape)?;
    let layout = Layout { path, header: &header, label_at };

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let mut parsed = std::thread::scope(|scope| -> Result<Vec<ChunkResult>> {
        let (work, jobs) = sync_channel::<Chunk>(workers * 2);
        let jobs = Arc::new(Mutex::new(jobs));
        let (done, results) = channel();
        for _ in 0..workers {
            let (jobs, done, layout) = (jobs.clone(), done.clone(), &layout);
            scope.spawn(move || {
                while let Ok(chunk) = { jobs.lock().expect("job queue").recv() } {
                    if done.send(parse_chunk(layout, chunk)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done);
        let (mut index, mut line) = (0, 2u64);
        let mut read_error = None;
        loop {
            // Whole lines to hand out: everything at the end of the input, else up to the last
            // line break once a chunk's worth is buffered (0 means read on; a line may be
            // longer than a chunk).
            let cut = if at_end {
                pending.len()
            } else if pending.len() < CHUNK_BYTES {
                0
            } else {
                pending.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
            };
            if cut == 0 {
                if at_end {
                    break;
                }
                match fill(path, &mut input, &mut pending) {
                    Ok(end) => at_end = end,
                    Err(e) => {
                        // Lines before `line` went out whole; whole ones may wait in `pending`.
                        let whole = line - 1 + pending.iter().filter(|&&b| b == b'\n').count() as u64;
                        read_error = Some(e.after_line(whole));
                        break;
                    }
                }
                continue;
            }
            let rest = pending.split_off(cut);
            let bytes = std::mem::replace(&mut pending, rest);
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            if work.send(Chunk { index, first_line: line, bytes }).is_err() {
                break;
            }
            index += 1;
            line += lines;
        }
        drop(work);
        let results: Vec<ChunkResult> = results.iter().collect();
        match read_error {
            Some(e) => Err(e),
            None => Ok(results),
        }
    })?;
    parsed.sort_by_key(|r| r.as_ref().map_or(0, |p| p.index));
    let mut images = Vec::with_capacity(parsed.iter().flatten().map(|p| p.images.len()).sum());
    let mut raw_labels = Vec::new();
    let mut first_error: Option<(u64, DataError)> = None;
    for result in parsed {
        match result {
            Ok(part) => {
                images.extend_from_slice(&part.images);
                raw_labels.extend(part.labels);
            }
            Err((line, e)) => {
                if first_error.as_ref().is_none_or(|(first, _)| line < *first) {
                    first_error = Some((line, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    if raw_labels.is_empty() {
        return Err(DataError::format(path, "line 2", "no rows after the header: the file holds no images"));
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

/// Appends up to a chunk of the input to `pending`; true at the end of the input.
fn fill(path: &Path, input: &mut impl Read, pending: &mut Vec<u8>) -> Result<bool> {
    let start = pending.len();
    pending.resize(start + CHUNK_BYTES, 0);
    let got = loop {
        match input.read(&mut pending[start..]) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                pending.truncate(start);
                return Err(DataError::io(path, e));
            }
        }
    };
    pending.truncate(start + got);
    Ok(got == 0)
}

fn image_shape(path: &Path, pixels: usize, given: Option<[usize; 3]>) -> Result<[usize; 3]> {
    match given {
        Some(shape) if shape.iter().product::<usize>() == pixels => Ok(shape),
        Some(shape) => {
            Err(DataError::format(path, "header", format!("{pixels} pixel columns do not make images of {shape:?}")))
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
            Ok([1, side, side])
        }
    }
}

/// Parses one chunk; a fault comes back with its line so the earliest can be reported.
fn parse_chunk(layout: &Layout<'_>, chunk: Chunk) -> ChunkResult {
    let Layout { path, header, label_at } = *layout;
    let mut images = Vec::with_capacity(chunk.bytes.len() / 3);
    let mut labels = Vec::new();
    let mut reader = csv_reader(&chunk.bytes);
    let mut record = ByteRecord::new();
    loop {
        let more = reader.read_byte_record(&mut record).map_err(|e| {
            let line = chunk.first_line + e.position().map_or(0, |p| p.line() - 1);
            (line, DataError::format(path, format!("line {line}"), e.to_string()))
        })?;
        if !more {
            break;
        }
        let line = chunk.first_line + record.position().map_or(0, |p| p.line() - 1);
        if record.len() != header.len() {
            let what = format!("{} fields, but the header has {}", record.len(), header.len());
            return Err((line, DataError::format(path, format!("line {line}"), what)));
        }
        for (column, cell) in record.iter().enumerate() {
            let fault = |what: String| {
                let name = String::from_utf8_lossy(header[column].trim_ascii()).into_owned();
                Err((line, DataError::format(path, format!("line {line}, column '{name}'"), what)))
            };
            match parse_int(cell) {
                Some(value) if column == label_at => labels.push((value, line)),
                Some(value @ 0..=255) => images.push(value as u8),
                Some(value) => return fault(format!("pixel value {value} is outside 0..255")),
                None => return fault(format!("'{}' is not a whole number", shown(cell))),
            }
        }
    }
    Ok(Parsed { index: chunk.index, images, labels })
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
