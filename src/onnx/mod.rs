//! ONNX export: a model built from Kiln's layers as an ONNX file (opset 17) that ONNX Runtime
//! and other runtimes read, with evaluation-mode semantics (batch norm with its running
//! statistics, dropout as the identity) and a dynamic batch dimension. Each module writes
//! itself as operators ([`kiln_nn::Module::export`]); parameters and buffers become the
//! graph's initializers under their state-dict names.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln::onnx::ExportError> {
//! let mut model = kiln::nn::models::asl_cnn(&mut kiln::nn::Seeds::new(0), 1.0)?;
//! kiln::onnx::export(&mut model, &[1, 28, 28], "asl_cnn.onnx".as_ref())?;
//! # Ok(())
//! # }
//! ```

#[allow(clippy::all, clippy::pedantic, dead_code)]
mod proto;

use std::path::{Path, PathBuf};

use kiln_autograd::{Var, no_grad};
use kiln_nn::export::{Attribute, GraphBuilder};
use kiln_nn::{Module, NnError};
use kiln_tensor::{DType, Device, Tensor};
use prost::Message;
use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto, tensor_proto, tensor_shape_proto, type_proto,
};

/// The operator set the files declare.
pub const OPSET: i64 = 17;
/// ONNX's IR version of opset 17.
const IR_VERSION: i64 = 8;

/// What exporting can refuse.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A module that cannot be written as operators (it names itself), or a model that
    /// cannot run on the input shape given.
    #[error(transparent)]
    Model(#[from] NnError),

    #[error(transparent)]
    Run(#[from] kiln_autograd::AutogradError),

    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl From<kiln_tensor::TensorError> for ExportError {
    fn from(e: kiln_tensor::TensorError) -> Self {
        ExportError::Model(e.into())
    }
}

/// Writes `model` to `path` as an ONNX model whose input "input" is `[batch, sample...]`
/// (`sample_shape`: `[1, 28, 28]` for the ASL models; the batch dimension is dynamic) and
/// whose output is "output". The model is switched to evaluation mode (and left there); a
/// module that cannot be exported is an error naming it, and the file is written whole or
/// not at all.
pub fn export(model: &mut dyn Module, sample_shape: &[usize], path: &Path) -> Result<(), ExportError> {
    model.eval();
    // The output's shape, from one sample: checks the input shape fits the model, too.
    let device = model.parameters().first().map_or(Device::Cpu, |(_, p)| p.value().device());
    let one = Tensor::zeros(&[&[1], sample_shape].concat(), &device)?;
    let output = no_grad(|| model.forward(&Var::constant(one)))?.value();

    let mut builder = Builder::default();
    let result = model.export(&mut builder, INPUT)?;
    // The result, renamed "output" (an Identity when the model is the identity).
    match builder.nodes.iter_mut().find(|node| node.output.first() == Some(&result)) {
        Some(last) => last.output = vec![OUTPUT.into()],
        None => {
            builder.node("Identity", &[&result], &[]);
            builder.nodes.last_mut().expect("just added").output = vec![OUTPUT.into()];
        }
    }
    let graph = GraphProto {
        name: Some("kiln".into()),
        node: builder.nodes,
        initializer: builder.initializers,
        input: vec![value_info(INPUT, sample_shape)],
        output: vec![value_info(OUTPUT, &output.shape()[1..])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("kiln".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        graph: Some(graph),
        ..Default::default()
    };
    kiln_nn::write_atomically(path, &model.encode_to_vec())
        .map_err(|source| ExportError::Write { path: path.to_path_buf(), source })
}

const INPUT: &str = "input";
const OUTPUT: &str = "output";

/// A float tensor value of shape `[batch, rest...]`, the batch dimension named.
fn value_info(name: &str, rest: &[usize]) -> ValueInfoProto {
    let batch = tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("batch".into())),
        ..Default::default()
    };
    let fixed = rest.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    });
    let tensor = type_proto::Tensor {
        elem_type: Some(tensor_proto::DataType::Float as i32),
        shape: Some(TensorShapeProto { dim: std::iter::once(batch).chain(fixed).collect() }),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

/// The graph as the modules describe it.
#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// The module names down to the current one ("3", "conv1").
    scope: Vec<String>,
}

impl Builder {
    /// `name` within the current scope, dotted as state dicts are.
    fn scoped(&self, name: &str) -> String {
        self.scope.iter().map(String::as_str).chain([name]).collect::<Vec<_>>().join(".")
    }
}

impl GraphBuilder for Builder {
    fn node(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attribute)]) -> String {
        // Unique by its place in the graph, readable by its module and operator.
        let output = format!("{}_{}", self.scoped(op), self.nodes.len());
        let attribute = attributes.iter().map(|(name, value)| attribute(name, value)).collect();
        self.nodes.push(NodeProto {
            name: Some(output.clone()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|&i| i.into()).collect(),
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    fn constant(&mut self, name: &str, value: &Tensor) -> kiln_nn::Result<String> {
        if value.dtype() != DType::F32 {
            return Err(NnError::Invalid(format!("{}: only f32 constants are exported", self.scoped(name))));
        }
        let raw: Vec<u8> = value.to_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect();
        let full = self.scoped(name);
        self.initializers.push(TensorProto {
            name: Some(full.clone()),
            dims: value.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(tensor_proto::DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        Ok(full)
    }

    fn enter(&mut self, scope: &str) {
        self.scope.push(scope.into());
    }

    fn leave(&mut self) {
        self.scope.pop();
    }
}

fn attribute(name: &str, value: &Attribute) -> AttributeProto {
    use attribute_proto::AttributeType;
    let mut proto = AttributeProto { name: Some(name.into()), ..Default::default() };
    match value {
        Attribute::Int(i) => (proto.i, proto.r#type) = (Some(*i), Some(AttributeType::Int as i32)),
        Attribute::Ints(v) => (proto.ints, proto.r#type) = (v.clone(), Some(AttributeType::Ints as i32)),
        Attribute::Float(f) => (proto.f, proto.r#type) = (Some(*f), Some(AttributeType::Float as i32)),
    }
    proto
}
