//! NumPy arrays as Keras and pickled datasets store them: `.npy` files, `.npz` archives of
//! them (stored or deflated), and the arrays the pickle reader rebuilds.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{DataError, Result};

/// An n-dimensional array of integers: NumPy's type string (`"|u1"`, `"<i8"`), its shape
/// and its bytes in C order, checked to agree ([`NumpyArray::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumpyArray {
    descr: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The integer types a label or pixel array may have: (kind, size) from a type string.
fn integer_type(descr: &str) -> Option<(char, usize, bool)> {
    let (order, rest) = match descr.chars().next()? {
        c @ ('<' | '>' | '|' | '=') => (c, &descr[1..]),
        _ => ('|', descr),
    };
    let mut chars = rest.chars();
    let kind = chars.next()?;
    let size: usize = chars.as_str().parse().ok()?;
    let big_endian = order == '>' && size > 1;
    (matches!(kind, 'u' | 'i') && matches!(size, 1 | 2 | 4 | 8)).then_some((kind, size, big_endian))
}

impl NumpyArray {
    /// Checks that `data` holds exactly the elements `shape` and `descr` describe.
    pub fn new(descr: String, shape: Vec<usize>, data: Vec<u8>) -> std::result::Result<Self, String> {
        let Some((_, size, _)) = integer_type(&descr) else {
            return Err(format!("element type {descr:?} is not an integer type (u1, i8 …)"));
        };
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match elements.and_then(|n| n.checked_mul(size)) {
            Some(bytes) if bytes == data.len() => Ok(Self { descr, shape, data }),
            Some(bytes) => {
                Err(format!("shape {shape:?} of {descr} needs {bytes} bytes of data, {} are there", data.len()))
            }
            None => Err(format!("shape {shape:?} overflows")),
        }
    }

    /// NumPy's type string, such as `"|u1"` or `"<i8"`.
    pub fn descr(&self) -> &str {
        &self.descr
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as bytes, for a `u1` array (pixels).
    pub fn bytes(&self) -> std::result::Result<&[u8], String> {
        match integer_type(&self.descr) {
            Some(('u', 1, _)) => Ok(&self.data),
            _ => Err(format!("holds {} elements, not bytes (u1)", self.descr)),
        }
    }

    /// The elements as integers (labels), whatever their integer type.
    pub fn integers(&self) -> Vec<i64> {
        let (kind, size, big_endian) = integer_type(&self.descr).expect("checked by new");
        self.data
            .chunks_exact(size)
            .map(|element| {
                let mut word = [0u8; 8];
                if big_endian {
                    word[8 - size..].copy_from_slice(element);
                    word.reverse();
                } else {
                    word[..size].copy_from_slice(element);
                }
                let unsigned = u64::from_le_bytes(word);
                if kind == 'i' {
                    let unused = 64 - 8 * size as u32;
                    ((unsigned << unused) as i64) >> unused
                } else {
                    unsigned as i64
                }
            })
            .collect()
    }
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// One `.npy` file's array. `path` names the file (or the archive member) in errors.
pub(crate) fn parse_npy(path: &Path, bytes: &[u8]) -> Result<NumpyArray> {
    let bad = |offset: usize, what: String| DataError::format(path, format!("byte {offset}"), what);
    if !bytes.starts_with(NPY_MAGIC) || bytes.len() < 10 {
        return Err(bad(0, "not a NumPy .npy file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        version => return Err(bad(6, format!("format version {version} is not one NumPy writes (1 to 3)"))),
    };
    let header_end = header_start.saturating_add(header_len);
    let header = bytes
        .get(header_start..header_end)
        .ok_or_else(|| bad(bytes.len(), format!("the {header_len}-byte header breaks off")))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(header_start, "the header is not text".into()))?;
    let field = |key: &str| {
        let at =
            header.find(&format!("'{key}'")).ok_or_else(|| bad(header_start, format!("the header has no '{key}'")))?;
        let value = header[at + key.len() + 2..].trim_start();
        value.strip_prefix(':').map(str::trim_start).ok_or_else(|| bad(header_start, format!("'{key}' has no value")))
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad(header_start, format!("descr {descr:.20} is not a plain type string")))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(bad(header_start, "Fortran-ordered arrays are not supported".into()));
    }
    let shape = field("shape")?;
    let dims = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(header_start, format!("shape {shape:.20} is not a tuple")))?;
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| bad(header_start, format!("shape ({dims}) is not whole numbers"))))
        .collect::<Result<Vec<usize>>>()?;
    NumpyArray::new(descr.to_string(), shape, bytes[header_end..].to_vec()).map_err(|why| bad(header_end, why))
}

/// The named arrays of a `.npz` archive (`name` without `.npy`), in the order asked.
pub fn read_npz(path: &Path, names: &[&str]) -> Result<Vec<NumpyArray>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| DataError::format(path, "its zip directory", format!("not a readable .npz archive: {e}")))?;
    let present: Vec<String> = archive.file_names().filter_map(Result::ok).map(String::from).collect();
    names
        .iter()
        .map(|name| {
            let member = format!("{name}.npy");
            let member_path = path.join(&member);
            let mut entry = archive.by_name(&member).map_err(|e| {
                DataError::format(path, format!("member {member}"), format!("{e} (the archive holds {present:?})"))
            })?;
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| crate::source::broken_off(&member_path, bytes.len(), e))?;
            parse_npy(&member_path, &bytes)
        })
        .collect()
}
