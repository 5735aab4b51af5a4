//! Reverse-mode automatic differentiation over kiln-tensor's ops.
//!
//! Wrap parameters in [`Var::parameter`] and inputs in [`Var::constant`], compute with the
//! ops on `Var` (which call the tensor ops, on whichever device the tensors live, and record
//! how to differentiate them), then call [`Var::backward`] on a scalar loss: every parameter's
//! [`Var::grad`] then holds its gradient. Only ops with an input that requires a gradient are
//! recorded, and nothing is recorded inside [`no_grad`].
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_tensor::{Device, Tensor};
//! # fn main() -> kiln_autograd::Result<()> {
//! let w = Var::parameter(Tensor::from_vec(vec![2.0, -1.0], &[2], &Device::Cpu)?);
//! let x = Var::constant(Tensor::from_vec(vec![3.0, 4.0], &[2], &Device::Cpu)?);
//! let loss = w.mul(&x)?.sum_all()?; // 2·3 − 1·4
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().to_vec()?, vec![3.0, 4.0]);
//! # Ok(())
//! # }
//! ```

mod grad_mode;
mod ops;
mod var;

pub use grad_mode::{NoGradGuard, is_grad_enabled, no_grad};
pub use var::Var;

/// What differentiation can refuse.
#[derive(Debug, thiserror::Error)]
pub enum AutogradError {
    #[error("backward needs a scalar (one-element) loss, got shape {0:?}")]
    NotScalar(Vec<usize>),

    #[error(
        "backward from a value that does not require a gradient: no parameter was used, or it was computed under no_grad"
    )]
    NoGradient,

    #[error("this graph was already differentiated; compute the loss again before another backward")]
    GraphConsumed,

    #[error("only leaves (parameters and constants) can be updated in place")]
    NotALeaf,

    #[error("only leaves (parameters and constants) can switch requires_grad; detach() an op's result first")]
    RequiresGradOfOp,

    #[error("the same leaf was given twice to one in-place update")]
    DuplicateUpdate,

    #[error("an op's backward returned {got} gradients for its {inputs} inputs")]
    GradientCount { inputs: usize, got: usize },

    #[error(
        "an op's backward returned a misshapen gradient: input {input} has shape {want:?} but its gradient {got:?}"
    )]
    GradientShape { input: usize, got: Vec<usize>, want: Vec<usize> },

    #[error(transparent)]
    Tensor(#[from] kiln_tensor::TensorError),
}

pub type Result<T, E = AutogradError> = std::result::Result<T, E>;
