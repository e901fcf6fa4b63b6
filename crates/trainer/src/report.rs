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
        let _ = writeln!(md, "\n## Position bias: shallow tower vs the world's truth\n");
        let _ = writeln!(
            md,
            "exp(b(p, d) − b(1, d)) from the shallow tower (the learned click-odds ratio of slot p to slot 1) \
             against the world's true examination ratio e(p, d)/e(1, d). For small click probabilities the two \
             measure the same thing.\n"
        );
        let _ = writeln!(md, "| device | mean abs error | learned p2 / p5 / p10 | true p2 / p5 / p10 |");
        let _ = writeln!(md, "|---|---:|---|---|");
        let mut series = Vec::new();
        for (slot, c) in outcome.bias_curves.iter().enumerate() {
            let at = |v: &[f64], p: usize| v.get(p - 1).map_or_else(|| "–".to_owned(), |x| format!("{x:.3}"));
            let _ = writeln!(
                md,
                "| {} | {:.4} | {} / {} / {} | {} / {} / {} |",
                c.device,
                c.mean_abs_error,
                at(&c.learned, 2),
                at(&c.learned, 5),
                at(&c.learned, 10),
                at(&c.truth, 2),
                at(&c.truth, 5),
                at(&c.truth, 10)
            );
            let pts = |v: &[f64]| c.positions.iter().zip(v).map(|(p, y)| (f64::from(*p), *y)).collect::<Vec<_>>();
            series.push(
                Series::new(format!("{} learned", c.device), pts(&c.learned))
                    .with_style(LineStyle::Markers)
                    .with_color(slot),
            );
            series.push(
                Series::new(format!("{} true", c.device), pts(&c.truth)).with_style(LineStyle::Dashed).with_color(slot),
            );
        }
        let note = line_chart(
            &dir.join("bias_curves.png"),
            "Position bias per device: learned vs true",
            "position",
            "examination relative to position 1",
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
