"""Stage report: one human-readable page, reports/report.md, with the metrics tables and plots
(every figure: it reads metrics/details/ and the score), and the model card of the same run,
reports/model_card.md (tasks/model_card.py)."""
import json
import os
from pathlib import Path

import pandas as pd

from digits import paths
from digits.cli import run_stage
from digits.io import atomic_path


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def table(header: list, rows: list) -> str:
    """A markdown table; cells are shown as given (no number parsing: 0.9950 stays 0.9950)."""
    return pd.DataFrame(rows, columns=header).to_markdown(index=False, tablefmt="github", disable_numparse=True)


def robustness_table(models: dict) -> str:
    """Accuracy per corruption (rows) and model (columns), clean first, then the means."""
    names = list(next(iter(models.values()))["corruptions"])
    rows = [[c] + [f"{m['corruptions'][c]:.4f}" for m in models.values()] for c in names]
    rows = [["**clean**"] + [f"**{m['clean']:.4f}**" for m in models.values()]] + rows
    rows += [["**mean over corruptions**"] + [f"**{m['mean_corrupted']:.4f}**" for m in models.values()],
             ["error relative to clean"] + [f"{m['relative_error']:.1f}x" if m["relative_error"] else "-"
                                            for m in models.values()]]
    return table(["corruption"] + list(models), rows)


def image(path: Path, caption: str) -> str:
    return f"![{caption}]({os.path.relpath(path, paths.REPORT.parent)})"


def members(ev: dict) -> dict:
    """{member: its train figures} for the members the evaluate stage names, in its order."""
    return {name: load(paths.member(name).details) for name in ev["ensemble"]["members"]}


def render() -> str:
    ev, score = load(paths.EVALUATE_DETAILS), load(paths.SCORE_METRICS)
    baselines, trained = load(paths.BASELINE_DETAILS), members(ev)
    first = next(iter(trained.values()))
    ens = ev["ensemble"]
    parts = ["# Digit recognizer: run report", ""]
    rows = [["validation accuracy", f"{ev['accuracy']:.4f}"], ["validation errors", f"{ev['errors']} of {ev['n']}"],
            ["validation log loss", f"{ev['loss']:.4f}"], ["macro F1", f"{ev['macro_f1']:.4f}"]]
    if score and score.get("answer_key"):
        rows.append(["**test accuracy (answer key)**", f"**{score['test_accuracy']:.4f}** "
                                                        f"({score['test_errors']} errors of {score['test_n']})"])
    else:
        rows.append(["test accuracy", "no answer key (Kaggle's files)"])
    rows += [["ensemble", f"{len(trained)} member(s), TTA {'+'.join(ens['tta']) or 'none'}"],
             ["training time", f"{sum(m['train_seconds'] for m in trained.values()):.1f} s of epochs, "
                               f"{sum(m['train_cpu_seconds'] for m in trained.values()):.1f} CPU s (all members)"],
             ["device", first["device"]], ["machine", first.get("machine", "not recorded")]]
    parts += ["## Summary", "", table(["metric", "value"], rows), ""]
    rows = [[name, m["preset"], m["seed"], f"{ens['members'][name]:.4f}", f"{m['epochs']} ({m['best_epoch']})",
             f"{m['train_seconds']:.1f}", f"{m['train_cpu_seconds']:.1f}", m.get("stage_seconds", "")]
            for name, m in trained.items()]
    rows += [["**ensemble, no TTA**", "", "", f"**{ens['accuracy_without_tta']:.4f}**", "", "", "", ""],
             [f"**ensemble, TTA {'+'.join(ens['tta_measured'])}**", "", "", f"**{ens['accuracy_with_tta']:.4f}**",
              "", "", "", ""]]
    parts += ["## Ensemble members (validation)", "",
              table(["member", "preset", "seed", "val. accuracy", "epochs (best)", "train s", "CPU s", "stage s"], rows),
              "", "The most confidently wrong images below are the ensemble's, as submitted.", ""]
    cal = ev.get("calibration")
    if cal:
        rows = [[k, f"{cal['before'][k]:.4f}", f"{cal['after'][k]:.4f}"]
                for k in ("ece", "mce", "brier", "nll", "accuracy", "mean_confidence")]
        parts += [f"## Calibration (validation, {cal['measured_on']})", "",
                  f"Temperature {cal['temperature']:.3f}, fitted on the {cal['fitted_on']}.", "",
                  table(["measure", "as predicted", "after temperature scaling"], rows), "",
                  image(paths.EVAL_PLOTS / "reliability.png", "reliability diagram"), ""]
    robust = load(paths.ROBUSTNESS_DETAILS)
    if robust:
        parts += [f"## Robustness: the model path ({robust['images']:,} validation images per corruption)", "",
                  "The corrupted 28 x 28 images fed to the model as they are.", "",
                  robustness_table(robust["models"]), ""]
        if "recognizer" in robust:
            via = robust["recognizer"]
            parts += [f"## Robustness: the recognizer path (the first {via['images']:,} of them)", "",
                      "The same images as PNG files read by `python -m digits.recognize`'s code (decoding, "
                      "preprocessing, the ensemble); a file it finds no digit in counts as wrong.", "",
                      robustness_table(via["models"]), ""]
        parts += [image(paths.ROBUSTNESS_PLOTS / "accuracy.png", "accuracy under corruptions"), "",
                  image(paths.ROBUSTNESS_PLOTS / "examples.png", "one image under every corruption"), ""]
    per = ev["per_class"]
    parts += ["## Per-class report (validation)", "", table(
        ["digit", "precision", "recall", "F1", "support", "ROC AUC", "avg. precision"],
        [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"],
          f"{ev['roc_auc'][c]:.5f}", f"{ev['average_precision'][c]:.5f}"] for c, v in per.items()]), ""]
    if baselines:
        rows = [[name, f"{m['val_accuracy']:.4f}", m["train_size"], f"{m['fit_seconds']:.1f}",
                 f"{m['predict_seconds']:.2f}", m.get("note", "")] for name, m in baselines["models"].items()]
        rows.append(["**CNN ensemble (this run)**", f"**{ev['accuracy']:.4f}**", first["train_images"],
                     f"{sum(m['train_seconds'] for m in trained.values()):.1f}", "",
                     f"{len(trained)} member(s): {', '.join(trained)}"])
        parts += ["## Baselines (same split)", "",
                  table(["model", "val. accuracy", "train size", "fit s", "predict s", "note"], rows), "",
                  image(paths.BASELINE_PLOTS / "accuracy_vs_time.png", "accuracy against fit time"), ""]
        d = baselines["detector"]
        parts += [f"## Binary detector: is it a {d['digit']}? ({d['folds']}-fold CV, {d['train_size']} images)", "",
                  table(["measure", "value"], [
                      ["precision / recall / F1 at threshold 0",
                       f"{d['cv_precision']:.3f} / {d['cv_recall']:.3f} / {d['cv_f1']:.3f}"],
                      [f"threshold for {d['requested_precision']:.0%} precision", f"{d['threshold']:.3f}"],
                      ["precision / recall there", f"{d['precision_at_threshold']:.3f} / {d['recall_at_threshold']:.3f}"],
                      ["ROC AUC: SGD / random forest", f"{d['sgd_roc_auc']:.4f} / {d['forest_roc_auc']:.4f}"]]), "",
                  image(paths.BASELINE_PLOTS / "detector.png", "binary detector"), ""]
    ev_dir, eda = paths.EVAL_PLOTS, paths.EDA_PLOTS
    for title, path in [("Training curves", ev_dir / "training_curves.png"),
                        ("Confusion matrix", ev_dir / "confusion_matrix.png"),
                        ("ROC curves", ev_dir / "roc.png"), ("Precision-recall curves", ev_dir / "precision_recall.png"),
                        ("Most confidently wrong", ev_dir / "confident_errors.png"),
                        ("Feature maps of the first convolutions", ev_dir / "feature_maps.png"),
                        ("Class distribution", eda / "class_distribution.png"), ("Sample digits", eda / "samples.png")]:
        if path.exists():
            parts += [f"## {title}", "", image(path, title), ""]
    parts += [f"Submission: `{paths.SUBMISSION}` (checked). Validation report: "
              f"`{paths.VALIDATION_DIR / 'docs' / 'index.html'}`.", ""]
    return "\n".join(parts)


def card() -> str:
    from digits import params as params_mod
    from tasks import model_card
    ev = load(paths.EVALUATE_DETAILS)
    return model_card.render(params_mod.load(), ev, load(paths.SCORE_METRICS), members(ev),
                             load(paths.ROBUSTNESS_DETAILS), load(paths.EXPORT_DETAILS))


def main() -> None:
    report, model_card = render(), card()
    with atomic_path(paths.REPORT) as tmp, atomic_path(paths.MODEL_CARD) as tmp_card:
        tmp.write_text(report)
        tmp_card.write_text(model_card)
    print(f"report: {paths.REPORT}; model card: {paths.MODEL_CARD}")


if __name__ == "__main__":
    run_stage(main)
