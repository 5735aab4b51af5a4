//! Opening dataset files, plain or gzipped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::{DataError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A reader over the file's contents, decompressing when the file starts with the gzip
/// magic (whatever its name), so `x.csv` and `x.csv.gz` are read alike.
pub(crate) fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut file, &mut magic).map_err(|e| DataError::io(path, e))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let whole = BufReader::with_capacity(1 << 20, head.chain(file));
    if got == 2 && magic == GZIP_MAGIC {
        Ok(Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(whole))))
    } else {
        Ok(Box::new(whole))
    }
}

/// The whole (decompressed) file. A read that breaks off (a truncated or corrupt gzip
/// stream) names the byte of the decompressed data it reached.
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // On an error read_to_end has kept what it read, so its length is where the data broke.
    open(path)?.read_to_end(&mut bytes).map_err(|e| broken_off(path, bytes.len(), e))?;
    Ok(bytes)
}

/// A read of `path` that failed after `offset` bytes of its (decompressed) data.
pub(crate) fn broken_off(path: &Path, offset: usize, e: std::io::Error) -> DataError {
    DataError::format(path, format!("byte {offset} of the decompressed data"), format!("the data breaks off: {e}"))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
