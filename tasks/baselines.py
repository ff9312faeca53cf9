"""Stage baselines: the scikit-learn model zoo of seeds 000/002/004 on the CNN's split, and the
binary "is it a 5" detector analysis of seed 004.

Every model sees pixel/255 (the CNN's scaling), plus StandardScaler and/or PCA where that is the
standard practice for it; SVC and k-NN run on PCA features (and SVC on a subsample) so the
stage takes about a minute (53.7 s of fits and cross-validation on the 2-core Xeon with AVX-512,
docs/benchmarks.md), and the table says so. Writes metrics/baselines.json (headline figures),
metrics/details/baselines.json (every model and the detector) and plots/baselines/.
"""
import time

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import cross_val_predict

from digits import params as params_mod
from digits import paths
from digits.cli import run_stage
from digits.io import atomic_path, thin, write_json, write_rows
from tasks import plots
from tasks.classical import flat, make_model, subsample


def note(cfg: params_mod.Baseline) -> str:
    parts = ([f"PCA {cfg.pca}"] if cfg.pca else []) + (["standardized"] if cfg.standardize else [])
    parts += [f"subsample {cfg.train_size:,}"] if cfg.train_size else []
    return ", ".join(parts)


def zoo(x, y, xv, yv, models: dict, seed: int, log=print) -> dict:
    out = {}
    for name, cfg in models.items():
        xs, ys = subsample(x, y, cfg.train_size, seed)
        model = make_model(name, cfg, seed)
        t0 = time.perf_counter()
        model.fit(xs, ys)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(xv)
        out[name] = {"val_accuracy": float(skm.accuracy_score(yv, pred)), "fit_seconds": round(fit, 2),
                     "predict_seconds": round(time.perf_counter() - t0, 2), "train_size": int(len(ys)),
                     "note": note(cfg)}
        log(f"baseline {name}: {out[name]['val_accuracy']:.4f} (fit {fit:.1f} s on {len(ys):,})")
    return out


def detector(x, y, cfg: params_mod.Detector, seed: int):
    """Seed 004's binary detector: CV scores of a linear SGD 'is it a <digit>' model and a forest."""
    xs, ys = subsample(x, y, cfg.train_size, seed)
    xs = xs.astype(np.float32) / 255.0
    target = ys == cfg.digit
    if min(target.sum(), (~target).sum()) < cfg.folds:
        raise params_mod.ParamsError(
            f"params: 'baselines.detector.train_size' {cfg.train_size} gives {int(target.sum())} images of "
            f"{cfg.digit} and {int((~target).sum())} others: each needs at least "
            f"'baselines.detector.folds' ({cfg.folds}); raise train_size (0 = the whole split)")
    sgd = SGDClassifier(random_state=seed)
    scores = cross_val_predict(sgd, xs, target, cv=cfg.folds, method="decision_function")
    forest = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=-1)
    forest_scores = cross_val_predict(forest, xs, target, cv=cfg.folds, method="predict_proba")[:, 1]
    prec, rec, thr = skm.precision_recall_curve(target, scores)
    ok = np.flatnonzero(prec[:-1] >= cfg.precision)
    if not len(ok):
        raise params_mod.ParamsError(
            f"params: 'baselines.detector.precision' is {cfg.precision}, but no threshold of the detector "
            f"reaches it (at most {prec[:-1].max():.4f} on {len(ys):,} images); lower it")
    i = ok[0]                                # the lowest threshold that reaches the precision
    at = scores >= thr[i]
    result = {
        "digit": cfg.digit, "train_size": int(len(ys)), "folds": cfg.folds,
        "cv_precision": float(skm.precision_score(target, scores > 0)),
        "cv_recall": float(skm.recall_score(target, scores > 0)),
        "cv_f1": float(skm.f1_score(target, scores > 0)),
        "threshold": float(thr[i]), "requested_precision": cfg.precision,
        "precision_at_threshold": float(skm.precision_score(target, at)),
        "recall_at_threshold": float(skm.recall_score(target, at)),
        "sgd_roc_auc": float(skm.roc_auc_score(target, scores)),
        "forest_roc_auc": float(skm.roc_auc_score(target, forest_scores)),
    }
    curves = {"pr": (prec, rec, thr), "roc_sgd": skm.roc_curve(target, scores)[:2],
              "roc_forest": skm.roc_curve(target, forest_scores)[:2]}
    return result, curves


def write_plots(out, models: dict, det: dict, curves: dict) -> None:
    write_rows(out / "accuracy_vs_time.csv", ["model", "fit_seconds", "val_accuracy"],
              [[n, m["fit_seconds"], m["val_accuracy"]] for n, m in models.items()])
    plots.scatter({n: (m["fit_seconds"], m["val_accuracy"]) for n, m in models.items()},
                  out / "accuracy_vs_time.png", "Baselines: validation accuracy against fit time",
                  "fit seconds (log scale)", "validation accuracy")
    prec, rec, thr = curves["pr"]
    write_rows(out / "detector_pr.csv", ["threshold", "precision", "recall"], thin(thr, prec[:-1], rec[:-1], points=400))
    (fs, ts), (ff, tf) = curves["roc_sgd"], curves["roc_forest"]
    write_rows(out / "detector_roc.csv", ["model", "fpr", "tpr"],
              [["sgd", a, b] for a, b in thin(fs, ts, points=400)] +
              [["random_forest", a, b] for a, b in thin(ff, tf, points=400)])
    d = det["digit"]
    plots.lines({f"precision and recall against threshold ('is it a {d}')": {
                     "precision": (thr, prec[:-1]), "recall": (thr, rec[:-1]),
                     f"threshold for {det['requested_precision']:.0%} precision": ([det["threshold"]] * 2, [0, 1])},
                 "ROC": {f"SGD (AUC {det['sgd_roc_auc']:.4f})": (fs, ts),
                         f"random forest (AUC {det['forest_roc_auc']:.4f})": (ff, tf)}},
                out / "detector.png", f"Binary detector for the digit {d} ({det['folds']}-fold CV)", xlabel="")


def headline(models: dict) -> dict:
    """metrics/baselines.json: the best baseline and the fits' total time (the rest in metrics/details/)."""
    best = max(models, key=lambda name: models[name]["val_accuracy"])
    return {"best_model": best, "best_val_accuracy": models[best]["val_accuracy"],
            "fit_seconds": round(sum(m["fit_seconds"] for m in models.values()), 1)}


def main() -> None:
    p = params_mod.load()
    x, y = flat(pd.read_parquet(paths.SPLIT_TRAIN))
    xv, yv = flat(pd.read_parquet(paths.SPLIT_VAL))
    models = zoo(x, y, xv, yv, p.baselines.models, p.base.seed)
    det, curves = detector(x, y, p.baselines.detector, p.base.seed)
    with atomic_path(paths.BASELINE_PLOTS, directory=True) as tmp:
        write_plots(tmp, models, det, curves)
    write_json(paths.BASELINE_DETAILS, {"models": models, "detector": det})
    write_json(paths.BASELINE_METRICS, headline(models))
    print(f"detector '{det['digit']}': threshold {det['threshold']:.3f} gives precision "
          f"{det['precision_at_threshold']:.3f}, recall {det['recall_at_threshold']:.3f}")


if __name__ == "__main__":
    run_stage(main)
