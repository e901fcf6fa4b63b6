//! What to train: tasks, architecture, bias tower, optimiser, schedule.
//! Every field has a default (the reference model of
//! `shared/reference/machine-limits.md`, scaled to this data), and
//! [`TrainerConfig::validate`] names the first bad field.

use serde::{Deserialize, Serialize};
use watchnext_core::{features::FeatureConfig, model::TaskKind};

/// Which label of a training row a task learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Click,
    /// Seconds watched (0 without a watch).
    WatchSeconds,
    /// Fraction of the video watched, in [0, 1].
    WatchFraction,
    Like,
    Dismiss,
    /// Star rating; rows without a rating do not count for this task.
    Rating,
}

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Label::Click => "click",
            Label::WatchSeconds => "watch_seconds",
            Label::WatchFraction => "watch_fraction",
            Label::Like => "like",
            Label::Dismiss => "dismiss",
            Label::Rating => "rating",
        }
    }
}

/// A transform applied to a regression label before the squared loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    Identity,
    /// ln(1 + x): watch time is heavy tailed.
    Log1p,
}

impl Transform {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Transform::Identity => x,
            Transform::Log1p => x.max(0.0).ln_1p(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transform::Identity => "identity",
            Transform::Log1p => "log1p",
        }
    }
}

/// One task: a tower on top of its gate's mixture of experts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    pub kind: TaskKind,
    pub label: Label,
    #[serde(default = "identity")]
    pub transform: Transform,
    /// Weight of this task's loss in the total.
    #[serde(default = "one")]
    pub loss_weight: f32,
    /// Default exponent in the combiner's weighted product (written to the manifest).
    #[serde(default = "one")]
    pub combiner_weight: f32,
    /// Whether the shallow tower's bias logit is added to this task in training
    /// (the engagement tasks: what the user chose to see depends on where it was).
    #[serde(default)]
    pub debias: bool,
}

fn identity() -> Transform {
    Transform::Identity
}

fn one() -> f32 {
    1.0
}

/// The network's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Multi-gate mixture of experts: one softmax gate per task over shared experts.
    Mmoe,
    /// One shared network feeding every tower (experts × expert width as one
    /// wide layer, so the cost matches the MMoE's).
    SharedBottom,
}

/// How position reaches the model in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionMode {
    /// The paper's shallow tower: a bias logit from position × device (and
    /// the other bias features), added to the debiased tasks' logits; dropped
    /// at serving.
    ShallowTower,
    /// Position as a plain input of the main network (serving feeds "missing").
    PlainInput,
    /// Position is not used at all.
    Absent,
}

/// Selection context the shallow tower reads besides position × device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BiasFeature {
    /// Position crossed with device (always on in the shallow tower).
    PositionDevice,
    /// Position crossed with the generator that proposed the candidate first.
    PositionSource,
    /// Device alone (a per-device offset).
    Device,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    pub features: FeatureConfig,
    pub tasks: Vec<TaskConfig>,
    pub architecture: Architecture,
    /// Embedding width of every sparse field.
    pub embedding_dim: usize,
    /// Shared bottom hidden layer width.
    pub bottom: usize,
    pub experts: usize,
    /// Hidden widths of each expert (the last is the expert output).
    pub expert_layers: Vec<usize>,
    /// Hidden widths of each task tower (a final 1-wide layer follows).
    pub tower_layers: Vec<usize>,
    /// Probability of zeroing one expert's gate weight in training (renormalised).
    pub gate_dropout: f32,
    pub position_mode: PositionMode,
    pub bias_features: Vec<BiasFeature>,
    /// Positions above this share one bucket.
    pub max_position: u32,
    /// Probability that a training row's position is replaced by "missing".
    pub position_dropout: f32,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// The shallow tower's learning rate as a multiple of `learning_rate`:
    /// its few weights start at 0 and must travel several logits (a 10th
    /// slot on a tv is examined ~30× less than the first), which Adam's
    /// per-step bound of about one learning rate would make slow.
    pub bias_learning_rate_scale: f64,
    pub weight_decay: f64,
    pub max_epochs: usize,
    /// Stop after this many epochs without validation improvement.
    pub patience: usize,
    /// Fractions of the time range held out, in time order: the last
    /// `test_fraction` is the evaluation period, the `validation_fraction`
    /// before it drives early stopping.
    pub validation_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
    /// Threads for the tensor kernels (0 = one per core). Default 1: on this
    /// machine's two vCPUs a second thread gains nothing, and when another
    /// process keeps a core busy, candle's two-way split matmuls wait on the
    /// busy core and training runs several times slower.
    pub threads: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            features: FeatureConfig::default(),
            tasks: default_tasks(),
            architecture: Architecture::Mmoe,
            embedding_dim: 16,
            bottom: 256,
            experts: 8,
            expert_layers: vec![128, 64],
            tower_layers: vec![32],
            gate_dropout: 0.1,
            position_mode: PositionMode::ShallowTower,
            bias_features: vec![BiasFeature::PositionDevice],
            max_position: 20,
            position_dropout: 0.1,
            batch_size: 512,
            learning_rate: 2e-3,
            bias_learning_rate_scale: 10.0,
            weight_decay: 1e-4,
            // Id embeddings make ranking models overfit after the first pass
            // or two over the data ("one-epoch overfitting"); early stopping
            // with patience 1 keeps the best epoch without wasting more.
            max_epochs: 4,
            patience: 1,
            validation_fraction: 0.1,
            test_fraction: 0.15,
            seed: 7,
            threads: 1,
        }
    }
}

/// The paper's five objectives: engagement (click, watch time) and
/// satisfaction (like, dismiss, rating).
pub fn default_tasks() -> Vec<TaskConfig> {
    let task = |name: &str, kind, label, transform, combiner_weight: f32, debias| TaskConfig {
        name: name.into(),
        kind,
        label,
        transform,
        loss_weight: 1.0,
        combiner_weight,
        debias,
    };
    vec![
        task("click", TaskKind::Binary, Label::Click, Transform::Identity, 1.0, true),
        task("watch", TaskKind::Regression, Label::WatchSeconds, Transform::Log1p, 1.0, true),
        task("like", TaskKind::Binary, Label::Like, Transform::Identity, 0.5, false),
        task("dismiss", TaskKind::Binary, Label::Dismiss, Transform::Identity, 1.0, false),
        task("rating", TaskKind::Regression, Label::Rating, Transform::Identity, 0.5, false),
    ]
}

impl TrainerConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        self.features.validate()?;
        if self.tasks.is_empty() {
            return Err("trainer.tasks: at least one task is needed".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name.is_empty() || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("trainer.tasks[{i}].name = {:?}: use letters, digits and _", t.name));
            }
            if self.tasks[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("trainer.tasks[{i}].name = {:?}: task names must be distinct", t.name));
            }
            if !(t.loss_weight.is_finite() && t.loss_weight >= 0.0) {
                return Err(format!("trainer.tasks[{i}].loss_weight: must be a finite number >= 0"));
            }
            if !t.combiner_weight.is_finite() {
                return Err(format!("trainer.tasks[{i}].combiner_weight: must be finite"));
            }
            let binary_label = matches!(t.label, Label::Click | Label::Like | Label::Dismiss);
            if binary_label != (t.kind == TaskKind::Binary) {
                return Err(format!(
                    "trainer.tasks[{i}]: label {} is {} but kind is {:?}",
                    t.label.name(),
                    if binary_label { "binary" } else { "a quantity" },
                    t.kind
                ));
            }
            if t.kind == TaskKind::Binary && t.transform != Transform::Identity {
                return Err(format!("trainer.tasks[{i}].transform: binary tasks take no transform"));
            }
        }
        let positive = [
            ("embedding_dim", self.embedding_dim),
            ("bottom", self.bottom),
            ("batch_size", self.batch_size),
            ("max_epochs", self.max_epochs),
        ];
        for (name, v) in positive {
            if v == 0 || v > 1 << 16 {
                return Err(format!("trainer.{name} = {v}: must be within 1..=65536"));
            }
        }
        if self.architecture == Architecture::Mmoe && !(1..=64).contains(&self.experts) {
            return Err(format!("trainer.experts = {}: must be within 1..=64", self.experts));
        }
        if self.expert_layers.is_empty() || self.expert_layers.iter().any(|&w| w == 0 || w > 4096) {
            return Err("trainer.expert_layers: one or more widths within 1..=4096".into());
        }
        if self.tower_layers.iter().any(|&w| w == 0 || w > 4096) {
            return Err("trainer.tower_layers: widths within 1..=4096".into());
        }
        for (name, p) in [("gate_dropout", self.gate_dropout), ("position_dropout", self.position_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("trainer.{name} = {p}: must be within [0, 1)"));
            }
        }
        if !(1..=1_000).contains(&self.max_position) {
            return Err(format!("trainer.max_position = {}: must be within 1..=1000", self.max_position));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return Err(format!("trainer.learning_rate = {}: must be within (0, 1)", self.learning_rate));
        }
        if !(self.bias_learning_rate_scale > 0.0 && self.bias_learning_rate_scale <= 1_000.0) {
            return Err(format!(
                "trainer.bias_learning_rate_scale = {}: must be within (0, 1000]",
                self.bias_learning_rate_scale
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay < 1.0) {
            return Err(format!("trainer.weight_decay = {}: must be within [0, 1)", self.weight_decay));
        }
        if self.threads > 1_024 {
            return Err(format!("trainer.threads = {}: must be within 0..=1024 (0 = one per core)", self.threads));
        }
        let (v, t) = (self.validation_fraction, self.test_fraction);
        if !(v > 0.0 && t >= 0.0 && v + t < 0.9) {
            return Err(format!(
                "trainer.validation_fraction = {v}, test_fraction = {t}: validation must be > 0, test >= 0, and \
                 together below 0.9"
            ));
        }
        if self.position_mode == PositionMode::ShallowTower && !self.tasks.iter().any(|t| t.debias) {
            return Err("trainer.position_mode = shallow_tower but no task has `debias = true`".into());
        }
        Ok(())
    }

    /// The label weight per task after checking which labels the data has:
    /// helper for reports.
    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_bad_fields_are_named() {
        TrainerConfig::default().validate().unwrap();
        let mut c = TrainerConfig::default();
        c.tasks[1].kind = TaskKind::Binary;
        assert!(c.validate().unwrap_err().contains("trainer.tasks[1]"));
        let c = TrainerConfig { gate_dropout: 1.0, ..TrainerConfig::default() };
        assert!(c.validate().unwrap_err().contains("gate_dropout"));
        let c = TrainerConfig { validation_fraction: 0.0, ..TrainerConfig::default() };
        assert!(c.validate().unwrap_err().contains("validation_fraction"));
        let json = serde_json::to_string(&TrainerConfig::default()).unwrap();
        let back: TrainerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, TrainerConfig::default());
        let partial: TrainerConfig = serde_json::from_str(r#"{"experts": 4}"#).unwrap();
        assert_eq!(partial.experts, 4);
        assert!(serde_json::from_str::<TrainerConfig>(r#"{"expert": 4}"#).is_err());
    }
}
