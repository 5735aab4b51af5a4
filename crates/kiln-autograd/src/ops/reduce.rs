//! Sums, means and maxima.

use crate::{Result, Var};

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
}
