//! A small writer of ONNX graphs.
//!
//! The trainer exports its serving graph with it, and tests build graphs of
//! their own to exercise ONNX Runtime. Tensors are float32 or int64, graph
//! inputs and outputs may have a symbolic (dynamic) batch dimension, and the
//! result is checked by loading it in ONNX Runtime, not by this module.

use std::path::Path;

use prost::Message;

/// The ONNX protobuf messages we write (a subset of `onnx.proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};

/// ONNX IR version written (IR 8: ONNX 1.10+, read by every current runtime).
pub const IR_VERSION: i64 = 8;
/// Default-domain operator set written.
pub const OPSET: i64 = 17;

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named, dynamic size (e.g. `"batch"`).
    Dynamic(&'static str),
}

/// Element types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I64,
}

impl ElemType {
    fn onnx(self) -> i32 {
        match self {
            ElemType::F32 => DataType::Float as i32,
            ElemType::I64 => DataType::Int64 as i32,
        }
    }
}

/// A node attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    String(String),
}

/// Builds one graph, node by node.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    metadata: Vec<(String, String)>,
    counter: usize,
    /// Operator domains used besides the default one, with their versions.
    domains: Vec<(String, i64)>,
}

/// ONNX Runtime's contributed operators (e.g. `MatMulIntegerToFloat`).
pub const MICROSOFT_DOMAIN: &str = "com.microsoft";

fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n),
                Dim::Dynamic(p) => dimension::Value::DimParam((*p).to_owned()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem.onnx(),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

impl GraphBuilder {
    /// A new, empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.to_owned(), ..Default::default() }, ..Default::default() }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info(name, elem, dims));
        self
    }

    /// Declares a graph output (produced by some node).
    pub fn output(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> &mut Self {
        self.graph.output.push(value_info(name, elem, dims));
        self
    }

    /// Adds a float32 constant (weights) and returns its name.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, values.len(), "{name}: dims and data disagree");
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            name: name.to_owned(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds a uint8 constant (quantised activations' zero points) and
    /// returns its name.
    pub fn init_u8(&mut self, name: &str, dims: &[i64], values: &[u8]) -> String {
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Uint8 as i32,
            name: name.to_owned(),
            raw_data: values.to_vec(),
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds an int8 constant (quantised weights) and returns its name.
    pub fn init_i8(&mut self, name: &str, dims: &[i64], values: &[i8]) -> String {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, values.len(), "{name}: dims and data disagree");
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Int8 as i32,
            name: name.to_owned(),
            raw_data: values.iter().map(|v| v.to_le_bytes()[0]).collect(),
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds an int64 constant and returns its name.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            name: name.to_owned(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds a node `op(inputs) -> one output` and returns the output's name
    /// (a fresh name derived from `hint`).
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], hint: &str) -> String {
        self.counter += 1;
        let out = format!("{hint}_{}", self.counter);
        self.op_named(op, inputs, attrs, &[&out]);
        out
    }

    /// Adds a node of operator domain `domain` (version 1, e.g.
    /// [`MICROSOFT_DOMAIN`]) and returns its output's name.
    pub fn op_in(&mut self, domain: &str, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], hint: &str) -> String {
        if !self.domains.iter().any(|(d, _)| d == domain) {
            self.domains.push((domain.to_owned(), 1));
        }
        let out = self.op(op, inputs, attrs, hint);
        if let Some(node) = self.graph.node.last_mut() {
            node.domain = domain.to_owned();
        }
        out
    }

    /// Adds a node with explicitly named outputs.
    pub fn op_named(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], outputs: &[&str]) -> &mut Self {
        let attribute = attrs
            .iter()
            .map(|(name, value)| {
                let mut a = AttributeProto { name: (*name).to_owned(), ..Default::default() };
                match value {
                    Attr::Int(i) => (a.r#type, a.i) = (AttributeType::Int as i32, *i),
                    Attr::Float(f) => (a.r#type, a.f) = (AttributeType::Float as i32, *f),
                    Attr::Ints(v) => (a.r#type, a.ints) = (AttributeType::Ints as i32, v.clone()),
                    Attr::Floats(v) => (a.r#type, a.floats) = (AttributeType::Floats as i32, v.clone()),
                    Attr::String(s) => (a.r#type, a.s) = (AttributeType::String as i32, s.clone().into_bytes()),
                }
                a
            })
            .collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            name: format!("{op}_{}", self.graph.node.len()),
            op_type: op.to_owned(),
            attribute,
            ..Default::default()
        });
        self
    }

    /// Adds a `key = value` entry to the model's metadata.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The finished model.
    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "watchnext".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            opset_import: std::iter::once(OperatorSetIdProto { domain: String::new(), version: OPSET })
                .chain(self.domains.into_iter().map(|(domain, version)| OperatorSetIdProto { domain, version }))
                .collect(),
            metadata_props: self
                .metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }

    /// The finished model, encoded.
    pub fn to_bytes(self) -> Vec<u8> {
        self.build().encode_to_vec()
    }
}

/// Writes encoded model bytes to `path` crash-safely: a temporary file in the
/// same folder is written and fsynced, then renamed over `path`, and the
/// folder is fsynced, so readers see the old file or the new one, never half.
pub fn write_model(path: &Path, bytes: &[u8]) -> Result<(), crate::OnnxError> {
    watchnext_core::fsutil::write_atomic(path, bytes)
        .map_err(|source| crate::OnnxError::Write { path: path.display().to_string(), source })
}
