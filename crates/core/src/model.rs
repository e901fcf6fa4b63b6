//! The model contract: what a model directory holds, so that the trainer (or
//! anyone else — PyTorch, JAX…) can produce a ranking model the ranker
//! serves.
//!
//! A model directory holds:
//! - `model.onnx` — the serving graph. Inputs: `dense` float32
//!   `[batch, DENSE_LEN]` and `sparse` int64 `[batch, SPARSE_LEN]`, laid out
//!   by [`crate::features`] (batch dimension dynamic). Outputs:
//!   `predictions` float32 `[batch, tasks]` (binary tasks as probabilities,
//!   regression tasks in the task's transformed label space) and, for
//!   mixture-of-experts models, `gates` float32 `[batch, tasks, experts]`
//!   (each task's softmax gate weights, rows summing to 1). No position
//!   input: selection bias is a training-time concern only.
//! - `manifest.json` — a [`ModelManifest`].
//!
//! The ranker refuses a directory whose manifest's schema hash differs from
//! its own [`crate::features::FeatureSchema::hash`], naming both.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::features::{DENSE_INPUT, DENSE_LEN, FeatureSchema, SPARSE_INPUT, SPARSE_LEN, SchemaDescription};

/// Version of the manifest format itself.
pub const MANIFEST_FORMAT: u32 = 1;
/// File names inside a model directory.
pub const MODEL_FILE: &str = "model.onnx";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Output tensor names.
pub const PREDICTIONS_OUTPUT: &str = "predictions";
pub const GATES_OUTPUT: &str = "gates";

/// How a task's label is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Cross-entropy; the prediction is a probability.
    Binary,
    /// Squared loss; the prediction is in the transformed label space.
    Regression,
}

/// One task of a model, in output column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    /// How the label was transformed before the loss (`"identity"`,
    /// `"log1p"`); predictions are in that space.
    #[serde(default = "identity")]
    pub transform: String,
    /// Default exponent of this task in the combiner's weighted product.
    pub combiner_weight: f32,
    /// Whether the shallow tower debiased this task in training.
    #[serde(default)]
    pub debiased: bool,
}

fn identity() -> String {
    "identity".into()
}

/// A tensor of the serving graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// `"float32"` or `"int64"`.
    pub dtype: String,
    /// `-1` marks the dynamic batch dimension.
    pub shape: Vec<i64>,
}

/// What the model learned from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Where the rows came from (a data folder, a Parquet file…).
    pub source: String,
    pub train_rows: u64,
    pub validation_rows: u64,
    pub test_rows: u64,
    /// Impression time range of the training rows (Unix epoch ms).
    pub first_ms: i64,
    pub last_ms: i64,
    /// Free-form details (model kind, epochs, seed…).
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// `manifest.json` of a model directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub format: u32,
    pub model_version: String,
    pub created_ms: i64,
    pub schema: SchemaDescription,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub tasks: Vec<TaskSpec>,
    /// Experts per gate (0 for models without gates).
    pub experts: u32,
    pub training: TrainingSummary,
    /// Offline metrics by name (e.g. `click.auc`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The graph's arithmetic: `fp32`, or `int8` (big matrix products in
    /// 8-bit integers; then `metrics` also holds the fp32 graph's figures
    /// as `fp32.<name>` and `calibration.rows`).
    #[serde(default = "fp32")]
    pub precision: String,
}

fn fp32() -> String {
    "fp32".to_owned()
}

/// Why a model directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid model manifest: {problem}")]
    Malformed { path: PathBuf, problem: String },
    #[error(
        "model `{model}` was trained for feature schema {theirs} but this build uses schema {ours}; retrain the \
         model with this version's `watchnext train` (or export it with the schema in the manifest)"
    )]
    SchemaMismatch { model: String, theirs: String, ours: String },
    #[error("model `{model}`: {problem}")]
    Contract { model: String, problem: String },
}

impl ModelManifest {
    /// The input tensors every model of this schema takes.
    pub fn standard_inputs() -> Vec<TensorSpec> {
        vec![
            TensorSpec { name: DENSE_INPUT.into(), dtype: "float32".into(), shape: vec![-1, DENSE_LEN as i64] },
            TensorSpec { name: SPARSE_INPUT.into(), dtype: "int64".into(), shape: vec![-1, SPARSE_LEN as i64] },
        ]
    }

    /// The output tensors of a model with `tasks` tasks and `experts` experts per gate.
    pub fn standard_outputs(tasks: usize, experts: u32) -> Vec<TensorSpec> {
        let mut out = vec![TensorSpec {
            name: PREDICTIONS_OUTPUT.into(),
            dtype: "float32".into(),
            shape: vec![-1, tasks as i64],
        }];
        if experts > 0 {
            out.push(TensorSpec {
                name: GATES_OUTPUT.into(),
                dtype: "float32".into(),
                shape: vec![-1, tasks as i64, i64::from(experts)],
            });
        }
        out
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        serde_json::from_str(&text).map_err(|e| ManifestError::Malformed { path, problem: e.to_string() })
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ManifestError::Malformed { path: path.clone(), problem: e.to_string() })?;
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|source| ManifestError::Io { path, source })
    }

    /// Checks the manifest against this build's schema and the contract's
    /// tensor layout; the error says what differs and what to do.
    pub fn check(&self, schema: &FeatureSchema) -> Result<(), ManifestError> {
        let contract = |problem: String| ManifestError::Contract { model: self.model_version.clone(), problem };
        if self.format != MANIFEST_FORMAT {
            return Err(contract(format!(
                "manifest format {} is not supported (this build reads format {MANIFEST_FORMAT})",
                self.format
            )));
        }
        if self.schema.hash != schema.hash() {
            return Err(ManifestError::SchemaMismatch {
                model: self.model_version.clone(),
                theirs: self.schema.hash.clone(),
                ours: schema.hash().to_owned(),
            });
        }
        if self.inputs != Self::standard_inputs() {
            return Err(contract(format!(
                "inputs must be exactly `{DENSE_INPUT}` float32 [-1, {DENSE_LEN}] and `{SPARSE_INPUT}` int64 [-1, \
                 {SPARSE_LEN}] (position is never a serving input); the manifest lists {:?}",
                self.inputs.iter().map(|t| (&t.name, &t.dtype, &t.shape)).collect::<Vec<_>>()
            )));
        }
        if self.tasks.is_empty() {
            return Err(contract("the manifest lists no tasks".into()));
        }
        let mut names: Vec<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(contract("task names must be distinct".into()));
        }
        if let Some(t) = self.tasks.iter().find(|t| !t.combiner_weight.is_finite()) {
            return Err(contract(format!("task `{}` has a non-finite combiner weight", t.name)));
        }
        if self.outputs != Self::standard_outputs(self.tasks.len(), self.experts) {
            return Err(contract(format!(
                "outputs must be `{PREDICTIONS_OUTPUT}` float32 [-1, {}]{}; the manifest lists {:?}",
                self.tasks.len(),
                if self.experts > 0 {
                    format!(" and `{GATES_OUTPUT}` float32 [-1, {}, {}]", self.tasks.len(), self.experts)
                } else {
                    String::new()
                },
                self.outputs.iter().map(|t| (&t.name, &t.dtype, &t.shape)).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureConfig;

    fn manifest(schema: &FeatureSchema) -> ModelManifest {
        ModelManifest {
            format: MANIFEST_FORMAT,
            model_version: "m1".into(),
            created_ms: 1,
            schema: schema.describe(),
            inputs: ModelManifest::standard_inputs(),
            outputs: ModelManifest::standard_outputs(2, 4),
            tasks: vec![
                TaskSpec {
                    name: "click".into(),
                    kind: TaskKind::Binary,
                    transform: identity(),
                    combiner_weight: 1.0,
                    debiased: true,
                },
                TaskSpec {
                    name: "watch".into(),
                    kind: TaskKind::Regression,
                    transform: "log1p".into(),
                    combiner_weight: 1.0,
                    debiased: true,
                },
            ],
            experts: 4,
            training: TrainingSummary::default(),
            metrics: BTreeMap::new(),
            precision: "fp32".into(),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_matches_its_schema() {
        let schema = FeatureSchema::default();
        let dir = tempfile::tempdir().unwrap();
        manifest(&schema).write(dir.path()).unwrap();
        let back = ModelManifest::read(dir.path()).unwrap();
        assert_eq!(back, manifest(&schema));
        back.check(&schema).unwrap();
    }

    #[test]
    fn a_different_schema_is_refused_naming_both_hashes() {
        let ours = FeatureSchema::default();
        let theirs = FeatureSchema::new(FeatureConfig { video_buckets: 7, ..FeatureConfig::default() }).unwrap();
        let err = manifest(&theirs).check(&ours).unwrap_err().to_string();
        assert!(err.contains(theirs.hash()) && err.contains(ours.hash()), "{err}");
        assert!(err.contains("retrain"), "{err}");
    }

    #[test]
    fn a_position_input_or_wrong_outputs_break_the_contract() {
        let schema = FeatureSchema::default();
        let mut m = manifest(&schema);
        m.inputs.push(TensorSpec { name: "position".into(), dtype: "int64".into(), shape: vec![-1] });
        let err = m.check(&schema).unwrap_err().to_string();
        assert!(err.contains("position is never a serving input"), "{err}");

        let mut m = manifest(&schema);
        m.outputs = ModelManifest::standard_outputs(3, 4);
        assert!(m.check(&schema).unwrap_err().to_string().contains("outputs must be"));

        let mut m = manifest(&schema);
        m.tasks[1].name = "click".into();
        assert!(m.check(&schema).unwrap_err().to_string().contains("distinct"));
    }

    #[test]
    fn a_missing_or_garbled_manifest_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelManifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let err = ModelManifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a valid model manifest"), "{err}");
    }
}
