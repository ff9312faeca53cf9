"""Stage robustness: accuracy of the CNN and of some baselines on validation images under the
MNIST-C-style corruptions of tasks/corruptions.py, against their accuracy on the clean images,
on two paths:

- the model path: the corrupted 28 x 28 images fed to the model as they are;
- the recognizer path: the same images (the first `robustness.recognizer_images`) written as PNG
  files and read back by the CLI's own code (digits/recognize.py: decoding, the shared
  preprocessing, the ensemble); an image it finds no digit in counts as wrong.

The first `robustness.images` validation images are corrupted once each, seeded by
`robustness.seed`; "cnn" is the pipeline's ensemble with its TTA setting (digits/ensemble.py;
with several members each is also measured alone, "cnn <member>"), and the baselines
named in `robustness.baselines` are refitted exactly as stage baselines fits them (same seed,
scaling and subsample). "relative_error" is the mean error over the corruptions divided by the
clean error: how many times more mistakes a model makes on corrupted digits.
Writes metrics/robustness.json (the CNN's mean and worst accuracy on each path),
metrics/details/robustness.json (every model and corruption) and plots/robustness/ (accuracy.csv
and .png for the model path, recognizer.csv, examples.png).
"""
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from digits import ensemble, paths, recognize
from digits import params as params_mod
from digits.cli import run_stage
from digits.io import atomic_path, to_images, write_json, write_rows
from tasks import classical, corruptions, plots

CNN = "cnn"
CLEAN = "clean"


def corrupted(x, seed: int) -> dict:
    """{"clean": x, corruption: x corrupted, ...} in the order of corruptions.CORRUPTIONS."""
    return {CLEAN: x} | {name: corruptions.corrupt(x, name, seed) for name in corruptions.CORRUPTIONS}


def measure(classifiers: dict, sets: dict, y, log=print) -> dict:
    """Accuracy of each classifier (uint8 images [n, 28, 28] -> labels [n]) on each set of images.

    `sets` is `corrupted`'s result; the answer is the "models" part of metrics/robustness.json.
    relative_error is None where the clean error is 0 (the ratio has no value).
    """
    y = np.asarray(y)
    out = {}
    for name, classify in classifiers.items():
        t0 = time.perf_counter()
        acc = {s: float(np.mean(np.asarray(classify(images)) == y)) for s, images in sets.items()}
        clean = acc.pop(CLEAN)
        mean = float(np.mean(list(acc.values())))
        out[name] = {"clean": clean, "mean_corrupted": mean,
                     "relative_error": (1 - mean) / (1 - clean) if clean < 1 else None,
                     "corruptions": acc}
        log(f"robustness {name}: clean {clean:.4f}, corrupted {mean:.4f} on average, "
            f"worst {min(acc, key=acc.get)} {min(acc.values()):.4f} ({time.perf_counter() - t0:.1f} s)")
    return out


def fit_baselines(names, models: dict, x, y, seed: int, log=print) -> dict:
    """name -> classifier of uint8 images, each fitted on (x flat, y) as stage baselines fits it."""
    out = {}
    for name in names:
        cfg = models[name]
        t0 = time.perf_counter()
        model = classical.make_model(name, cfg, seed).fit(*classical.subsample(x, y, cfg.train_size, seed))
        log(f"robustness {name}: fitted in {time.perf_counter() - t0:.1f} s")
        out[name] = lambda images, m=model: m.predict(np.asarray(images).reshape(len(images), -1))
    return out


def through_recognizer(predictor):
    """A classifier of uint8 images [n, 28, 28] that hands them to the recognizer as PNG files:
    the digits it prints, -1 for a file it found no digit in."""
    from PIL import Image

    def classify(images):
        with tempfile.TemporaryDirectory() as tmp:
            files = [Path(tmp) / f"{i:05d}.png" for i in range(len(images))]
            for f, image in zip(files, images):
                Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")
            out, err = io.StringIO(), io.StringIO()
            recognize.recognize(files, predictor, as_json=True, out=out, err=err)
        read = {r["path"]: r["digit"] for r in map(json.loads, out.getvalue().splitlines())}
        return np.array([read.get(str(f), -1) for f in files])
    return classify


def accuracy_table(models: dict, names) -> dict:
    """{corruption: {model: accuracy}}, clean first."""
    return {s: {m: (r["clean"] if s == CLEAN else r["corruptions"][s]) for m, r in models.items()} for s in names}


def write_plots(out, models: dict, sets: dict, via: dict) -> None:
    table = accuracy_table(models, sets)
    for name, rows in (("accuracy.csv", table), ("recognizer.csv", accuracy_table(via, sets))):
        write_rows(out / name, ["corruption", "model", "accuracy"],
                   [[s, m, acc] for s, row in rows.items() for m, acc in row.items()])
    plots.grouped_bars(table, out / "accuracy.png", f"Accuracy under corruptions ({len(sets[CLEAN]):,} "
                       "validation images)", "accuracy")
    plots.digit_grid([images[0] for images in sets.values()], list(sets), out / "examples.png", cols=9,
                     title="One validation image under every corruption")


def main() -> None:
    p = params_mod.load()
    xv, yv = to_images(pd.read_parquet(paths.SPLIT_VAL))
    n = min(p.robustness.images or len(yv), len(yv))
    xv, yv = xv[:n].reshape(n, *xv.shape[1:3]), yv[:n]
    x, y = classical.flat(pd.read_parquet(paths.SPLIT_TRAIN))
    models = ensemble.load(ensemble.model_files(p.ensemble.members))
    classifiers = {CNN: lambda images: ensemble.predict(models, images, p.ensemble.tta).argmax(axis=1)}
    if len(models) > 1:                     # the ensemble as CNN, and each member alone beside it
        classifiers |= {f"{CNN} {name}": (lambda images, m=m: ensemble.predict({name: m}, images).argmax(axis=1))
                        for name, m in models.items()}
    classifiers |= fit_baselines(p.robustness.baselines, p.baselines.models, x, y, p.base.seed)
    sets = corrupted(xv, p.robustness.seed)
    results = measure(classifiers, sets, yv)
    m = min(p.robustness.recognizer_images or n, n)
    predictor = recognize.Predictor(models, ensemble.model_files(p.ensemble.members), p.ensemble.tta)
    via = measure({CNN: through_recognizer(predictor)}, {k: v[:m] for k, v in sets.items()}, yv[:m],
                  log=lambda line: print(line.replace("robustness", "robustness (recognizer)", 1)))
    with atomic_path(paths.ROBUSTNESS_PLOTS, directory=True) as tmp:
        write_plots(tmp, results, sets, via)
    details = {"images": n, "models": results, "recognizer": {"images": m, "models": via}}
    write_json(paths.ROBUSTNESS_DETAILS, details)
    write_json(paths.ROBUSTNESS_METRICS, headline(details))


def headline(details: dict) -> dict:
    """metrics/robustness.json: the CNN's mean and worst accuracy over the corruptions, on each path."""
    out = {}
    for path, models in (("model", details["models"]), ("recognizer", details["recognizer"]["models"])):
        cnn = models[CNN]
        out[path] = {"mean_corrupted": cnn["mean_corrupted"], "worst": min(cnn["corruptions"].values())}
    return out


if __name__ == "__main__":
    run_stage(main)
