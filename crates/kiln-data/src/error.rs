use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a dataset could not be read. Every variant names the file; format errors also say
/// where in it (line and column, record, or byte offset) and what was wrong.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}: {location}: {what}", path.display())]
    Format { path: PathBuf, location: String, what: String },

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Tensor(#[from] kiln_tensor::TensorError),
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn format(path: &Path, location: impl Into<String>, what: impl Into<String>) -> Self {
        DataError::Format { path: path.to_path_buf(), location: location.into(), what: what.into() }
    }

    /// A read of a line-based file that failed after its `line`th whole line (a truncated
    /// or corrupt gzip stream), said so.
    pub(crate) fn after_line(self, line: u64) -> Self {
        match self {
            DataError::Io { path, source } => DataError::Format {
                path,
                location: format!("after line {line}, the last whole one"),
                what: format!("the data breaks off: {source}"),
            },
            other => other,
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
