"""Stage evaluate: the trained CNN on the validation split -> metrics/evaluate.json and plots.

Metrics: accuracy, log loss, macro F1, and per-class precision/recall/F1/support (the
classification report of seeds 003/004). Plots (PNG, plus CSV for DVC where DVC can draw them):
confusion matrix, one-vs-rest ROC and precision-recall curves with AUC, the most confidently wrong
images, the training curves, and the first convolution layers' feature maps for one image.
"""
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tasks import paths, plots
from tasks.cli import run_stage
from tasks.io import atomic_path, thin, to_images, write_json, write_rows

WORST = 20                  # confidently wrong images shown


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log loss, macro F1 and the per-class report for labels 0..9."""
    pred = probs.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, pred, labels=range(10), zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "loss": float(skm.log_loss(y_true, np.clip(probs, 1e-7, 1), labels=range(10))),
        "macro_f1": float(f.mean()),
        "errors": int((pred != y_true).sum()),
        "n": int(len(y_true)),
        "per_class": {str(c): {"precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                               "support": int(s[c])} for c in range(10)},
    }


def one_vs_rest(y_true: np.ndarray, probs: np.ndarray):
    """{class: (fpr, tpr, roc_auc)}, {class: (recall, precision, average_precision)}."""
    roc, pr = {}, {}
    for c in range(10):
        hit = (y_true == c).astype(int)
        fpr, tpr, _ = skm.roc_curve(hit, probs[:, c])
        prec, rec, _ = skm.precision_recall_curve(hit, probs[:, c])
        roc[c] = (fpr, tpr, float(skm.auc(fpr, tpr)))
        pr[c] = (rec, prec, float(skm.average_precision_score(hit, probs[:, c])))
    return roc, pr


def training_curves(live_dir: Path, path: Path) -> None:
    """Loss, accuracy and learning rate per epoch from DVCLive's files (seeds 001/003)."""
    read = lambda name: pd.read_csv(live_dir / "plots/metrics" / f"{name}.tsv", sep="\t")
    panels = {}
    for metric in ("loss", "accuracy"):
        panels[metric] = {split: (t["step"] + 1, t[metric]) for split, t in
                          (("train", read(f"train/{metric}")), ("validation", read(f"eval/{metric}")))}
    lr = read("train/learning_rate")
    panels["learning rate"] = {"learning rate": (lr["step"] + 1, lr["learning_rate"])}
    plots.lines(panels, path, "Training curves")


def feature_maps(model, image: np.ndarray, path: Path) -> None:
    import keras
    names = [layer.name for layer in model.layers if layer.name.startswith("relu1_")]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(image[None], verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    plots.feature_maps({n: o[0] for n, o in zip(names, outs)}, image, path)


def evaluate(model, frame: pd.DataFrame, out: Path, live_dir: Path) -> dict:
    x, y = to_images(frame)
    probs = model.predict(x, batch_size=1024, verbose=0)
    pred = probs.argmax(axis=1)
    result = classification_metrics(y, probs)
    out.mkdir(parents=True, exist_ok=True)

    write_rows(out / "confusion.csv", ["actual", "predicted"], zip(y.tolist(), pred.tolist()))
    plots.confusion(skm.confusion_matrix(y, pred, labels=range(10)), out / "confusion_matrix.png")
    roc, pr = one_vs_rest(y, probs)
    plots.curves(roc, out / "roc.png", "roc")
    plots.curves(pr, out / "precision_recall.png", "pr")
    result["roc_auc"] = {str(c): v[2] for c, v in roc.items()}
    result["average_precision"] = {str(c): v[2] for c, v in pr.items()}
    onehot = np.eye(10, dtype=int)[y]          # micro-averaged curves for DVC's own plots
    fpr, tpr, _ = skm.roc_curve(onehot.ravel(), probs.ravel())
    prec, rec, _ = skm.precision_recall_curve(onehot.ravel(), probs.ravel())
    write_rows(out / "roc.csv", ["fpr", "tpr"], thin(fpr, tpr, points=500))   # small CSVs
    write_rows(out / "precision_recall.csv", ["recall", "precision"], thin(rec, prec, points=500))

    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]])][:WORST]
    plots.digit_grid(x[worst], [f"true {y[i]} pred {pred[i]}\np={probs[i, pred[i]]:.3f}" for i in worst],
                     out / "confident_errors.png", title="Most confidently wrong validation images")
    if (live_dir / "plots/metrics").exists():
        training_curves(live_dir, out / "training_curves.png")
    feature_maps(model, x[0], out / "feature_maps.png")
    return result


def main() -> None:
    from tasks import model as model_mod
    model = model_mod.load(paths.MODEL)
    with atomic_path(paths.EVAL_PLOTS, directory=True) as tmp:
        result = evaluate(model, pd.read_parquet(paths.SPLIT_VAL), tmp, paths.DVCLIVE_DIR)
    write_json(paths.EVALUATE_METRICS, result)
    print(f"evaluate: validation accuracy {result['accuracy']:.4f}, {result['errors']} errors of "
          f"{result['n']}, macro F1 {result['macro_f1']:.4f}")


if __name__ == "__main__":
    run_stage(main)
