//! The evaluation report: `report.md` plus PNG charts, in one folder.

use std::{fmt::Write as _, path::Path};

use watchnext_core::model::{ModelManifest, TaskKind};
use watchnext_eval::charts::{LineStyle, Series, grouped_bars, line_chart};

use crate::{
    pipeline::{EvalOutcome, PipelineError},
    train::TrainReport,
};

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.4}"))
}

/// Writes `dir/report.md` and its charts.
pub fn write(
    dir: &Path,
    manifest: &ModelManifest,
    outcome: &EvalOutcome,
    training: Option<&TrainReport>,
) -> Result<(), PipelineError> {
    let mut md = String::new();
    let mut chart_notes = Vec::new();
    let _ = writeln!(md, "# Offline evaluation of `{}`\n", manifest.model_version);
    let _ = writeln!(
        md,
        "Scored by running the exported `model.onnx` with ONNX Runtime on the held-out test period ({} rows, the \
         latest rows of the data in time). Feature schema `{}`.\n",
        outcome.test_rows, manifest.schema.hash
    );
    let _ = writeln!(md, "## Per-task metrics\n");
    let _ = writeln!(md, "| task | kind | rows | AUC | MSE | mean label | mean prediction |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    for m in &outcome.metrics {
        let kind = if m.kind == TaskKind::Binary { "binary" } else { "regression" };
        let _ = writeln!(
            md,
            "| {} | {kind} | {} | {} | {} | {:.4} | {:.4} |",
            m.task,
            m.rows,
            fmt_opt(m.auc),
            fmt_opt(m.mse),
            m.mean_label,
            m.mean_prediction
        );
    }
    if !outcome.gates.is_empty() {
        let experts = outcome.gates[0].mean.len();
        let _ = writeln!(md, "\n## Expert utilisation (polarisation report)\n");
        let _ = writeln!(
            md,
            "Mean gate weight per expert over the test rows. Even use is {:.3} per expert (entropy ln {experts} = \
             {:.3}); a gate is *polarised* when at most one expert gets 1% or more.\n",
            1.0 / experts as f64,
            (experts as f64).ln()
        );
        let header: Vec<String> = (0..experts).map(|e| format!("e{e}")).collect();
        let _ = writeln!(md, "| gate | {} | entropy | experts < 1% | polarised |", header.join(" | "));
        let _ = writeln!(md, "|---|{}---:|---:|---|", "---:|".repeat(experts));
        for g in &outcome.gates {
            let cells: Vec<String> = g.mean.iter().map(|m| format!("{m:.3}")).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {} | {} |",
                g.task,
                cells.join(" | "),
                g.entropy,
                g.below_one_percent,
                if g.polarised { "yes" } else { "no" }
            );
        }
        let groups: Vec<(String, Vec<f64>)> = outcome.gates.iter().map(|g| (g.task.clone(), g.mean.clone())).collect();
        let note = grouped_bars(
            &dir.join("expert_utilisation.png"),
            "Expert utilisation per task gate",
            "mean gate weight",
            &groups,
            &header,
        )
        .map_err(|e| PipelineError::File { path: e.path().to_owned(), problem: e.to_string() })?;
        chart_notes.push(note);
        let _ = writeln!(md, "\n![expert utilisation](expert_utilisation.png)");
    }
    if !outcome.bias_curves.is_empty() {
        let with_truth = outcome.bias_curves.iter().any(|c| c.truth.is_some());
        let _ = writeln!(md, "\n## Position bias learned by the shallow tower\n");
        let _ = writeln!(
            md,
            "exp(b(p, d) − b(1, d)) from the shallow tower: the learned click-odds ratio of slot p to slot 1, \
             which serving drops. Beside it, the logged click rate at slot p over slot 1 in the test period \
             (position and the logging policy's choices together: the gap between the two is what the tower \
             attributed to the videos rather than the slot; \"–\" where a slot has under {} rows){}.\n",
            crate::evaluate::MIN_OBSERVED_ROWS,
            if with_truth {
                ", and the world's true examination ratio e(p, d)/e(1, d) — for small click probabilities the \
                 learned ratio and the truth measure the same thing"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "| device | test rows with a position | learned p2 / p5 / p10 | logged p2 / p5 / p10 | true p2 / p5 / p10 | mean abs error |"
        );
        let _ = writeln!(md, "|---|---:|---|---|---|---:|");
        let mut series = Vec::new();
        for (slot, c) in outcome.bias_curves.iter().enumerate() {
            let at = |v: &[f64], p: usize| {
                v.get(p - 1).filter(|x| x.is_finite()).map_or_else(|| "–".to_owned(), |x| format!("{x:.3}"))
            };
            let three = |v: &[f64]| format!("{} / {} / {}", at(v, 2), at(v, 5), at(v, 10));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                c.device,
                c.rows,
                three(&c.learned),
                three(&c.observed),
                c.truth.as_deref().map_or_else(|| "–".to_owned(), three),
                c.mean_abs_error.map_or_else(|| "–".to_owned(), |e| format!("{e:.4}"))
            );
            let pts = |v: &[f64]| {
                c.positions.iter().zip(v).filter(|(_, y)| y.is_finite()).map(|(p, y)| (f64::from(*p), *y)).collect()
            };
            series.push(
                Series::new(format!("{} learned", c.device), pts(&c.learned))
                    .with_style(LineStyle::Markers)
                    .with_color(slot),
            );
            match &c.truth {
                Some(truth) => series.push(
                    Series::new(format!("{} true", c.device), pts(truth))
                        .with_style(LineStyle::Dashed)
                        .with_color(slot),
                ),
                None if c.observed.iter().any(|x| x.is_finite()) => series.push(
                    Series::new(format!("{} logged", c.device), pts(&c.observed))
                        .with_style(LineStyle::Dashed)
                        .with_color(slot),
                ),
                None => {}
            }
        }
        let note = line_chart(
            &dir.join("bias_curves.png"),
            if with_truth {
                "Position bias per device: learned vs true"
            } else {
                "Position bias per device: learned vs logged click rate"
            },
            "position",
            "relative to position 1",
            &series,
        )
        .map_err(|e| PipelineError::File { path: e.path().to_owned(), problem: e.to_string() })?;
        chart_notes.push(note);
        let _ = writeln!(md, "\n![bias curves](bias_curves.png)");
    }
    if outcome.ndcg_model.is_some() || outcome.ndcg_logged.is_some() {
        let _ = writeln!(md, "\n## Ranking against true relevance\n");
        let _ = writeln!(
            md,
            "NDCG@10 of each logged list re-ordered by the model's click prediction, with the world's true relevance \
             r(u, v) (click probability given examination) as the gain; the logged order (popularity with noise) \
             for reference.\n"
        );
        let _ = writeln!(md, "| order | NDCG@10 |\n|---|---:|");
        let _ = writeln!(md, "| model (click prediction, no position) | {} |", fmt_opt(outcome.ndcg_model));
        let _ = writeln!(md, "| logged order | {} |", fmt_opt(outcome.ndcg_logged));
    }
    if let Some(training) = training {
        let _ = writeln!(md, "\n## Training\n");
        let _ = writeln!(
            md,
            "{} epochs, best epoch {} (kept){}.\n",
            training.epochs.len(),
            training.best_epoch,
            if training.stopped_early { ", stopped early" } else { "" }
        );
        let _ = writeln!(md, "| epoch | train loss | validation loss | examples/s |\n|---:|---:|---:|---:|");
        for e in &training.epochs {
            let _ = writeln!(
                md,
                "| {} | {:.5} | {:.5} | {:.0} |",
                e.epoch, e.train_loss, e.validation_loss, e.examples_per_second
            );
        }
        let mut series = vec![
            Series::new("train", training.epochs.iter().map(|e| (e.epoch as f64, e.train_loss)).collect())
                .with_style(LineStyle::Markers),
            Series::new("validation", training.epochs.iter().map(|e| (e.epoch as f64, e.validation_loss)).collect())
                .with_style(LineStyle::Markers),
        ];
        for (k, task) in manifest.tasks.iter().enumerate() {
            series.push(
                Series::new(
                    format!("{} (validation)", task.name),
                    training
                        .epochs
                        .iter()
                        .filter_map(|e| e.validation_task_loss.get(k).map(|l| (e.epoch as f64, *l)))
                        .collect(),
                )
                .with_style(LineStyle::Dashed),
            );
        }
        let note = line_chart(&dir.join("learning_curves.png"), "Learning curves", "epoch", "loss", &series)
            .map_err(|e| PipelineError::File { path: e.path().to_owned(), problem: e.to_string() })?;
        chart_notes.push(note);
        let _ = writeln!(md, "\n![learning curves](learning_curves.png)");
    }
    let warnings: Vec<String> = chart_notes.iter().flat_map(|n| n.warnings.clone()).collect();
    if !outcome.notes.is_empty() || !warnings.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in outcome.notes.iter().chain(&warnings) {
            let _ = writeln!(md, "- {n}");
        }
    }
    let path = dir.join("report.md");
    watchnext_core::fsutil::write_atomic(&path, md.as_bytes())
        .map_err(|e| PipelineError::File { path, problem: e.to_string() })
}
