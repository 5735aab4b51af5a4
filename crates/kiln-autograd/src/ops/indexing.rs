//! Picking by index: rows, and elements along an axis.

use kiln_tensor::Tensor;

use crate::{Result, Var};

impl Var {
    /// The rows (entries along axis 0) at `indices`, repeats allowed, as `torch.index_select`
    /// along 0 (an embedding lookup): the gradient of a repeated row adds up.
    pub fn index_select(&self, indices: &[usize]) -> Result<Var> {
        let value = self.value().index_select(indices)?;
        let (indices, rows) = (indices.to_vec(), self.value().shape().first().copied().unwrap_or(0));
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.index_select_backward(&indices, rows)?)])))
    }

    /// The elements picked along `axis` by the i32 `index`, as `torch.gather`.
    pub fn gather(&self, axis: isize, index: &Tensor) -> Result<Var> {
        let value = self.value().gather(axis, index)?;
        let (index, shape) = (index.clone(), self.value().shape().to_vec());
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.gather_backward(axis, &index, &shape)?)])))
    }
}
