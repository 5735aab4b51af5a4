//! Shape arithmetic shared by the ops: broadcasting and axis normalisation.

pub use kiln_wgsl::kernels::contiguous_strides;

use crate::{Result, TensorError};

/// The NumPy broadcast of two shapes: aligned at the right, each pair of dimensions equal or
/// one of them 1.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(TensorError::ShapeMismatch { op, lhs: a.to_vec(), rhs: b.to_vec(), why: "not broadcastable" }),
        })
        .collect()
}

/// Strides that read a contiguous tensor of `shape` as if it had the (broadcast) shape `to`:
/// 0 along every dimension it is repeated in.
pub fn broadcast_strides(shape: &[usize], to: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let offset = to.len() - shape.len();
    (0..to.len()).map(|i| if i < offset || shape[i - offset] == 1 { 0 } else { own[i - offset] }).collect()
}

/// A possibly negative axis (−1 is the last) as an index, or an error naming the op.
pub fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let resolved = if axis < 0 { axis + rank as isize } else { axis };
    if resolved < 0 || resolved as usize >= rank {
        return Err(TensorError::InvalidAxis { op, axis, rank });
    }
    Ok(resolved as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes("t", &[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast_shapes("t", &[], &[5]).unwrap(), vec![5]);
        assert_eq!(broadcast_shapes("t", &[0, 3], &[1, 3]).unwrap(), vec![0, 3]);
        assert!(broadcast_shapes("t", &[2, 3], &[3, 2]).is_err());
        assert_eq!(broadcast_strides(&[4, 1], &[2, 4, 3]), vec![0, 1, 0]);
    }

    #[test]
    fn negative_axes_count_from_the_end() {
        assert_eq!(normalize_axis("t", -1, 3).unwrap(), 2);
        assert_eq!(normalize_axis("t", 0, 3).unwrap(), 0);
        assert!(normalize_axis("t", 3, 3).is_err());
        assert!(normalize_axis("t", -4, 3).is_err());
    }
}
