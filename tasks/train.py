"""Stage train@<member>: one ensemble member, the augmented CNN of its preset and seed,
resumable, logged with DVCLive.   python -m tasks.train MEMBER

Writes models/<member>.keras (the epoch with the best validation accuracy),
metrics/members/<member>.json (headline figures; every figure in metrics/details/members/) and
per-epoch curves in dvclive/<member>/. Checkpoints every epoch to checkpoints/<member>/ (model
with optimizer state, so the schedule continues where it stopped, plus state.json); a killed run
continues from the last finished epoch when started again, and a finished one is not retrained.
The training rows are data/split/train.parquet's and the intake stage's accepted batches
(data/intake/train.parquet); only the validation split is used for model selection, and the answer
key is never read here.
"""
import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from digits import params as params_mod
from digits import paths
from digits.cli import DataError, run_stage
from digits.io import atomic_path, sha256, to_images, write_json
from digits.params import Preset
from tasks import device

STATE = "state.json"
# what metrics/members/<member>.json keeps: the figures compared across experiments and machines
HEADLINE = ("val_accuracy", "epochs", "train_seconds", "train_cpu_seconds", "images_per_second", "device", "machine")


def fingerprint(cfg: Preset, seed: int, data_files) -> str:
    """What a checkpoint was trained with (settings, data, training code); a checkpoint is
    resumed only if this matches, so an edit that makes DVC re-run the stage also retrains."""
    from digits import augment, model, schedules
    code = [sha256(f) for f in (__file__, model.__file__, augment.__file__, schedules.__file__)]
    blob = json.dumps([dataclasses.asdict(cfg), seed, [sha256(f) for f in data_files], code], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_optimizer(cfg: Preset, steps_per_epoch: int):
    import keras

    from digits import schedules
    o = cfg.optimizer
    lr = schedules.learning_rate(o, cfg.epochs, steps_per_epoch)
    wd = o.weight_decay or None
    optimizers = {
        "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=o.weight_decay),
        "adam": lambda: keras.optimizers.Adam(lr, weight_decay=wd),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, rho=0.9, epsilon=1e-8, weight_decay=wd),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd),
    }
    return optimizers[o.name]()


class Checkpoint:
    """Per-epoch checkpoint: the last model (with its optimizer), the best weights, and state.json.

    One epoch is saved in one atomic step: its model, and its weights when they are the best so
    far, are written under names of their own (last-<epoch>.keras, best-<epoch>.weights.h5), then
    state.json is replaced by a rename and names them; only then are files it no longer names
    removed. A kill at any moment leaves the previous epoch's checkpoint or the new one, whole."""

    def __init__(self, folder: Path, fp: str):
        self.folder, self.fp = Path(folder), fp
        self.state = {"fingerprint": fp, "epoch": 0, "history": [], "best_val_accuracy": -1.0,
                      "best_epoch": 0, "train_seconds": 0.0, "cpu_seconds": 0.0, "plateau": None,
                      "resumed_from": [], "last": None, "best": None}

    @property
    def last(self) -> Path:
        return self.folder / self.state["last"]

    @property
    def best(self) -> Path:
        return self.folder / self.state["best"]

    def load(self) -> bool:
        """True if a checkpoint of this very configuration exists (then self.state is its state)."""
        path = self.folder / STATE
        if not path.exists():
            return False
        state = json.loads(path.read_text())
        if state.get("fingerprint") != self.fp or not all(
                state.get(k) and (self.folder / state[k]).is_file() for k in ("last", "best")):
            return False
        self.state = state
        self.tidy()
        return True

    def save(self, model, logs: dict, epoch_seconds: float, epoch_cpu: float, plateau) -> None:
        s = json.loads(json.dumps(self.state))          # the new state; self.state changes at the commit
        s["epoch"] += 1
        s["train_seconds"] += epoch_seconds
        s["cpu_seconds"] += epoch_cpu
        s["history"].append({k: float(v) for k, v in logs.items()} | {
            "epoch": s["epoch"], "seconds": s["train_seconds"], "cpu_seconds": s["cpu_seconds"]})
        if logs["val_accuracy"] > s["best_val_accuracy"]:
            s["best_val_accuracy"], s["best_epoch"] = float(logs["val_accuracy"]), s["epoch"]
            s["best"] = f"best-{s['epoch']:04d}.weights.h5"
            with atomic_path(self.folder / s["best"]) as tmp:
                model.save_weights(tmp)
        if plateau is not None:
            s["plateau"] = {"best": float(plateau.best), "wait": plateau.wait,
                            "cooldown_counter": plateau.cooldown_counter}
        s["last"] = f"last-{s['epoch']:04d}.keras"
        with atomic_path(self.folder / s["last"]) as tmp:
            model.save(tmp)
        write_json(self.folder / STATE, s)              # the commit
        self.state = s
        self.tidy()

    def tidy(self) -> None:
        """Remove what the state does not name: older epochs, and files a killed save left."""
        keep = {STATE, self.state["last"], self.state["best"]}
        for f in self.folder.iterdir():
            if f.is_file() and f.name not in keep:
                f.unlink()


def callbacks(ckpt: Checkpoint, cfg: Preset, live, spread_threads: bool = False):
    import keras
    from dvclive.keras import DVCLiveCallback

    plateau = None
    if cfg.optimizer.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", factor=cfg.optimizer.plateau_factor,
                                                    patience=cfg.optimizer.plateau_patience, min_lr=1e-5)
        if ckpt.state["plateau"]:
            for k, v in ckpt.state["plateau"].items():
                setattr(plateau, k, v)
            plateau.on_train_begin = lambda logs=None: None   # keep the restored state

    class Save(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            ckpt.save(self.model, logs, time.perf_counter() - self.t0, time.process_time() - self.c0, plateau)

    class CleanTail(keras.callbacks.Callback):
        """The last `augment.clean_epochs` epochs see no degradations (the geometry stays)."""

        def on_epoch_begin(self, epoch, logs=None):
            clean = epoch >= cfg.epochs - cfg.augment.clean_epochs
            self.model.get_layer("degrade").strength.assign(0.0 if clean else 1.0)

    class Spread(keras.callbacks.Callback):
        """Once the first steps have run, pin the busiest worker threads one per CPU."""

        def on_train_batch_end(self, batch, logs=None):
            if not getattr(self, "done", False):
                self.done = True
                print(device.spread_workers(), flush=True)

    spread = Spread() if spread_threads else None
    return [c for c in (plateau, CleanTail(), Save(), DVCLiveCallback(live=live), spread) if c is not None]


def relog(live_dir: Path, history: list) -> None:
    """DVCLive's files of the epochs in `history` (a checkpoint's), written as the Keras callback
    writes them: for a finished or resumed member whose dvclive/<member>/ was deleted."""
    from dvclive import Live
    from dvclive.utils import standardize_metric_name
    print(f"re-creating {live_dir} from the checkpoint's history ({len(history)} epochs)", flush=True)
    shutil.rmtree(live_dir, ignore_errors=True)
    with Live(str(live_dir), report=None, save_dvc_exp=False, dvcyaml=None) as live:
        for epoch in history:
            # the callback's order: Keras's logs (by name), then the learning rate Save adds
            for key in sorted(set(epoch) - {"epoch", "seconds", "cpu_seconds"}, key=lambda k: (k == "learning_rate", k)):
                live.log_metric(standardize_metric_name(key, "dvclive.keras"), epoch[key])
            live.next_step()


def train(cfg: Preset, seed: int, train_frame: pd.DataFrame, val_frame: pd.DataFrame, fp: str,
          ckpt_dir: Path = paths.CHECKPOINT_DIR, live_dir: Path = paths.DVCLIVE_DIR, verbose=None):
    """Train (or resume, or skip if finished); return (best model, metrics dict, state). The plan's
    precision policy holds while the model is built and trained; the caller's comes back after."""
    import keras
    previous = keras.config.dtype_policy()
    try:
        return _train(cfg, seed, train_frame, val_frame, fp, ckpt_dir, live_dir, verbose)
    finally:
        keras.config.set_dtype_policy(previous)


def _train(cfg, seed, train_frame, val_frame, fp, ckpt_dir, live_dir, verbose):
    import keras
    from dvclive import Live

    from digits import model as model_mod

    n_gpus = device.count_gpus()
    plan = device.plan_for(n_gpus)
    print(plan.describe(n_gpus, device.onednn_line()), flush=True)
    strategy = device.activate(plan)
    keras.utils.set_random_seed(seed)
    x, y = to_images(train_frame)
    xv, yv = to_images(val_frame)
    onehot = lambda labels: np.eye(10, dtype="float32")[labels]
    steps = int(np.ceil(len(x) / cfg.batch_size))

    ckpt = Checkpoint(ckpt_dir, fp)
    resuming = ckpt.load()
    with strategy.scope():
        if resuming:
            model = model_mod.load(ckpt.last)
            if ckpt.state["epoch"] < cfg.epochs:
                print(f"resuming from epoch {ckpt.state['epoch']} of {cfg.epochs} ({ckpt.last})", flush=True)
        else:
            model = model_mod.build(cfg.arch, cfg.augment, seed)
            model.compile(optimizer=make_optimizer(cfg, steps),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                          metrics=["accuracy"], jit_compile=plan.jit_compile,
                          steps_per_execution=plan.steps_per_execution)
    if resuming and not (Path(live_dir) / "metrics.json").exists():
        relog(live_dir, ckpt.state["history"])
    if ckpt.state["epoch"] < cfg.epochs:
        if resuming:
            ckpt.state["resumed_from"].append(ckpt.state["epoch"])
        with Live(str(live_dir), resume=resuming, report=None, save_dvc_exp=False,
                  dvcyaml=None) as live:  # dvc.yaml declares the metrics and plots itself
            # The checkpoint, not DVCLive's files, says where we are: DVCLive's own resume
            # re-uses step 0 when only one epoch was logged.
            live.step = ckpt.state["epoch"]
            model.fit(x, onehot(y), batch_size=cfg.batch_size, epochs=cfg.epochs,
                      initial_epoch=ckpt.state["epoch"], validation_data=(xv, onehot(yv)), shuffle=True,
                      callbacks=callbacks(ckpt, cfg, live, plan.spread_threads),
                      verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2))
    else:
        print(f"already trained: {ckpt.state['epoch']} epochs, checkpoint matches; not retraining", flush=True)
    model.load_weights(ckpt.best)
    if plan.precision != "float32":
        # What leaves training is float32 (the exports, the server and every CPU take it); under a
        # mixed policy the weights are float32 already.
        keras.config.set_dtype_policy("float32")
        trained, model = model, model_mod.build(cfg.arch, cfg.augment, seed)
        model.set_weights(trained.get_weights())
    best = ckpt.state["history"][ckpt.state["best_epoch"] - 1]
    seconds = ckpt.state["train_seconds"]
    metrics = {
        "preset": None, "device": plan.describe(n_gpus, device.onednn_line()),
        "best_epoch": ckpt.state["best_epoch"], "epochs": ckpt.state["epoch"], "train_images": len(x),
        "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"],
        "train_seconds": round(seconds, 1),
        # summed over cores: on a shared machine wall time swings with the neighbours' load, this far less
        "train_cpu_seconds": round(ckpt.state["cpu_seconds"], 1),
        "images_per_second": round(len(x) * ckpt.state["epoch"] / seconds, 1),
    }
    return model, metrics, ckpt.state


def main(argv=None) -> None:
    from tasks import machine
    ap = argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.splitlines()[0])
    ap.add_argument("member", help="a name in params.yaml's ensemble.members")
    name = ap.parse_args(argv).member
    device.set_onednn()                   # before TensorFlow is imported
    p = params_mod.load()
    if name not in p.ensemble.members:
        raise DataError(f"{paths.PARAMS}: no member {name!r} in ensemble.members "
                        f"({', '.join(p.ensemble.members)})")
    member, out = p.ensemble.members[name], paths.member(name)
    cfg = p.train.presets[member.preset]
    fp = fingerprint(cfg, member.seed, [paths.SPLIT_TRAIN, paths.SPLIT_VAL, paths.INTAKE_TRAIN])
    before = Checkpoint(out.checkpoints, fp)
    epochs_before = before.state["epoch"] if before.load() else 0
    intake = pd.read_parquet(paths.INTAKE_TRAIN)
    train_frame = pd.concat([pd.read_parquet(paths.SPLIT_TRAIN), intake], ignore_index=True)
    model, metrics, state = train(cfg, member.seed, train_frame, pd.read_parquet(paths.SPLIT_VAL), fp,
                                  out.checkpoints, out.dvclive)
    metrics |= {"member": name, "preset": member.preset, "seed": member.seed, "intake_images": len(intake),
                "machine": machine.describe()["summary"]}
    with atomic_path(out.model) as tmp:
        model.save(tmp)
    # The whole stage as `dvc repro` runs it (interpreter start, imports, model build, checkpoint
    # writes, the final save), summed over the runs that trained: a run that only reloads a
    # finished checkpoint adds nothing, a resumed one adds its own time.
    if state["epoch"] > epochs_before:
        state["stage_seconds"] = round(state.get("stage_seconds", 0.0) + time.time() - psutil.Process().create_time(), 1)
        write_json(out.checkpoints / STATE, state)
    metrics["stage_seconds"] = state.get("stage_seconds")
    write_json(out.details, metrics)
    write_json(out.metrics, {k: metrics[k] for k in HEADLINE})
    print(f"train@{name}: best val_accuracy {metrics['val_accuracy']:.4f} at epoch {metrics['best_epoch']}, "
          f"{metrics['train_seconds']} s, {metrics['images_per_second']} img/s -> {out.model}")


if __name__ == "__main__":
    run_stage(main)
