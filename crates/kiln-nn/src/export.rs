//! A model written as a graph of standard operators (ONNX's), module by module: each says,
//! through a [`GraphBuilder`], which operators compute it from its input in evaluation
//! mode. The builder is the exporter's (`kiln::onnx`), so this crate knows nothing of the
//! file format.

use kiln_tensor::Tensor;

use crate::{Module, NnError, Result};

/// An operator's attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attribute {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// What an exporter offers the modules it walks.
pub trait GraphBuilder {
    /// Adds a node computing operator `op` (ONNX's name) from the named values `inputs`,
    /// and returns the name of its output.
    fn node(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attribute)]) -> String;

    /// Adds a constant (a parameter, a buffer, a scalar of a formula) called `name` within
    /// the current module's scope, and returns its name in the graph ("0.weight",
    /// "shortcut.1.running_mean", as the state dict names it).
    fn constant(&mut self, name: &str, value: &Tensor) -> Result<String>;

    /// Enters a child module's scope (its name in the parent), for the constants it adds.
    fn enter(&mut self, scope: &str);

    /// Leaves the scope [`GraphBuilder::enter`] entered.
    fn leave(&mut self);
}

/// Exports `child` (called `name` in its parent) from input `x`, in the child's scope: what
/// a module of your own calls for each child its forward pass uses.
pub fn export_child(graph: &mut dyn GraphBuilder, name: &str, child: &dyn Module, x: &str) -> Result<String> {
    graph.enter(name);
    let out = child.export(graph, x);
    graph.leave();
    out
}

/// The error for a module that cannot be exported, naming it as it prints.
pub fn cannot_export(module: &dyn Module, why: &str) -> NnError {
    let printed = module.describe();
    let first_line = printed.lines().next().unwrap_or_default();
    NnError::Invalid(format!("{first_line} cannot be exported: {why}"))
}

/// `[a, b]` as ONNX's attributes take pairs.
pub(crate) fn pair([a, b]: [usize; 2]) -> Attribute {
    Attribute::Ints(vec![a as i64, b as i64])
}

/// Padding `[h, w]` as ONNX's `pads`: the start of each axis, then the end.
pub(crate) fn pads([h, w]: [usize; 2]) -> Attribute {
    Attribute::Ints(vec![h as i64, w as i64, h as i64, w as i64])
}
