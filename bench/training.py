"""Training benchmark: one row per preset, seed, machine and oneDNN setting.

    python -m bench --only training                                  # quick, seeds 42,1,2
    python -m bench --only training --presets quick,long --seeds 42
    DIGITS_ONEDNN=off python -m bench --only training --seeds 42     # the other oneDNN setting

Each member trains as the pipeline's train@<member> stage does (tasks.train.train, same
fingerprint), into bench/work/<preset>-<seed>/, shared with bench.ensemble: resumable, and a
member the pipeline or the ensemble benchmark already trained with the same settings is reused.
With $DIGITS_ONEDNN or $TF_ENABLE_ONEDNN_OPTS set, members train into
bench/work/<preset>-<seed>-onednn-<on|off>/ instead, so each row's speed is its own setting's.
A row: images/s, train and CPU seconds of the epochs, validation accuracy (the model kept) and
test accuracy on the answer key (reported, never used to choose). Rows merge into
bench/results/training.json by (preset, seed, machine, oneDNN); the table adds each preset's mean.
"""
import os
import time
from pathlib import Path

from bench import ROOT, machine, merge_rows, table

RESULTS = ROOT / "bench/results/training.json"


def work_folder(preset: str, seed: int, requested: bool | None) -> Path:
    """Where a member trains: the ensemble benchmark's folder, unless a oneDNN setting was asked
    for (`requested`: tasks.device.onednn_request, read before set_onednn writes its choice)."""
    from bench.ensemble import WORK
    suffix = "" if requested is None else f"-onednn-{'on' if requested else 'off'}"
    return WORK / f"{preset}-{seed}{suffix}"


def settle_onednn(environ=os.environ) -> bool | None:
    """The user's oneDNN request, then set_onednn as the train stage does (before TensorFlow)."""
    from tasks import device
    requested = device.onednn_request(environ)
    device.set_onednn(environ=environ)
    return requested


def merge(rows: list, path: Path = RESULTS) -> list:
    """training.json's rows with `rows` replacing those of the same machine, oneDNN, preset and seed."""
    return merge_rows(path, rows, lambda r: (r["machine"], r["onednn"], r["preset"], r["seed"]))


def summary(rows: list) -> list:
    """One line per (machine, oneDNN, preset) with two or more seeds: the means over those seeds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["machine"], r["onednn"], r["preset"]), []).append(r)
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
    return [{"machine": m, "onednn": o, "preset": p, "seeds": [r["seed"] for r in rs],
             "val_accuracy": round(mean(rs, "val_accuracy"), 5), "test_accuracy": round(mean(rs, "test_accuracy"), 5),
             "train_seconds": round(mean(rs, "train_seconds"), 1)}
            for (m, o, p), rs in groups.items() if len(rs) > 1]


def bench_training(presets: list, seeds: list) -> None:
    requested = settle_onednn()
    import pandas as pd

    from bench.ensemble import test_set, train_member
    from tasks import device, ensemble, params, paths
    p = params.load(ROOT / "params.yaml")
    tr, va = pd.read_parquet(ROOT / paths.SPLIT_TRAIN), pd.read_parquet(ROOT / paths.SPLIT_VAL)
    xt, yt = test_set()
    rows = []
    for preset in presets:
        for seed in seeds:
            m = train_member(p, preset, seed, tr, va, work_folder(preset, seed, requested))
            errors = int((ensemble.predict({"m": m["model"]}, xt).argmax(axis=1) != yt).sum())
            state = m["state"]
            rows.append({"preset": preset, "seed": seed, "machine": machine(),
                         "onednn": device.onednn_line().split(" (")[0].removeprefix("oneDNN: "),
                         "epochs": state["epoch"], "train_images": len(tr),
                         "images_per_second": round(len(tr) * state["epoch"] / state["train_seconds"], 1),
                         "train_seconds": round(state["train_seconds"], 1),
                         "cpu_seconds": round(state["cpu_seconds"], 1),
                         "val_accuracy": round(m["val_accuracy"], 5),
                         "test_accuracy": round(1 - errors / len(yt), 5), "test_errors": errors,
                         "date": time.strftime("%Y-%m-%d")})
    merged = merge(rows)
    table(f"Training, {len(tr):,} images, validation {len(va):,}, test (answer key) {len(yt):,} ({machine()})",
          ["preset", "seed", "oneDNN", "epochs", "images/s", "train s", "CPU s", "val acc", "test acc", "test errors"],
          [[r["preset"], r["seed"], r["onednn"], r["epochs"], f"{r['images_per_second']:,.0f}",
            f"{r['train_seconds']:,.0f}", f"{r['cpu_seconds']:,.0f}", f"{r['val_accuracy']:.2%}",
            f"{r['test_accuracy']:.2%}", r["test_errors"]] for r in rows])
    means = [s for s in summary(merged) if s["machine"] == machine()]
    if means:
        table("Means over the seeds in bench/results/training.json (this machine)",
              ["preset", "oneDNN", "seeds", "val acc", "test acc", "train s"],
              [[s["preset"], s["onednn"], ",".join(map(str, s["seeds"])), f"{s['val_accuracy']:.3%}",
                f"{s['test_accuracy']:.3%}", f"{s['train_seconds']:,.0f}"] for s in means])
    print(f"written: {RESULTS.relative_to(ROOT)} ({len(merged)} rows)")
