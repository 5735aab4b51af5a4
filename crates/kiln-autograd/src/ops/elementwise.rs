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

    /// Elementwise quotient, broadcasting as NumPy.
    pub fn div(&self, other: &Var) -> Result<Var> {
        let value = self.value().div(&other.value())?;
        let (a, b, quotient) = (self.value(), other.value(), value.clone());
        Ok(Var::custom(value, &[self, other], move |g| {
            // d(a/b)/db = −(a/b)/b.
            let grad_b = g.mul(&quotient)?.div(&b)?.neg()?.sum_to(b.shape())?;
            Ok(vec![Some(g.div(&b)?.sum_to(a.shape())?), Some(grad_b)])
        }))
    }

    pub fn neg(&self) -> Result<Var> {
        Ok(Var::custom(self.value().neg()?, &[self], |g| Ok(vec![Some(g.neg()?)])))
    }

    pub fn div_scalar(&self, s: f32) -> Result<Var> {
        Ok(Var::custom(self.value().div_scalar(s)?, &[self], move |g| Ok(vec![Some(g.div_scalar(s)?)])))
    }

    /// xᵖ for a constant exponent `p`.
    pub fn pow_scalar(&self, p: f32) -> Result<Var> {
        let x = self.value();
        Ok(Var::custom(x.pow_scalar(p)?, &[self], move |g| {
            Ok(vec![Some(g.mul(&x.pow_scalar(p - 1.0)?)?.mul_scalar(p)?)])
        }))
    }

    pub fn exp(&self) -> Result<Var> {
        let value = self.value().exp()?;
        let y = value.clone();
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.mul(&y)?)])))
    }

    /// The natural logarithm.
    pub fn log(&self) -> Result<Var> {
        let x = self.value();
        Ok(Var::custom(x.log()?, &[self], move |g| Ok(vec![Some(g.div(&x)?)])))
    }

    pub fn sqrt(&self) -> Result<Var> {
        let value = self.value().sqrt()?;
        let y = value.clone();
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.div(&y.mul_scalar(2.0)?)?)])))
    }

    pub fn sigmoid(&self) -> Result<Var> {
        let value = self.value().sigmoid()?;
        let y = value.clone();
        // σ' = σ·(1 − σ).
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.mul(&y)?.mul(&y.rsub_scalar(1.0)?)?)])))
    }

    pub fn tanh(&self) -> Result<Var> {
        let value = self.value().tanh()?;
        let y = value.clone();
        // tanh' = 1 − tanh².
        Ok(Var::custom(value, &[self], move |g| Ok(vec![Some(g.mul(&y.square()?.rsub_scalar(1.0)?)?)])))
    }

    /// x where positive, else `slope`·x.
    pub fn leaky_relu(&self, slope: f32) -> Result<Var> {
        let x = self.value();
        Ok(Var::custom(x.leaky_relu(slope)?, &[self], move |g| Ok(vec![Some(g.leaky_relu_backward(&x, slope)?)])))
    }

    /// x·Φ(x), PyTorch's exact GELU; with `tanh`, its tanh approximation.
    pub fn gelu(&self, tanh: bool) -> Result<Var> {
        let x = self.value();
        Ok(Var::custom(x.gelu(tanh)?, &[self], move |g| Ok(vec![Some(g.gelu_backward(&x, tanh)?)])))
    }
}
