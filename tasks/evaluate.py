"""Stage evaluate: the ensemble on the validation split -> metrics/evaluate.json (headline),
metrics/details/evaluate.json (per class, per member, calibration) and plots.

Metrics of the ensemble as submitted (its members and the TTA views of params.yaml): accuracy,
log loss, macro F1, and per-class precision/recall/F1/support (the classification report of seeds
003/004). Under "ensemble": each member's accuracy, and the ensemble's without and with TTA (with
the configured views, or all views when none are configured), so the TTA setting is chosen on
validation. Under "calibration": ECE, MCE, Brier score and NLL before and after temperature
scaling (see calibrate), and the temperature that predict applies when params say so. Plots (PNG,
plus CSV for DVC where DVC can draw them): the per-class table (per_class.csv), confusion matrix, one-vs-rest
ROC and precision-recall curves with AUC, the reliability diagram, the most confidently wrong images, every member's
training curves, and the first member's first-layer feature maps for one image.
"""
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from digits import paths
from digits.cli import run_stage
from digits.io import atomic_path, thin, to_images, write_json, write_rows
from tasks import plots

WORST = 20                  # confidently wrong images shown


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log loss, macro F1, the per-class report for labels 0..9 and the confused pairs."""
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
        "confused_pairs": confused_pairs(y_true, pred),
    }


def confused_pairs(y_true: np.ndarray, pred: np.ndarray) -> list:
    """[actual, predicted, count] of every misclassified pair, most frequent first (ties: by digits)."""
    cm = skm.confusion_matrix(y_true, pred, labels=range(10))
    np.fill_diagonal(cm, 0)
    pairs = [[int(a), int(b), int(cm[a, b])] for a, b in zip(*np.nonzero(cm))]
    return sorted(pairs, key=lambda x: (-x[2], x[0], x[1]))


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


def training_curves(live_dirs: dict, path: Path) -> None:
    """Loss, accuracy and learning rate per epoch of every member, from DVCLive's files."""
    panels = {"loss": {}, "accuracy": {}, "learning rate": {}}
    for name, live in live_dirs.items():
        read = lambda metric: pd.read_csv(live / "plots/metrics" / f"{metric}.tsv", sep="\t")
        tag = f"{name} " if len(live_dirs) > 1 else ""
        for metric in ("loss", "accuracy"):
            for split, prefix in (("train", "train"), ("validation", "eval")):
                t = read(f"{prefix}/{metric}")
                panels[metric][f"{tag}{split}"] = (t["step"] + 1, t[metric])
        lr = read("train/learning_rate")
        panels["learning rate"][f"{tag}learning rate"] = (lr["step"] + 1, lr["learning_rate"])
    plots.lines(panels, path, "Training curves")


def feature_maps(model, image: np.ndarray, path: Path) -> None:
    import keras
    names = [layer.name for layer in model.layers if layer.name.startswith("relu1_")]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(image[None], verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    plots.feature_maps({n: o[0] for n, o in zip(names, outs)}, image, path)


def calibrate(probs: np.ndarray, y: np.ndarray, members: dict, out: Path) -> dict:
    """Calibration of the ensemble (and of each member when there are several): ECE, MCE, Brier,
    NLL, and temperature scaling fitted on the even rows of the split, measured on the odd rows
    (so the "after" figures are not taken on what the temperature was fitted on); the reliability
    diagram of the odd rows (PNG and CSV for DVC)."""
    from tasks import calibration
    fit, held = slice(0, None, 2), slice(1, None, 2)
    temperature = calibration.fit_temperature(probs[fit], y[fit])
    scaled = calibration.apply_temperature(probs, temperature)
    rows = calibration.reliability(probs[held], y[held])
    write_rows(out / "reliability.csv", ["bin_lower", "bin_upper", "confidence", "accuracy", "count"], rows)
    plots.reliability(rows, out / "reliability.png", f"Reliability, ensemble of {len(members)} "
                                                      f"({len(y[held]):,} held-out validation images)")
    result = {"temperature": temperature, "fitted_on": "even rows of the validation split",
              "measured_on": "odd rows", "before": calibration.summary(probs[held], y[held]),
              "after": calibration.summary(scaled[held], y[held])}
    if len(members) > 1:
        result["members"] = {name: calibration.summary(p[held], y[held]) for name, p in members.items()}
    return result


def evaluate(models: dict, frame: pd.DataFrame, out: Path, live_dirs: dict, tta=()) -> dict:
    """Metrics and plots of the ensemble {member: model} on `frame`, written under `out`."""
    from digits import ensemble
    x, y = to_images(frame)
    measured_views = tuple(tta) or ensemble.TTA_VIEWS
    per_view = ensemble.view_probabilities(models, x, measured_views)   # one pass per member and view
    members = {name: ps[0] for name, ps in per_view.items()}           # the images themselves
    plain = ensemble.combine(list(members.values()))
    with_tta = ensemble.combine([ensemble.combine(ps) for ps in per_view.values()])
    probs = with_tta if tta else plain
    pred = probs.argmax(axis=1)
    result = classification_metrics(y, probs)
    result["ensemble"] = {
        "size": len(models), "tta": list(tta),
        "members": {name: float((p.argmax(axis=1) == y).mean()) for name, p in members.items()},
        "accuracy_without_tta": float((plain.argmax(axis=1) == y).mean()),
        "accuracy_with_tta": float((with_tta.argmax(axis=1) == y).mean()), "tta_measured": list(measured_views)}
    out.mkdir(parents=True, exist_ok=True)
    result["calibration"] = calibrate(probs, y, members, out)
    write_rows(out / "confusion.csv", ["actual", "predicted"], zip(y.tolist(), pred.tolist()))
    plots.confusion(skm.confusion_matrix(y, pred, labels=range(10)), out / "confusion_matrix.png")
    roc, pr = one_vs_rest(y, probs)
    plots.curves(roc, out / "roc.png", "roc")
    plots.curves(pr, out / "precision_recall.png", "pr")
    result["roc_auc"] = {str(c): v[2] for c, v in roc.items()}
    result["average_precision"] = {str(c): v[2] for c, v in pr.items()}
    write_rows(out / "per_class.csv", ["digit", "precision", "recall", "f1", "support", "roc_auc", "average_precision"],
               [[c, v["precision"], v["recall"], v["f1"], v["support"], result["roc_auc"][c],
                 result["average_precision"][c]] for c, v in result["per_class"].items()])
    onehot = np.eye(10, dtype=int)[y]          # micro-averaged curves for DVC's own plots
    fpr, tpr, _ = skm.roc_curve(onehot.ravel(), probs.ravel())
    prec, rec, _ = skm.precision_recall_curve(onehot.ravel(), probs.ravel())
    write_rows(out / "roc.csv", ["fpr", "tpr"], thin(fpr, tpr, points=500))   # small CSVs
    write_rows(out / "precision_recall.csv", ["recall", "precision"], thin(rec, prec, points=500))

    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]])][:WORST]
    plots.digit_grid(x[worst], [f"true {y[i]} pred {pred[i]}\np={probs[i, pred[i]]:.3f}" for i in worst],
                     out / "confident_errors.png", title="Most confidently wrong validation images "
                                                         f"(ensemble of {len(models)})")
    curves = {name: d for name, d in live_dirs.items() if (d / "plots/metrics").exists()}
    if curves:
        training_curves(curves, out / "training_curves.png")
    feature_maps(next(iter(models.values())), x[0], out / "feature_maps.png")
    return result


def headline(result: dict) -> dict:
    """The figures of metrics/evaluate.json: accuracy, errors, loss, the ensemble's size and accuracy,
    its calibration error and the temperature predict applies (the rest is in metrics/details/)."""
    e, c = result["ensemble"], result["calibration"]
    return {"accuracy": result["accuracy"], "errors": result["errors"], "loss": result["loss"],
            "ensemble": {"size": e["size"], "accuracy_with_tta": e["accuracy_with_tta"]},
            "calibration": {"ece": c["before"]["ece"], "temperature": c["temperature"]}}


def main() -> None:
    from digits import ensemble
    from digits import params as params_mod
    p = params_mod.load()
    models = ensemble.load(ensemble.model_files(p.ensemble.members))
    live_dirs = {name: paths.member(name).dvclive for name in models}
    with atomic_path(paths.EVAL_PLOTS, directory=True) as tmp:
        result = evaluate(models, pd.read_parquet(paths.SPLIT_VAL), tmp, live_dirs, p.ensemble.tta)
    write_json(paths.EVALUATE_DETAILS, result)
    write_json(paths.EVALUATE_METRICS, headline(result))
    e = result["ensemble"]
    print(f"evaluate: validation accuracy {result['accuracy']:.4f}, {result['errors']} errors of "
          f"{result['n']}, macro F1 {result['macro_f1']:.4f}; {e['size']} member(s) "
          f"{', '.join(f'{k} {v:.4f}' for k, v in e['members'].items())}; ensemble without TTA "
          f"{e['accuracy_without_tta']:.4f}, with TTA ({'+'.join(e['tta_measured'])}) {e['accuracy_with_tta']:.4f}")


if __name__ == "__main__":
    run_stage(main)
