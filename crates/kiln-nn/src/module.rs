use kiln_autograd::Var;
use kiln_tensor::{Device, Pool2d, Tensor};

use crate::{LoadReport, NnError, Result, StateDict};

/// A layer or a model, as `torch.nn.Module`.
pub trait Module: Send {
    /// The forward pass. `&mut self` because some layers change state as they run (batch
    /// norm's running statistics, dropout's mask stream).
    fn forward(&mut self, input: &Var) -> Result<Var>;

    /// The forward pass followed by a ReLU, when the layer can apply the ReLU in its own
    /// kernels (linear, convolution and batch norm layers do): [`Sequential`] calls it for a
    /// layer followed by [`crate::ReLU`], which saves a pass over the activations forward and
    /// one backward. `None` (the default) when it cannot; the ReLU then runs on its own.
    fn forward_relu(&mut self, _input: &Var) -> Option<Result<Var>> {
        None
    }

    /// The forward pass followed by a ReLU and `pool`, when the layer can run the three as
    /// one op (a convolution can): [`Sequential`] calls it for a layer followed by
    /// [`crate::ReLU`] and [`crate::MaxPool2d`]. `None` (the default) when it cannot.
    fn forward_relu_max_pool(&mut self, _input: &Var, _pool: &Pool2d) -> Option<Result<Var>> {
        None
    }

    /// True for [`crate::ReLU`], which [`Sequential`] fuses into the layer before it.
    fn is_relu(&self) -> bool {
        false
    }

    /// The pooling of a [`crate::MaxPool2d`], which [`Sequential`] fuses into a
    /// convolution and ReLU before it; `None` for every other layer.
    fn max_pool(&self) -> Option<Pool2d> {
        None
    }

    /// One line naming the layer and its settings, as PyTorch prints a module:
    /// `Linear(in_features=784, out_features=512, bias=True)`. Containers print their
    /// children below it. By default the type's name.
    fn describe(&self) -> String {
        let path = std::any::type_name_of_val(self);
        let name = path.split('<').next().unwrap_or(path);
        format!("{}()", name.rsplit("::").next().unwrap_or(name))
    }

    /// Trainable parameters with their state-dict names ("weight", "0.bias", …).
    fn parameters(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// Non-trainable state with its state-dict names (batch norm's running statistics).
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Replaces the buffer `name` (as `buffers` names it) when loading a checkpoint.
    fn set_buffer(&mut self, name: &str, _value: Tensor) -> Result<()> {
        Err(NnError::Checkpoint(format!("no buffer named '{name}'")))
    }

    /// Positions of the random streams the module draws from as it runs (dropout's call
    /// count), by name: not part of the state dict (PyTorch has no such entries), but what a
    /// resumed run needs to draw the same masks as an uninterrupted one.
    fn random_state(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Restores a position that `random_state` reported.
    fn set_random_state(&mut self, name: &str, _position: u64) -> Result<()> {
        Err(NnError::Checkpoint(format!("no random stream named '{name}'")))
    }

    /// Switches between training and evaluation behaviour (dropout, batch norm).
    fn set_training(&mut self, _training: bool) {}

    /// Moves every parameter and buffer to `device`.
    fn to_device(&mut self, device: &Device) -> Result<()> {
        move_parameters(&self.parameters(), device)
    }

    /// Parameters and buffers by their PyTorch names, on the CPU, as `model.state_dict()`.
    fn state_dict(&self) -> Result<StateDict>
    where
        Self: Sized,
    {
        crate::checkpoint::state_dict(self)
    }

    /// Loads a state dict, refusing one that does not fit (see [`crate::load_into`]).
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>
    where
        Self: Sized,
    {
        crate::checkpoint::load_into(self, state)
    }

    /// Loads the entries that fit by name and returns the keys that did not match, as
    /// PyTorch's `load_state_dict(strict=False)` (see [`crate::load_into_non_strict`]):
    /// starting a fine-tuned model from a checkpoint of another head, say.
    fn load_state_dict_non_strict(&mut self, state: &StateDict) -> Result<LoadReport>
    where
        Self: Sized,
    {
        crate::checkpoint::load_into_non_strict(self, state)
    }

    /// Switches `requires_grad` on every parameter, as PyTorch's `module.requires_grad_()`.
    fn requires_grad_(&mut self, requires_grad: bool) -> Result<()> {
        for (_, parameter) in self.parameters() {
            parameter.set_requires_grad(requires_grad)?;
        }
        Ok(())
    }

    /// Freezes every parameter for fine-tuning: `backward` computes none of their gradients
    /// (layers whose inputs need none are not recorded at all), so an optimizer that holds
    /// them leaves them as they are.
    fn freeze(&mut self) -> Result<()> {
        self.requires_grad_(false)
    }

    /// Undoes [`Module::freeze`].
    fn unfreeze(&mut self) -> Result<()> {
        self.requires_grad_(true)
    }

    /// Training mode, as `model.train()`.
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Evaluation mode, as `model.eval()`.
    fn eval(&mut self) {
        self.set_training(false);
    }
}

/// Moves parameters' values to `device` in place, keeping the parameters themselves (so an
/// optimizer made before the move still updates them).
pub(crate) fn move_parameters(parameters: &[(String, Var)], device: &Device) -> Result<()> {
    for (_, p) in parameters {
        p.update(|t| {
            *t = t.to(device)?;
            Ok(())
        })?;
        p.zero_grad();
    }
    Ok(())
}

/// Modules applied one after another, named "0", "1", … as `torch.nn.Sequential`.
/// Printing one (`{}` or `{:?}`) shows its layers as `print(model)` does in PyTorch.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl std::fmt::Display for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer at `index` (`model[index]` in PyTorch), or `None` past the end.
    pub fn get(&self, index: usize) -> Option<&dyn Module> {
        self.layers.get(index).map(|layer| layer.as_ref())
    }

    /// The layer at `index`, to change (switch its mode, load into it), or `None` past the end.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut dyn Module> {
        Some(self.layers.get_mut(index)?.as_mut())
    }

    /// The layers in order, as iterating over a PyTorch `Sequential`.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Module> {
        self.layers.iter().map(|layer| layer.as_ref())
    }

    /// The layer a prefixed name ("3.running_mean") belongs to, and the rest of the name.
    fn layer_for<'a>(&mut self, name: &'a str) -> Option<(&mut Box<dyn Module>, &'a str)> {
        let (index, rest) = name.split_once('.')?;
        Some((self.layers.get_mut(index.parse::<usize>().ok()?)?, rest))
    }
}

fn prefixed<T>(index: usize, named: Vec<(String, T)>) -> impl Iterator<Item = (String, T)> {
    named.into_iter().map(move |(name, item)| (format!("{index}.{name}"), item))
}

impl Module for Sequential {
    /// Each layer in turn; a layer followed by a ReLU that it can apply itself
    /// ([`Module::forward_relu`]) runs the two as one, and a convolution followed by a ReLU
    /// and a max pooling runs the three as one ([`Module::forward_relu_max_pool`]).
    fn forward(&mut self, input: &Var) -> Result<Var> {
        let mut x = input.clone();
        let mut i = 0;
        while i < self.layers.len() {
            let relu_next = self.layers.get(i + 1).is_some_and(|next| next.is_relu());
            let pool_after = self.layers.get(i + 2).filter(|_| relu_next).and_then(|layer| layer.max_pool());
            if let Some(pool) = pool_after
                && let Some(fused) = self.layers[i].forward_relu_max_pool(&x, &pool)
            {
                x = fused?;
                i += 3;
                continue;
            }
            if relu_next && let Some(fused) = self.layers[i].forward_relu(&x) {
                x = fused?;
                i += 2;
                continue;
            }
            x = self.layers[i].forward(&x)?;
            i += 1;
        }
        Ok(x)
    }

    /// PyTorch's layout: `Sequential(`, then `  (i): layer` per layer (nested containers
    /// indented further), then `)`.
    fn describe(&self) -> String {
        let mut text = String::from("Sequential(\n");
        for (i, layer) in self.layers.iter().enumerate() {
            let described = layer.describe().replace('\n', "\n  ");
            text.push_str(&format!("  ({i}): {described}\n"));
        }
        text.push(')');
        text
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.layers.iter().enumerate().flat_map(|(i, layer)| prefixed(i, layer.parameters())).collect()
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.layers.iter().enumerate().flat_map(|(i, layer)| prefixed(i, layer.buffers())).collect()
    }

    fn set_buffer(&mut self, name: &str, value: Tensor) -> Result<()> {
        match self.layer_for(name) {
            Some((layer, rest)) => layer.set_buffer(rest, value),
            None => Err(NnError::Checkpoint(format!("no buffer named '{name}'"))),
        }
    }

    fn random_state(&self) -> Vec<(String, u64)> {
        self.layers.iter().enumerate().flat_map(|(i, layer)| prefixed(i, layer.random_state())).collect()
    }

    fn set_random_state(&mut self, name: &str, position: u64) -> Result<()> {
        match self.layer_for(name) {
            Some((layer, rest)) => layer.set_random_state(rest, position),
            None => Err(NnError::Checkpoint(format!("no random stream named '{name}'"))),
        }
    }

    fn set_training(&mut self, training: bool) {
        for layer in &mut self.layers {
            layer.set_training(training);
        }
    }

    fn to_device(&mut self, device: &Device) -> Result<()> {
        self.layers.iter_mut().try_for_each(|layer| layer.to_device(device))
    }
}
