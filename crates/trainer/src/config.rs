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

/// Where the training examples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleSource {
    /// A point-in-time replay of the serving pipeline over the log
    /// (`crate::replay`): the candidates the generators would have proposed
    /// at each logged moment, with their provenance, labelled by what the
    /// user did next; logged impressions join them.
    Replay,
    /// Only the logged impressions, with features computed from the log
    /// (the first trainer's data; kept for comparisons).
    Logged,
}

/// Which videos are the negatives of a replayed moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Negatives {
    /// Sampled uniformly from the moment's own candidates (what the ranker
    /// orders at serving); positives outside the candidates are left out.
    Candidates,
    /// Sampled uniformly from the catalogue (the classic implicit-feedback
    /// set-up); every positive is kept.
    Random,
}

/// How the click task's loss is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickLoss {
    /// Binary cross-entropy per row (the paper's point-wise objective).
    Pointwise,
    /// A softmax over the rows of each request (or replayed moment): −log of
    /// the softmax weight of each clicked row, plus `softmax_bce_weight` ×
    /// the point-wise loss, which keeps the output a calibrated probability
    /// for the combiner.
    Softmax,
}

/// The arithmetic of the exported serving graph (`[trainer] precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout.
    #[default]
    Fp32,
    /// The big matrix products in 8-bit integers, calibrated on training
    /// rows (`crate::export`, "INT8"); about twice as fast on CPUs with
    /// VNNI. The fp32 graph's test metrics are kept in the manifest beside
    /// the INT8 graph's (`fp32.<task>.auc`).
    Int8,
}

/// The order the training rows are visited in, each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOrder {
    /// Impression-time order, the same every epoch (the paper trains
    /// sequentially over its logs): the last batches are the newest rows.
    Time,
    /// The requests (replayed moments) in a new seeded random order every
    /// epoch, the rows of one request kept together (a list-wise loss needs
    /// them in one batch). A batch then mixes many users and days instead
    /// of a few neighbouring moments, often of one user.
    Shuffled,
}

/// The point-wise replay's settings (`[trainer.replay]`; see `crate::replay`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Share of the log's events, in time order, that only warm the online
    /// generators up and train the replay's own sequence model: examples
    /// come from the moments after it, so the sequence model never scores
    /// what it was trained on.
    pub warmup_fraction: f64,
    /// How long after a moment a watch still counts as what the user went
    /// on to watch (the join's attribution window for logged impressions).
    pub attribution_minutes: u64,
    /// At most this many distinct videos watched (or clicked) after a
    /// moment, within the window, are its positives.
    pub next_videos: usize,
    pub negatives: Negatives,
    /// Negatives sampled per moment.
    pub negatives_per_moment: usize,
    /// With `negatives = "candidates"`: how many of a moment's negatives are
    /// drawn from its first `hard_negative_depth` candidates in fused order
    /// (the ones a list's top is decided among); the rest stay uniform over
    /// all the others. 0 = all uniform.
    pub hard_negatives: usize,
    pub hard_negative_depth: usize,
    /// Logged impressions without the server's features (imports, another
    /// policy's log) become rows too, with features computed at their time
    /// and their positions (a video shown in the list is then not a
    /// candidate row again). Off by default: their positives would all be
    /// shown rows and every candidate row a negative, so the model would
    /// learn "shown or not" instead of ordering candidates. Impressions that
    /// carry the serving features are always rows.
    pub logged_impressions: bool,
    /// At most this many moments become examples (a seeded uniform sample).
    pub max_moments: usize,
    /// At most about this many moments per user (a user with more keeps each
    /// with probability cap / moments); 0 = no cap.
    pub max_moments_per_user: usize,
    /// Generators are synced (context publishes its trending lists) at most
    /// this often in event time, as the server does in wall time.
    pub sync_interval_ms: i64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            warmup_fraction: 0.5,
            attribution_minutes: 360,
            next_videos: 1,
            negatives: Negatives::Candidates,
            negatives_per_moment: 20,
            hard_negatives: 0,
            hard_negative_depth: 50,
            logged_impressions: false,
            max_moments: 100_000,
            max_moments_per_user: 50,
            sync_interval_ms: 250,
        }
    }
}

impl ReplayConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.warmup_fraction.is_finite() && (0.0..0.95).contains(&self.warmup_fraction)) {
            return Err(format!("trainer.replay.warmup_fraction = {}: must be within [0, 0.95)", self.warmup_fraction));
        }
        if !(1..=10_000).contains(&self.next_videos) {
            return Err(format!("trainer.replay.next_videos = {}: must be within 1..=10000", self.next_videos));
        }
        if self.negatives_per_moment > 10_000 {
            return Err(format!(
                "trainer.replay.negatives_per_moment = {}: must be within 0..=10000",
                self.negatives_per_moment
            ));
        }
        if self.hard_negatives > self.negatives_per_moment {
            return Err(format!(
                "trainer.replay.hard_negatives = {}: must be at most negatives_per_moment ({})",
                self.hard_negatives, self.negatives_per_moment
            ));
        }
        if self.hard_negatives > 0 && self.hard_negative_depth == 0 {
            return Err("trainer.replay.hard_negative_depth = 0: must be at least 1 when hard_negatives > 0".into());
        }
        if self.max_moments == 0 {
            return Err("trainer.replay.max_moments = 0: must be at least 1".into());
        }
        if self.attribution_minutes == 0 || self.attribution_minutes > 525_600 {
            return Err(format!(
                "trainer.replay.attribution_minutes = {}: must be within 1..=525600 (a year)",
                self.attribution_minutes
            ));
        }
        if !(0..=86_400_000).contains(&self.sync_interval_ms) {
            return Err(format!(
                "trainer.replay.sync_interval_ms = {}: must be within 0..=86400000",
                self.sync_interval_ms
            ));
        }
        Ok(())
    }
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
    /// The order rows are visited in each epoch (`time` or `shuffled`).
    pub order: BatchOrder,
    /// Decay of the exponential moving average of the parameters that is
    /// validated and kept (Polyak averaging; e.g. 0.999 averages over about
    /// the last 1,000 steps); 0 keeps the last step's parameters.
    pub weight_average: f64,
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
    /// Where examples come from (`replay`, the default, or `logged`).
    pub examples: ExampleSource,
    pub replay: ReplayConfig,
    pub click_loss: ClickLoss,
    /// With `click_loss = softmax`: weight of the point-wise click loss added
    /// to the softmax loss.
    pub softmax_bce_weight: f32,
    /// Dense features the model must not use (their input is held at 0 in
    /// training and in the exported graph), e.g. the provenance features
    /// `source_*` / `score_*` for a comparison; names from the schema.
    pub ignore_features: Vec<String>,
    /// The serving graph's arithmetic (`fp32` or `int8`).
    pub precision: Precision,
    /// Training rows (spread evenly over the training period) whose
    /// activation ranges calibrate an `int8` graph.
    pub calibration_rows: usize,
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
            order: BatchOrder::Time,
            weight_average: 0.0,
            // 5e-4 over up to 8 epochs rather than 2e-3 over 4: on MovieLens
            // the final list's HR@10 rose from 0.124 to 0.138 (means of three
            // seeds), on the world from ×1.12 to ×1.16 the best generator
            // (BENCHMARKS.md, "Run-to-run spread").
            learning_rate: 5e-4,
            bias_learning_rate_scale: 10.0,
            weight_decay: 1e-4,
            // Id embeddings make ranking models overfit after a few passes
            // over the data ("one-epoch overfitting" at higher learning
            // rates); early stopping keeps the best epoch, patience 2 rides
            // out one noisy validation epoch.
            max_epochs: 8,
            patience: 2,
            validation_fraction: 0.1,
            test_fraction: 0.15,
            seed: 7,
            threads: 1,
            examples: ExampleSource::Replay,
            replay: ReplayConfig::default(),
            click_loss: ClickLoss::Pointwise,
            softmax_bce_weight: 0.2,
            ignore_features: Vec::new(),
            precision: Precision::Fp32,
            calibration_rows: 20_000,
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
        if !(0.0..1.0).contains(&self.weight_average) {
            return Err(format!(
                "trainer.weight_average = {}: must be within [0, 1) (0 = off, 0.999 = about the last 1,000 steps)",
                self.weight_average
            ));
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
        self.replay.validate()?;
        if !(self.softmax_bce_weight.is_finite() && (0.0..=100.0).contains(&self.softmax_bce_weight)) {
            return Err(format!("trainer.softmax_bce_weight = {}: must be within 0..=100", self.softmax_bce_weight));
        }
        if self.click_loss == ClickLoss::Softmax && !self.tasks.iter().any(|t| t.name == "click") {
            return Err("trainer.click_loss = softmax needs a task named `click`".into());
        }
        if self.precision == Precision::Int8 && self.calibration_rows == 0 {
            return Err("trainer.calibration_rows: an int8 graph needs at least 1 calibration row".into());
        }
        for name in &self.ignore_features {
            if !watchnext_core::features::DENSE.contains(&name.as_str()) {
                return Err(format!(
                    "trainer.ignore_features: `{name}` is not a dense feature of the schema ({})",
                    watchnext_core::features::DENSE.join(", ")
                ));
            }
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
