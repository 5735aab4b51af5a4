//! Reshaping, reordering, slicing and joining along axes.

use kiln_tensor::shape::normalize_axis;
use kiln_tensor::{Tensor, TensorError};

use crate::{Result, Var};

impl Var {
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let original = self.value().shape().to_vec();
        Ok(Var::custom(self.value().reshape(shape)?, &[self], move |g| Ok(vec![Some(g.reshape(&original)?)])))
    }

    /// The axes from `start` on merged into one (no copy).
    pub fn flatten(&self, start: usize) -> Result<Var> {
        let original = self.value().shape().to_vec();
        Ok(Var::custom(self.value().flatten(start)?, &[self], move |g| Ok(vec![Some(g.reshape(&original)?)])))
    }

    /// The same elements in `shape`, as `view`/`reshape` (no copy).
    pub fn view(&self, shape: &[usize]) -> Result<Var> {
        self.reshape(shape)
    }

    /// The axes in the order `dims` gives (`dims[i]` is the input axis that becomes axis i).
    pub fn permute(&self, dims: &[usize]) -> Result<Var> {
        let value = self.value().permute(dims)?;
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    /// Axes `a` and `b` swapped (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Var> {
        let value = self.value().transpose(a, b)?;
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.transpose(a, b)?)])))
    }

    /// Entries `start..start + len` along `axis`, as `torch.narrow` (a copy).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Var> {
        let x = self.value();
        let axis = normalize_axis("narrow", axis, x.rank())?;
        let value = x.narrow(axis as isize, start, len)?;
        let shape = x.shape().to_vec();
        Ok(Var::custom(value, &[self], move |g| {
            // The gradient in its place between zeros.
            let zeros = |len: usize| {
                let mut piece = shape.clone();
                piece[axis] = len;
                Tensor::zeros(&piece, &g.device())
            };
            let (before, after) = (zeros(start)?, zeros(shape[axis] - start - len)?);
            Ok(vec![Some(Tensor::cat(&[&before, g, &after], axis as isize)?)])
        }))
    }

    /// The values joined along `axis`, as `torch.cat`.
    pub fn cat(vars: &[&Var], axis: isize) -> Result<Var> {
        let values: Vec<Tensor> = vars.iter().map(|v| v.value()).collect();
        let value = Tensor::cat(&values.iter().collect::<Vec<_>>(), axis)?;
        let axis = normalize_axis("cat", axis, value.rank())?;
        let extents: Vec<usize> = values.iter().map(|v| v.shape()[axis]).collect();
        Ok(Var::custom(value, vars, move |g| {
            let mut start = 0;
            extents
                .iter()
                .map(|&extent| {
                    let piece = g.narrow(axis as isize, start, extent)?;
                    start += extent;
                    Ok(Some(piece))
                })
                .collect()
        }))
    }

    /// The values, all of one shape, stacked along a new axis at `axis`, as `torch.stack`.
    pub fn stack(vars: &[&Var], axis: usize) -> Result<Var> {
        let Some(first) = vars.first() else {
            return Err(TensorError::InvalidArgument { op: "stack", why: "needs at least one value".into() }.into());
        };
        let shape = first.value().shape().to_vec();
        if axis > shape.len() {
            return Err(TensorError::InvalidAxis { op: "stack", axis: axis as isize, rank: shape.len() + 1 }.into());
        }
        let mut lifted = shape.clone();
        lifted.insert(axis, 1);
        let lifted: Vec<Var> = vars
            .iter()
            .map(|v| {
                if v.value().shape() != shape.as_slice() {
                    let why = "stacked values must all have one shape";
                    return Err(TensorError::ShapeMismatch {
                        op: "stack",
                        lhs: shape.clone(),
                        rhs: v.value().shape().to_vec(),
                        why,
                    }
                    .into());
                }
                v.reshape(&lifted)
            })
            .collect::<Result<_>>()?;
        Var::cat(&lifted.iter().collect::<Vec<_>>(), axis as isize)
    }
}
