//! Sums, means, maxima and softmax, over all elements or along an axis.

use kiln_tensor::Tensor;
use kiln_tensor::shape::normalize_axis;

use crate::{Result, Var};

/// The shape of a reduction along `axis` with `keepdim`: that axis as 1.
fn kept(shape: &[usize], axis: usize) -> Vec<usize> {
    let mut kept = shape.to_vec();
    kept[axis] = 1;
    kept
}

/// The gradient of a reduction's output `g` (with or without the kept axis) spread back
/// over the input's `shape`.
fn spread(g: &Tensor, shape: &[usize], axis: usize) -> kiln_tensor::Result<Tensor> {
    g.reshape(&kept(shape, axis))?.broadcast_to(shape)
}

impl Var {
    /// The sum of every element (rank 0).
    pub fn sum_all(&self) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        Ok(Var::custom(self.value().sum_all()?, &[self], move |g| Ok(vec![Some(g.broadcast_to(&shape)?)])))
    }

    /// The mean of every element (rank 0).
    pub fn mean_all(&self) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        let n = self.value().len() as f32;
        Ok(Var::custom(self.value().mean_all()?, &[self], move |g| {
            Ok(vec![Some(g.broadcast_to(&shape)?.div_scalar(n)?)])
        }))
    }

    /// The sum along `axis` (negative counts from the end); `keepdim` leaves it as size 1.
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        let axis = normalize_axis("sum", axis, shape.len())?;
        let value = self.value().sum(axis as isize, keepdim)?;
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(spread(g, &shape, axis)?)])))
    }

    /// The mean along `axis`; `keepdim` leaves it as size 1.
    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Var> {
        let shape = self.value().shape().to_vec();
        let axis = normalize_axis("mean", axis, shape.len())?;
        let (value, n) = (self.value().mean(axis as isize, keepdim)?, shape[axis] as f32);
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(spread(g, &shape, axis)?.div_scalar(n)?)])))
    }

    /// The maximum along `axis`, as `torch.amax`: where several elements share the maximum,
    /// they share its gradient evenly.
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Var> {
        let x = self.value();
        let axis = normalize_axis("max", axis, x.rank())?;
        let value = x.max(axis as isize, keepdim)?;
        let maximum = value.reshape(&kept(x.shape(), axis))?;
        Ok(Var::custom(value, &[self], move |g| {
            let at_maximum = x.eq(&maximum)?;
            let ties = at_maximum.sum(axis as isize, true)?;
            Ok(vec![Some(spread(g, x.shape(), axis)?.mul(&at_maximum)?.div(&ties)?)])
        }))
    }

    /// exp(x) / Σ exp(x) along `axis`.
    pub fn softmax(&self, axis: isize) -> Result<Var> {
        let value = self.value().softmax(axis)?;
        let y = value.clone();
        // ∂/∂x: y·(g − Σ g·y), the sum along the axis.
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(y.mul(&g.sub(&g.mul(&y)?.sum(axis, true)?)?)?)])))
    }

    /// log(softmax(x)) along `axis`.
    pub fn log_softmax(&self, axis: isize) -> Result<Var> {
        let value = self.value().log_softmax(axis)?;
        let y = value.clone();
        // ∂/∂x: g − softmax(x)·Σ g, the sum along the axis.
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.sub(&y.exp()?.mul(&g.sum(axis, true)?)?)?)])))
    }
}
