//! `Var`: a tensor in a differentiable computation, and reverse-mode `backward`.
//!
//! Each result of a recorded op keeps its inputs and a closure that maps the gradient of
//! the result to the gradients of the inputs. `backward` orders the nodes reachable from the
//! loss into a tape (reverse topological order), runs the closures along it once, and takes
//! them out of the graph as it goes, so the graph's memory is freed by the time it returns.
//! Leaves that require gradients accumulate them in `grad()` until `zero_grad()`, as
//! PyTorch's `.grad`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use kiln_tensor::Tensor;

use crate::{AutogradError, Result, grad_mode};

/// Maps the gradient of an op's output to one optional gradient per input.
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> kiln_tensor::Result<Vec<Option<Tensor>>> + Send>;

/// How a recorded op's output gradient becomes its inputs' gradients.
enum Backward {
    /// A closure of the output's gradient (`Var::custom`).
    Closure(BackwardFn),
    /// Gradients computed with the value, times the output's gradient, a scalar
    /// (`Var::scaled`).
    Scaled(Vec<Option<Tensor>>),
}

enum Origin {
    /// Made by the user: a constant, or a parameter whose gradient accumulates.
    Leaf,
    /// The output of a recorded op, not yet differentiated.
    Op { inputs: Vec<Var>, backward: Backward },
    /// The output of a recorded op whose backward pass already ran.
    Consumed,
}

struct Node {
    id: u64,
    /// Written only through `Var::update`, by optimizers between steps.
    value: RwLock<Tensor>,
    /// Switched only on leaves (`set_requires_grad`): freezing a parameter.
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
    origin: Mutex<Origin>,
}

/// A tensor that takes part in differentiation. Cloning shares the node.
#[derive(Clone)]
pub struct Var(Arc<Node>);

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Var {
    fn leaf(value: Tensor, requires_grad: bool) -> Var {
        Var(Arc::new(Node {
            id: next_id(),
            value: RwLock::new(value),
            requires_grad: AtomicBool::new(requires_grad),
            grad: Mutex::new(None),
            origin: Mutex::new(Origin::Leaf),
        }))
    }

    /// A value gradients do not flow into (inputs, labels).
    pub fn constant(value: Tensor) -> Var {
        Var::leaf(value, false)
    }

    /// A leaf whose gradient `backward` computes and accumulates (a parameter).
    pub fn parameter(value: Tensor) -> Var {
        Var::leaf(value, true)
    }

    /// A differentiable op of your own, as a `torch.autograd.Function`: `value` is its
    /// result, computed from the inputs' values with tensor ops, and `backward` maps the
    /// gradient of `value` to one gradient per input, in order (`None` for an input that
    /// needs none). Recorded when gradients are enabled and some input requires them,
    /// otherwise a plain constant. `backward` must return one entry per input, each shaped
    /// as its input: anything else is an error when it runs. Every op on `Var` is made this
    /// way.
    ///
    /// ```
    /// use kiln_autograd::Var;
    /// use kiln_tensor::{Device, Tensor};
    /// # fn main() -> kiln_autograd::Result<()> {
    /// // softplus(x) = ln(1 + eˣ), whose derivative is the sigmoid.
    /// let x = Var::parameter(Tensor::from_vec(vec![0.0, 2.0], &[2], &Device::Cpu)?);
    /// let value = x.value().exp()?.add_scalar(1.0)?.log()?;
    /// let input = x.value();
    /// let y = Var::custom(value, &[&x], move |g| Ok(vec![Some(g.mul(&input.sigmoid()?)?)]));
    /// y.sum_all()?.backward()?;
    /// assert!((x.grad().unwrap().to_vec()?[0] - 0.5).abs() < 1e-6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn custom(
        value: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&Tensor) -> kiln_tensor::Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Var {
        Var::recorded(value, inputs, Backward::Closure(Box::new(backward)))
    }

    /// The result of an op whose input gradients were computed with its value and only
    /// scale with the gradient flowing back into it — a loss, whose fused kernel gives both
    /// (`Var::cross_entropy`): input i's gradient is `grads[i]` times that gradient, a
    /// scalar. Where the loss is what `backward` starts from, its gradient is one and
    /// `grads` pass on as they are: no tensor of ones made, no multiplication (on a GPU,
    /// two launches a training step fewer).
    pub fn scaled(value: Tensor, inputs: &[&Var], grads: Vec<Option<Tensor>>) -> Var {
        Var::recorded(value, inputs, Backward::Scaled(grads))
    }

    fn recorded(value: Tensor, inputs: &[&Var], backward: Backward) -> Var {
        if !grad_mode::is_grad_enabled() || !inputs.iter().any(|v| v.requires_grad()) {
            return Var::constant(value);
        }
        Var(Arc::new(Node {
            id: next_id(),
            value: RwLock::new(value),
            requires_grad: AtomicBool::new(true),
            grad: Mutex::new(None),
            origin: Mutex::new(Origin::Op { inputs: inputs.iter().map(|&v| v.clone()).collect(), backward }),
        }))
    }

    /// The tensor this variable holds (a cheap handle to shared data).
    pub fn value(&self) -> Tensor {
        self.0.value.read().expect("value lock").clone()
    }

    /// Changes a leaf's value in place, as an optimizer step does under `torch.no_grad()`.
    /// Graphs recorded earlier keep the value they used.
    pub fn update<T>(&self, change: impl FnOnce(&mut Tensor) -> kiln_tensor::Result<T>) -> Result<T> {
        if !self.is_leaf() {
            return Err(AutogradError::NotALeaf);
        }
        Ok(change(&mut self.0.value.write().expect("value lock"))?)
    }

    /// Changes several leaves' values in place at once, as a multi-tensor optimizer step
    /// does: `change` gets their tensors in the order given. A leaf listed twice is an error.
    pub fn update_all<T>(
        vars: &[&Var],
        change: impl FnOnce(&mut [&mut Tensor]) -> kiln_tensor::Result<T>,
    ) -> Result<T> {
        if vars.iter().any(|v| !v.is_leaf()) {
            return Err(AutogradError::NotALeaf);
        }
        let mut ids: Vec<u64> = vars.iter().map(|v| v.0.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(AutogradError::DuplicateUpdate);
        }
        let mut guards: Vec<_> = vars.iter().map(|v| v.0.value.write().expect("value lock")).collect();
        let mut tensors: Vec<&mut Tensor> = guards.iter_mut().map(|guard| &mut **guard).collect();
        Ok(change(&mut tensors)?)
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Switches whether `backward` computes this leaf's gradient, as PyTorch's
    /// `requires_grad_`: a frozen parameter (false) gets none, and an op whose inputs all
    /// need none is not recorded at all. Ops recorded earlier keep the setting they saw.
    /// Only leaves can be switched; the result of an op is an error, as in PyTorch.
    pub fn set_requires_grad(&self, requires_grad: bool) -> Result<()> {
        if !self.is_leaf() {
            return Err(AutogradError::RequiresGradOfOp);
        }
        self.0.requires_grad.store(requires_grad, Ordering::Relaxed);
        Ok(())
    }

    /// True for values made by the user rather than by a recorded op.
    pub fn is_leaf(&self) -> bool {
        matches!(*self.0.origin.lock().expect("graph lock"), Origin::Leaf)
    }

    /// The gradient accumulated in this leaf by `backward`, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().expect("grad lock").clone()
    }

    /// Replaces a leaf's accumulated gradient, as assigning `p.grad` does in PyTorch (what a
    /// data-parallel run writes back after averaging the processes' gradients).
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        if !self.is_leaf() {
            return Err(AutogradError::NotALeaf);
        }
        *self.0.grad.lock().expect("grad lock") = grad;
        Ok(())
    }

    /// Forgets the accumulated gradient, as `optimizer.zero_grad()` does.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().expect("grad lock") = None;
    }

    /// The same value, cut off from the graph: nothing flows back through it.
    pub fn detach(&self) -> Var {
        Var::constant(self.value())
    }

    /// Computes the gradient of this scalar with respect to every leaf that requires one and
    /// adds it to that leaf's `grad()`. The graph is consumed: a second `backward` through
    /// the same ops is an error, as in PyTorch.
    pub fn backward(&self) -> Result<()> {
        if self.value().len() != 1 {
            return Err(AutogradError::NotScalar(self.value().shape().to_vec()));
        }
        if !self.requires_grad() {
            return Err(AutogradError::NoGradient);
        }
        // The gradient of this value is one: `None`, made a tensor only where a leaf or a
        // closure needs one.
        let seed = || Tensor::ones(self.value().shape(), &self.value().device());
        let mut pending: HashMap<u64, Tensor> = HashMap::new();
        for node in self.tape()? {
            let grad = match pending.remove(&node.0.id) {
                Some(grad) => Some(grad),
                None if node.0.id == self.0.id => None,
                None => continue,
            };
            let mut origin = node.0.origin.lock().expect("graph lock");
            if matches!(*origin, Origin::Leaf) {
                drop(origin);
                let grad = match grad {
                    Some(grad) => grad,
                    None => seed()?,
                };
                let mut slot = node.0.grad.lock().expect("grad lock");
                *slot = Some(match slot.take() {
                    Some(sum) => sum.add(&grad)?,
                    None => grad,
                });
                continue;
            }
            // Taking the closure out frees this part of the graph as the pass goes.
            let taken = std::mem::replace(&mut *origin, Origin::Consumed);
            drop(origin);
            match taken {
                Origin::Op { inputs, backward } => {
                    let grads = match (backward, grad) {
                        (Backward::Closure(backward), Some(grad)) => backward(&grad)?,
                        (Backward::Closure(backward), None) => backward(&seed()?)?,
                        (Backward::Scaled(grads), None) => grads,
                        (Backward::Scaled(grads), Some(grad)) => {
                            grads.into_iter().map(|g| g.map(|g| g.mul(&grad)).transpose()).collect::<Result<_, _>>()?
                        }
                    };
                    // One slot per input, `None` where none is needed: a shorter list would
                    // otherwise be cut silently by the zip below.
                    if grads.len() != inputs.len() {
                        return Err(AutogradError::GradientCount { inputs: inputs.len(), got: grads.len() });
                    }
                    for (i, (input, grad)) in inputs.iter().zip(grads).enumerate() {
                        let Some(grad) = grad.filter(|_| input.requires_grad()) else { continue };
                        let want = input.value().shape().to_vec();
                        if grad.shape() != want {
                            return Err(AutogradError::GradientShape { input: i, got: grad.shape().to_vec(), want });
                        }
                        let sum = match pending.remove(&input.0.id) {
                            Some(sum) => sum.add(&grad)?,
                            None => grad,
                        };
                        pending.insert(input.0.id, sum);
                    }
                }
                Origin::Leaf | Origin::Consumed => return Err(AutogradError::GraphConsumed),
            }
        }
        Ok(())
    }

    /// How many recorded ops the graph behind this value holds: what `backward` would run.
    /// Ops whose inputs need no gradient (a frozen layer on the data) are not among them.
    pub fn recorded_ops(&self) -> Result<usize> {
        Ok(self.tape()?.iter().filter(|node| !node.is_leaf()).count())
    }

    /// The nodes that need gradients, reachable from this one, each after every node that
    /// uses it (reverse topological order), found without recursion.
    fn tape(&self) -> Result<Vec<Var>> {
        let mut order = Vec::new();
        let mut visited = std::collections::HashSet::new();
        let mut stack = vec![(self.clone(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                order.push(node);
                continue;
            }
            if !visited.insert(node.0.id) {
                continue;
            }
            stack.push((node.clone(), true));
            match &*node.0.origin.lock().expect("graph lock") {
                Origin::Op { inputs, .. } => {
                    stack.extend(inputs.iter().filter(|v| v.requires_grad()).map(|v| (v.clone(), false)));
                }
                Origin::Consumed => return Err(AutogradError::GraphConsumed),
                Origin::Leaf => {}
            }
        }
        order.reverse();
        Ok(order)
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}, requires_grad: {})", self.value(), self.requires_grad())
    }
}

#[cfg(test)]
mod tests {
    use kiln_tensor::{Device, Tensor};

    use super::*;

    #[test]
    fn a_backward_with_the_wrong_number_of_gradients_is_an_error() {
        let (a, b) = (
            Var::parameter(Tensor::ones(&[1], &Device::Cpu).unwrap()),
            Var::parameter(Tensor::ones(&[1], &Device::Cpu).unwrap()),
        );
        let sum = a.value().add(&b.value()).unwrap();
        let short = Var::custom(sum, &[&a, &b], |g| Ok(vec![Some(g.clone())]));
        let err = short.backward().unwrap_err();
        assert!(matches!(err, AutogradError::GradientCount { inputs: 2, got: 1 }), "{err}");
        assert!(a.grad().is_none() && b.grad().is_none(), "nothing accumulated");
    }

    #[test]
    fn a_backward_with_a_misshapen_gradient_is_an_error() {
        let a = Var::parameter(Tensor::ones(&[2, 3], &Device::Cpu).unwrap());
        let doubled = Var::custom(a.value().mul_scalar(2.0).unwrap(), &[&a], |g| Ok(vec![Some(g.reshape(&[6])?)]));
        let err = doubled.sum_all().unwrap().backward().unwrap_err();
        assert!(err.to_string().contains("input 0 has shape [2, 3] but its gradient [6]"), "{err}");
        assert!(a.grad().is_none(), "nothing accumulated");
    }
}
