"""Ensemble benchmark: accuracy against compute for 1, 3, 5 members, with and without TTA.

    python -m bench.ensemble                                   # quick members, seeds 42,1,2,3,4
    python -m bench.ensemble --seeds 42,1,2 --sizes 1,3        # fewer members first; re-run to add
    python -m bench.ensemble --preset lite --seeds 42,1,2 --sizes 1,3
    python -m bench.ensemble --sizes 1,5 --robustness          # also accuracy under corruptions

Members train on the full split exactly as the pipeline's train@<member> stages do
(tasks.train.train, same fingerprint), into bench/work/<preset>-<seed>/ (resumable: a killed or
repeated run continues; a member the pipeline already trained with the same settings is copied
from checkpoints/). For the first k members the table gives the ensemble's validation accuracy
and its test accuracy on the answer key (reported only: nothing here is chosen on it), CPU and
wall seconds (training of the k members plus their inference on validation and test images).
Rows are merged into bench/results/ensemble.json, keyed by (machine, preset, members, tta).

--robustness also runs the robustness stage's measurement (tasks/robustness.py: the first
robustness.images validation images under every corruption, seeded by robustness.seed) for each
ensemble size without and with TTA, and writes bench/results/ensemble_robustness.json: does the ensemble,
or TTA, make the CNN more robust?
"""
import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bench import ROOT, machine, merge_rows, table

WORK = ROOT / "bench/work"
RESULTS = ROOT / "bench/results/ensemble.json"
ROBUSTNESS = ROOT / "bench/results/ensemble_robustness.json"


def test_set():
    """The test images and their answer-key labels (reported, never used to choose)."""
    import pandas as pd

    from digits import paths
    from digits.io import to_images
    xt, _ = to_images(pd.read_parquet(ROOT / paths.TEST_PARQUET))
    return xt, pd.read_csv(ROOT / paths.ANSWER_KEY)["Label"].to_numpy()


def train_member(p, preset: str, seed: int, tr, va, work: Path | None = None) -> dict:
    """Train (or resume, or reload) one member in `work` (default bench/work/<preset>-<seed>);
    its train record, checkpoint state and the loaded best model."""
    from digits import paths
    from tasks import train
    name = f"{preset}-{seed}"
    cfg = p.train.presets[preset]
    fp = train.fingerprint(cfg, seed, [paths.SPLIT_TRAIN, paths.SPLIT_VAL])
    pipeline_ckpt, work = ROOT / paths.member(name).checkpoints, work or WORK / name
    reuse = work == WORK / name            # another folder (an explicit oneDNN setting) trains itself
    if reuse and not train.Checkpoint(work / "checkpoints", fp).load() and train.Checkpoint(pipeline_ckpt, fp).load():
        shutil.copytree(pipeline_ckpt, work / "checkpoints", dirs_exist_ok=True)
        print(f"{name}: copied the pipeline's finished checkpoint ({pipeline_ckpt})", flush=True)
    print(f"{name}: training (or resuming) into {work}", flush=True)
    model, metrics, state = train.train(cfg, seed, tr, va, fp, work / "checkpoints", work / "dvclive")
    return {"name": name, "model": model, "val_accuracy": metrics["val_accuracy"], "state": state, "fingerprint": fp,
            "train_seconds": state["train_seconds"], "train_cpu_seconds": state["cpu_seconds"]}


def member_outputs(member: dict, xv, xt, tta: bool) -> dict:
    """Validation and test probabilities of one member (cached in its work folder for the
    checkpoint's fingerprint: a retrained member is predicted again) and their cost."""
    from digits import ensemble
    cache = WORK / member["name"] / f"probabilities-{'tta' if tta else 'plain'}.npz"
    if cache.exists() and cache.with_suffix(".json").exists():
        cost = json.loads(cache.with_suffix(".json").read_text())
        if cost.pop("fingerprint", None) == member["fingerprint"]:
            saved = np.load(cache)
            return {k: saved[k] for k in saved.files} | cost
    views = ensemble.TTA_VIEWS if tta else ()
    w0, c0 = time.perf_counter(), time.process_time()
    one = {"m": member["model"]}
    val, test = ensemble.predict(one, xv, views), ensemble.predict(one, xt, views)
    cost = {"infer_seconds": time.perf_counter() - w0, "infer_cpu_seconds": time.process_time() - c0}
    np.savez(cache, val=val, test=test)
    cache.with_suffix(".json").write_text(json.dumps(cost | {"fingerprint": member["fingerprint"]}))
    return {"val": val, "test": test} | cost


def merge(rows: list, path: Path = RESULTS) -> list:
    """bench/results/ensemble.json's rows with `rows` replacing those of the same (machine,
    preset, members, tta). Each row names its machine (a file that named one machine for all
    its rows has that machine written into each)."""
    doc = json.loads(path.read_text()) if path.exists() else {"rows": []}
    old = [{"machine": doc.get("machine")} | r for r in doc["rows"]]
    return merge_rows(path, rows, lambda r: (r["machine"], r["preset"], r["members"], r["tta"]), old)


def robustness(p, members: list, sizes: list, xv, yv) -> None:
    """Accuracy under the corruptions of the first k members, without and with TTA."""
    from digits import ensemble
    from tasks import robustness as rb
    n = p.robustness.images or len(yv)
    sets = rb.corrupted(xv[:n].reshape(-1, 28, 28), p.robustness.seed)
    classifiers = {}
    for k in sizes:
        models = {m["name"]: m["model"] for m in members[:k]}
        for tta in (False, True):
            views = ensemble.TTA_VIEWS if tta else ()
            classifiers[f"{k} member(s){', TTA' if tta else ''}"] = (
                lambda images, models=models, views=views: ensemble.predict(models, images, views).argmax(axis=1))
    result = rb.measure(classifiers, sets, yv[:n])
    ROBUSTNESS.write_text(json.dumps({"machine": machine(), "images": n, "seed": p.robustness.seed,
                                      "members": [m["name"] for m in members[:max(sizes)]], "models": result}, indent=1) + "\n")
    worst = sorted(next(iter(result.values()))["corruptions"], key=lambda c: next(iter(result.values()))["corruptions"][c])[:4]
    table(f"Accuracy under corruptions, {n:,} validation images ({machine()})",
          ["ensemble", "clean", "mean corrupted", "error x clean"] + worst,
          [[name, f"{r['clean']:.4f}", f"{r['mean_corrupted']:.4f}",
            f"{r['relative_error']:.1f}" if r["relative_error"] else "-"] + [f"{r['corruptions'][c]:.4f}" for c in worst]
           for name, r in result.items()])
    print(f"written: {ROBUSTNESS.relative_to(ROOT)}")


def main() -> None:
    from tasks import device
    device.set_onednn()                   # as the train stage does, before TensorFlow is imported
    import pandas as pd

    from digits import ensemble, params, paths
    from digits.io import to_images
    ap = argparse.ArgumentParser(prog="python -m bench.ensemble", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seeds", default="42,1,2,3,4", help="member seeds, in order (default %(default)s)")
    ap.add_argument("--sizes", default="1,3,5", help="ensemble sizes: the first k members (default %(default)s)")
    ap.add_argument("--robustness", action="store_true", help="also accuracy under the corruptions, per size and TTA")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sizes = [int(k) for k in args.sizes.split(",")]
    if max(sizes) > len(seeds):
        ap.error(f"--sizes up to {max(sizes)} needs at least that many --seeds")
    os.chdir(ROOT)
    p = params.load()
    tr, va = pd.read_parquet(paths.SPLIT_TRAIN), pd.read_parquet(paths.SPLIT_VAL)
    xv, yv = to_images(va)
    xt, yt = test_set()
    print(f"machine: {machine()}; {len(tr):,} training, {len(va):,} validation, {len(xt):,} test images")
    members = [train_member(p, args.preset, s, tr, va) for s in seeds[:max(sizes)]]
    rows = []
    for tta in (False, True):
        outs = [member_outputs(m, xv, xt, tta) for m in members]
        for k in sizes:
            val = ensemble.combine([o["val"] for o in outs[:k]])
            test = ensemble.combine([o["test"] for o in outs[:k]])
            cost = lambda key, infer: sum(m[key] + o[infer] for m, o in zip(members[:k], outs[:k]))
            rows.append({"members": k, "preset": args.preset, "tta": tta, "machine": machine(),
                         "member_seeds": seeds[:k],
                         "member_val_accuracy": [round(m["val_accuracy"], 4) for m in members[:k]],
                         "val_accuracy": round(float((val.argmax(1) == yv).mean()), 4),
                         "test_accuracy": round(float((test.argmax(1) == yt).mean()), 4),
                         "test_errors": int((test.argmax(1) != yt).sum()),
                         "cpu_seconds": round(cost("train_cpu_seconds", "infer_cpu_seconds"), 1),
                         "wall_seconds": round(cost("train_seconds", "infer_seconds"), 1)})
    merged = merge(rows)
    table(f"Ensembles of {args.preset} members, seeds {args.seeds} ({machine()})",
          ["members", "TTA", "val acc", "test acc (key)", "test errors", "CPU s", "wall s"],
          [[r["members"], "yes" if r["tta"] else "no", f"{r['val_accuracy']:.2%}", f"{r['test_accuracy']:.2%}",
            r["test_errors"], f"{r['cpu_seconds']:,.0f}", f"{r['wall_seconds']:,.0f}"]
           for r in sorted(rows, key=lambda r: (r["members"], r["tta"]))])
    print(f"written: {RESULTS.relative_to(ROOT)} ({len(merged)} rows)")
    if args.robustness:
        robustness(p, members, sizes, xv, yv)


if __name__ == "__main__":
    main()
