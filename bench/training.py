"""Training benchmark: one row per preset, seed, machine and oneDNN setting.

    python -m bench --only training                                  # quick, seeds 42,1,2
    python -m bench --only training --presets quick,long --seeds 42
    DIGITS_ONEDNN=off python -m bench --only training --seeds 42     # the other oneDNN setting
    python -m bench --only training --presets wide --data all          # trained on all 60,000 images

Each member trains as the pipeline's train@<member> stage does (tasks.train.train, same
fingerprint), into bench/work/<preset>-<seed>/, shared with bench.ensemble: resumable, and a
member the pipeline or the ensemble benchmark already trained with the same settings is reused.
With $DIGITS_ONEDNN or $TF_ENABLE_ONEDNN_OPTS set, members train into
bench/work/<preset>-<seed>-onednn-<on|off>/ instead, so each row's speed is its own setting's.
A row: images/s, train and CPU seconds of the epochs, validation accuracy (the model kept) and
test accuracy on the answer key (reported, never used to choose), of the model kept and of the
last epoch's. Rows merge into bench/results/training.json by (preset, seed, machine, oneDNN, data);
the table adds each preset's mean.

--data all trains on the training and validation splits together (all 60,000 images), into
bench/work/<preset>-<seed>-all/, with the preset's schedule as fixed on the split and no model
selection: the last epoch is the model, and the row has no validation accuracy (the validation
images were trained on; they are still passed to Keras, so its per-epoch log stays the same shape).
Its answer-key score is comparable with the split rows' last-epoch score, same preset and seed.
"""
import os
import time
from pathlib import Path

from bench import ROOT, machine, merge_rows, table

RESULTS = ROOT / "bench/results/training.json"


def work_folder(preset: str, seed: int, requested: bool | None, data: str = "split") -> Path:
    """Where a member trains: the ensemble benchmark's folder, unless a oneDNN setting was asked
    for (`requested`: tasks.device.onednn_request, read before set_onednn writes its choice) or it
    trains on all the data."""
    from bench.ensemble import WORK
    suffix = "" if requested is None else f"-onednn-{'on' if requested else 'off'}"
    return WORK / f"{preset}-{seed}{suffix}{'-all' if data == 'all' else ''}"


def settle_onednn(environ=os.environ) -> bool | None:
    """The user's oneDNN request, then set_onednn as the train stage does (before TensorFlow)."""
    from tasks import device
    requested = device.onednn_request(environ)
    device.set_onednn(environ=environ)
    return requested


def merge(rows: list, path: Path = RESULTS) -> list:
    """training.json's rows with `rows` replacing those of the same machine, oneDNN, preset, seed and data."""
    return merge_rows(path, rows, lambda r: (r["machine"], r["onednn"], r["preset"], r["seed"], r.get("data", "split")))


def summary(rows: list) -> list:
    """One line per (machine, oneDNN, preset, data) with two or more seeds: the means over those
    seeds (validation only where every row has one)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["machine"], r["onednn"], r["preset"], r.get("data", "split")), []).append(r)
    mean = lambda rs, k: None if any(r.get(k) is None for r in rs) else sum(r[k] for r in rs) / len(rs)
    rounded = lambda x, n: None if x is None else round(x, n)
    return [{"machine": m, "onednn": o, "preset": p, "data": d, "seeds": [r["seed"] for r in rs],
             "val_accuracy": rounded(mean(rs, "val_accuracy"), 5), "test_accuracy": round(mean(rs, "test_accuracy"), 5),
             "test_accuracy_last": rounded(mean(rs, "test_accuracy_last"), 5),
             "train_seconds": round(mean(rs, "train_seconds"), 1)}
            for (m, o, p, d), rs in groups.items() if len(rs) > 1]


def bench_training(presets: list, seeds: list, data: str = "split") -> None:
    requested = settle_onednn()
    import pandas as pd

    from bench.ensemble import test_set, train_member
    from digits import ensemble, params, paths
    from digits import model as model_mod
    from tasks import device
    p = params.load(ROOT / "params.yaml")
    tr, va = pd.read_parquet(ROOT / paths.SPLIT_TRAIN), pd.read_parquet(ROOT / paths.SPLIT_VAL)
    if data == "all":
        tr = pd.concat([tr, va], ignore_index=True)
    xt, yt = test_set()
    errors = lambda net: int((ensemble.predict({"m": net}, xt).argmax(axis=1) != yt).sum())
    rows = []
    for preset in presets:
        for seed in seeds:
            work = work_folder(preset, seed, requested, data)
            m = train_member(p, preset, seed, tr, va, work)
            state = m["state"]
            last = errors(model_mod.load(work / "checkpoints" / state["last"]))
            kept = errors(m["model"]) if data == "split" else last
            rows.append({"preset": preset, "seed": seed, "machine": machine(),
                         "onednn": device.onednn_line().split(" (")[0].removeprefix("oneDNN: "), "data": data,
                         "epochs": state["epoch"], "train_images": len(tr),
                         "images_per_second": round(len(tr) * state["epoch"] / state["train_seconds"], 1),
                         "train_seconds": round(state["train_seconds"], 1),
                         "cpu_seconds": round(state["cpu_seconds"], 1),
                         "val_accuracy": round(m["val_accuracy"], 5) if data == "split" else None,
                         "test_accuracy": round(1 - kept / len(yt), 5), "test_errors": kept,
                         "test_accuracy_last": round(1 - last / len(yt), 5), "test_errors_last": last,
                         "date": time.strftime("%Y-%m-%d")})
    merged = merge(rows)
    pct = lambda x, digits=2: "-" if x is None else f"{x:.{digits}%}"
    table(f"Training on {len(tr):,} images ({data}), validation {len(va):,}, test (answer key) {len(yt):,} "
          f"({machine()})",
          ["preset", "seed", "oneDNN", "epochs", "images/s", "train s", "CPU s", "val acc", "test acc",
           "test errors", "last epoch: test acc"],
          [[r["preset"], r["seed"], r["onednn"], r["epochs"], f"{r['images_per_second']:,.0f}",
            f"{r['train_seconds']:,.0f}", f"{r['cpu_seconds']:,.0f}", pct(r["val_accuracy"]),
            pct(r["test_accuracy"]), r["test_errors"], pct(r["test_accuracy_last"])] for r in rows])
    means = [s for s in summary(merged) if s["machine"] == machine()]
    if means:
        table("Means over the seeds in bench/results/training.json (this machine)",
              ["preset", "oneDNN", "data", "seeds", "val acc", "test acc", "last epoch: test acc", "train s"],
              [[s["preset"], s["onednn"], s["data"], ",".join(map(str, s["seeds"])), pct(s["val_accuracy"], 3),
                pct(s["test_accuracy"], 3), pct(s["test_accuracy_last"], 3), f"{s['train_seconds']:,.0f}"]
               for s in means])
    print(f"written: {RESULTS.relative_to(ROOT)} ({len(merged)} rows)")
