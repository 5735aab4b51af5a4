use std::sync::Arc;

use kiln_autograd::Var;
use kiln_tensor::{Device, Pool2d, Tensor};

use crate::export::{GraphBuilder, export_child};
use crate::{LoadReport, NnError, Replicas, Result, StateDict};

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
    /// one op (a convolution can, and batch norm in training mode): [`Sequential`] calls it
    /// for a layer followed by [`crate::ReLU`] and [`crate::MaxPool2d`]. `None` (the
    /// default) when it cannot.
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

    /// The modules this one holds, by the names PyTorch gives them (a field's name, or "0",
    /// "1", … in a [`Sequential`]), as `named_children()`. Declare them once with
    /// [`crate::children!`]; every method below that walks a model (parameters, buffers,
    /// train/eval, moving to a device, random streams, printing) follows them.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// [`Module::children`], to change.
    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        Vec::new()
    }

    /// The trainable parameters this module holds itself, not through its children
    /// ("weight", "bias").
    fn local_parameters(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// The non-trainable state this module holds itself (batch norm's running statistics).
    fn local_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Replaces this module's own buffer `name` (as `local_buffers` names it).
    fn set_local_buffer(&mut self, name: &str, _value: Tensor) -> Result<()> {
        Err(NnError::Checkpoint(format!("no buffer named '{name}'")))
    }

    /// Positions of the random streams this module draws from itself (dropout's call count):
    /// not part of the state dict (PyTorch has no such entries), but what a resumed run needs
    /// to draw the same masks as an uninterrupted one.
    fn local_random_state(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Restores a position that `local_random_state` reported.
    fn set_local_random_state(&mut self, name: &str, _position: u64) -> Result<()> {
        Err(NnError::Checkpoint(format!("no random stream named '{name}'")))
    }

    /// Switches this module's own training behaviour (dropout, batch norm); its children are
    /// switched by [`Module::set_training`].
    fn set_local_training(&mut self, _training: bool) {}

    /// The settings printed between the parentheses, as PyTorch's `extra_repr()`:
    /// `in_features=784, out_features=512, bias=True`.
    fn extra_repr(&self) -> String {
        String::new()
    }

    /// The module as PyTorch prints it: the type's name, then `extra_repr` and the children
    /// (`  (name): child`, nested ones indented further) in parentheses.
    fn describe(&self) -> String {
        let path = std::any::type_name_of_val(self);
        let path = path.split('<').next().unwrap_or(path);
        let name = path.rsplit("::").next().unwrap_or(path);
        let extra = self.extra_repr();
        let children: Vec<String> = self
            .children()
            .into_iter()
            .map(|(child_name, child)| format!("({child_name}): {}", child.describe().replace('\n', "\n  ")))
            .collect();
        if children.is_empty() && !extra.contains('\n') {
            return format!("{name}({extra})");
        }
        let lines: Vec<&str> = extra.lines().chain(children.iter().map(String::as_str)).collect();
        format!("{name}(\n  {}\n)", lines.join("\n  "))
    }

    /// Every trainable parameter, its own and its children's, by its state-dict name
    /// ("weight", "0.bias", "layer1.0.conv1.weight"), as `named_parameters()`.
    fn parameters(&self) -> Vec<(String, Var)> {
        let mut all = self.local_parameters();
        for (name, child) in self.children() {
            all.extend(prefixed(&name, child.parameters()));
        }
        all
    }

    /// Every buffer, its own and its children's, by its state-dict name, as `named_buffers()`.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut all = self.local_buffers();
        for (name, child) in self.children() {
            all.extend(prefixed(&name, child.buffers()));
        }
        all
    }

    /// Replaces the buffer `name` (as `buffers` names it) when loading a checkpoint.
    fn set_buffer(&mut self, name: &str, value: Tensor) -> Result<()> {
        match child_for(self, name) {
            Some((child, rest)) => child.set_buffer(rest, value),
            None => self.set_local_buffer(name, value),
        }
    }

    /// The positions of every random stream, its own and its children's, by name.
    fn random_state(&self) -> Vec<(String, u64)> {
        let mut all = self.local_random_state();
        for (name, child) in self.children() {
            all.extend(prefixed(&name, child.random_state()));
        }
        all
    }

    /// Restores a position that `random_state` reported.
    fn set_random_state(&mut self, name: &str, position: u64) -> Result<()> {
        match child_for(self, name) {
            Some((child, rest)) => child.set_random_state(rest, position),
            None => self.set_local_random_state(name, position),
        }
    }

    /// Switches this module and every module below it between training and evaluation
    /// behaviour (dropout, batch norm).
    fn set_training(&mut self, training: bool) {
        self.set_local_training(training);
        for (_, child) in self.children_mut() {
            child.set_training(training);
        }
    }

    /// Tells this module's own batch-wide layers (batch norm's statistics, dropout's mask)
    /// that each batch is shared among the processes of a data-parallel run, or, with
    /// `None`, that this process holds it whole again. See [`crate::Replicas`].
    fn set_local_replicas(&mut self, _replicas: Option<Arc<dyn Replicas>>) {}

    /// [`Module::set_local_replicas`] for this module and every module below it:
    /// `kiln::distributed` calls it on the model a data-parallel run trains.
    fn set_replicas(&mut self, replicas: Option<Arc<dyn Replicas>>) {
        self.set_local_replicas(replicas.clone());
        for (_, child) in self.children_mut() {
            child.set_replicas(replicas.clone());
        }
    }

    /// Moves every parameter and buffer, this module's and its children's, to `device`.
    /// Parameters move in place, so an optimizer made before the move still updates them.
    fn to_device(&mut self, device: &Device) -> Result<()> {
        move_parameters(&self.local_parameters(), device)?;
        for (name, buffer) in self.local_buffers() {
            self.set_local_buffer(&name, buffer.to(device)?)?;
        }
        for (_, child) in self.children_mut() {
            child.to_device(device)?;
        }
        Ok(())
    }

    /// This module as standard operators (ONNX's) computing its evaluation-mode output from
    /// the graph value `x`: the name of its output. Layers and containers implement it; a
    /// module of your own writes its forward pass the same way (with
    /// [`crate::export::export_child`] for its children). By default, a clear refusal
    /// naming the module.
    fn export(&self, _graph: &mut dyn GraphBuilder, _x: &str) -> Result<String> {
        let printed = self.describe();
        let name = printed.lines().next().unwrap_or_default();
        Err(NnError::Invalid(format!("{name} cannot be exported: it does not implement Module::export")))
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
fn move_parameters(parameters: &[(String, Var)], device: &Device) -> Result<()> {
    for (_, p) in parameters {
        p.update(|t| {
            *t = t.to(device)?;
            Ok(())
        })?;
        p.zero_grad();
    }
    Ok(())
}

/// Names under a child's name: "weight" of child "conv1" is "conv1.weight".
fn prefixed<T>(prefix: &str, named: Vec<(String, T)>) -> impl Iterator<Item = (String, T)> {
    named.into_iter().map(move |(name, item)| (format!("{prefix}.{name}"), item))
}

/// The child a dotted name ("3.running_mean", "shortcut.1.running_var") belongs to, and the
/// rest of the name; `None` for a name of the module's own.
fn child_for<'a, 'm, M: Module + ?Sized>(module: &'m mut M, name: &'a str) -> Option<(&'m mut dyn Module, &'a str)> {
    let (first, rest) = name.split_once('.')?;
    module.children_mut().into_iter().find(|(child, _)| child == first).map(|(_, child)| (child, rest))
}

/// Declares a module's children, by field, for [`Module::children`] and
/// [`Module::children_mut`]: write `kiln_nn::children!(conv1, bn1, shortcut);` inside
/// `impl Module for …`. Each field's name is its state-dict prefix, as in PyTorch.
#[macro_export]
macro_rules! children {
    ($($field:ident),* $(,)?) => {
        fn children(&self) -> ::std::vec::Vec<(::std::string::String, &dyn $crate::Module)> {
            ::std::vec![$((::std::string::String::from(stringify!($field)), &self.$field as &dyn $crate::Module)),*]
        }

        fn children_mut(&mut self) -> ::std::vec::Vec<(::std::string::String, &mut dyn $crate::Module)> {
            ::std::vec![$((::std::string::String::from(stringify!($field)), &mut self.$field as &mut dyn $crate::Module)),*]
        }
    };
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
}

impl Module for Sequential {
    /// Each layer in turn; a layer followed by a ReLU that it can apply itself
    /// ([`Module::forward_relu`]) runs the two as one, and a convolution or batch norm
    /// followed by a ReLU and a max pooling runs the three as one
    /// ([`Module::forward_relu_max_pool`]).
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

    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().enumerate().map(|(i, layer)| (i.to_string(), layer.as_ref())).collect()
    }

    /// Each layer in turn (fused or not, the same operators).
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let mut x = x.to_string();
        for (i, layer) in self.layers.iter().enumerate() {
            x = export_child(graph, &i.to_string(), layer.as_ref(), &x)?;
        }
        Ok(x)
    }

    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        self.layers
            .iter_mut()
            .enumerate()
            .map(|(i, layer)| (i.to_string(), layer.as_mut() as &mut dyn Module))
            .collect()
    }
}
