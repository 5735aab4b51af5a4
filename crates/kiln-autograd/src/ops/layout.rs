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
}
