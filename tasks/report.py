"""Stage report: one human-readable page, reports/report.md, with the metrics tables and plots."""
import json
import os
from pathlib import Path

from tasks import paths
from tasks.cli import run_stage
from tasks.io import atomic_path


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def table(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def image(path: Path, caption: str) -> str:
    return f"![{caption}]({os.path.relpath(path, paths.REPORT.parent)})"


def render() -> str:
    train, ev, score = load(paths.TRAIN_METRICS), load(paths.EVALUATE_METRICS), load(paths.SCORE_METRICS)
    baselines = load(paths.BASELINE_METRICS)
    parts = ["# Digit recognizer: run report", ""]
    rows = [["validation accuracy", f"{ev['accuracy']:.4f}"], ["validation errors", f"{ev['errors']} of {ev['n']}"],
            ["validation log loss", f"{ev['loss']:.4f}"], ["macro F1", f"{ev['macro_f1']:.4f}"]]
    if score and score.get("answer_key"):
        rows.append(["**test accuracy (answer key)**", f"**{score['test_accuracy']:.4f}** "
                                                        f"({score['test_errors']} errors of {score['test_n']})"])
    else:
        rows.append(["test accuracy", "no answer key (Kaggle's files)"])
    rows += [["preset", train["preset"]], ["epochs (best)", f"{train['epochs']} ({train['best_epoch']})"],
             ["training time", f"{train['train_seconds']} s of epochs ({train.get('stage_seconds', '?')} s for the "
                               f"whole stage), {train['train_cpu_seconds']} CPU s, {train['images_per_second']} images/s"],
             ["device", train["device"]], ["machine", train.get("machine", "not recorded")]]
    parts += ["## Summary", "", table(["metric", "value"], rows), ""]
    per = ev["per_class"]
    parts += ["## Per-class report (validation)", "", table(
        ["digit", "precision", "recall", "F1", "support", "ROC AUC", "avg. precision"],
        [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"],
          f"{ev['roc_auc'][c]:.5f}", f"{ev['average_precision'][c]:.5f}"] for c, v in per.items()]), ""]
    if baselines:
        rows = [[name, f"{m['val_accuracy']:.4f}", m["train_size"], f"{m['fit_seconds']:.1f}",
                 f"{m['predict_seconds']:.2f}", m.get("note", "")] for name, m in baselines["models"].items()]
        rows.append(["**CNN (this run)**", f"**{ev['accuracy']:.4f}**", train["train_images"],
                     f"{train['train_seconds']:.1f}", "", f"preset {train['preset']}"])
        parts += ["## Baselines (same split)", "",
                  table(["model", "val. accuracy", "train size", "fit s", "predict s", "note"], rows), "",
                  image(paths.BASELINE_PLOTS / "accuracy_vs_time.png", "accuracy against fit time"), ""]
        d = baselines["detector"]
        parts += [f"## Binary detector: is it a {d['digit']}? ({d['folds']}-fold CV, {d['train_size']} images)", "",
                  table(["measure", "value"], [
                      ["precision / recall / F1 at threshold 0", f"{d['cv_precision']:.3f} / {d['cv_recall']:.3f} / {d['cv_f1']:.3f}"],
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


def main() -> None:
    text = render()
    with atomic_path(paths.REPORT) as tmp:
        tmp.write_text(text)
    print(f"report: {paths.REPORT}")


if __name__ == "__main__":
    run_stage(main)
