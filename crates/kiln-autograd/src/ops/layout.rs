//! Reshaping and reordering axes.

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
}
