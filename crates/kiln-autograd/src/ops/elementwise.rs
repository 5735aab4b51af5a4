//! Elementwise arithmetic and activations, broadcasting as NumPy.

use crate::{Result, Var};

impl Var {
    /// Elementwise sum, broadcasting as NumPy.
    pub fn add(&self, other: &Var) -> Result<Var> {
        let value = self.value().add(&other.value())?;
        let (a, b) = (self.value().shape().to_vec(), other.value().shape().to_vec());
        Ok(Var::custom(value, &[self, other], move |g| Ok(vec![Some(g.sum_to(&a)?), Some(g.sum_to(&b)?)])))
    }

    pub fn sub(&self, other: &Var) -> Result<Var> {
        let value = self.value().sub(&other.value())?;
        let (a, b) = (self.value().shape().to_vec(), other.value().shape().to_vec());
        Ok(Var::custom(value, &[self, other], move |g| Ok(vec![Some(g.sum_to(&a)?), Some(g.neg()?.sum_to(&b)?)])))
    }

    /// Elementwise product, broadcasting as NumPy.
    pub fn mul(&self, other: &Var) -> Result<Var> {
        let value = self.value().mul(&other.value())?;
        let (a, b) = (self.value(), other.value());
        Ok(Var::custom(value, &[self, other], move |g| {
            Ok(vec![Some(g.mul(&b)?.sum_to(a.shape())?), Some(g.mul(&a)?.sum_to(b.shape())?)])
        }))
    }

    pub fn add_scalar(&self, s: f32) -> Result<Var> {
        Ok(Var::custom(self.value().add_scalar(s)?, &[self], |g| Ok(vec![Some(g.clone())])))
    }

    pub fn mul_scalar(&self, s: f32) -> Result<Var> {
        Ok(Var::custom(self.value().mul_scalar(s)?, &[self], move |g| Ok(vec![Some(g.mul_scalar(s)?)])))
    }

    pub fn relu(&self) -> Result<Var> {
        let input = self.value();
        Ok(Var::custom(self.value().relu()?, &[self], move |g| Ok(vec![Some(g.relu_backward(&input)?)])))
    }
}
