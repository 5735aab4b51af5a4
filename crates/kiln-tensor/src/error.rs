use thiserror::Error;

use crate::{DType, Device};

/// What a tensor operation can refuse, with the operation's name and the offending values.
#[derive(Clone, Debug, Error)]
pub enum TensorError {
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not fit ({why})")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize>, why: &'static str },

    #[error("{op}: operands live on different devices ({lhs} and {rhs}); move one with .to(&device)")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },

    #[error("{op}: expected a tensor of {expected:?}, got {got:?}")]
    DTypeMismatch { op: &'static str, expected: DType, got: DType },

    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    InvalidAxis { op: &'static str, axis: isize, rank: usize },

    #[error("{op}: {why}")]
    InvalidArgument { op: &'static str, why: String },

    #[error("{0} values do not fill shape {1:?} ({2} elements)")]
    DataLength(usize, Vec<usize>, usize),

    #[error(transparent)]
    Gpu(#[from] kiln_wgsl::GpuError),
}

pub type Result<T, E = TensorError> = std::result::Result<T, E>;
