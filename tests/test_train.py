"""Training on a few hundred real MNIST images with a tiny net: shapes, saving, metrics, resume."""
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, set_params, sh
from digits import model, params, schedules
from digits.io import LABEL, PIXELS, to_images
from tasks import device, train


def tiny(epochs=2, **changes):
    quick = params.load(ROOT / "params.yaml").train.presets["quick"]
    arch = dataclasses.replace(quick.arch, widths=(4, 8), dense=16)
    return dataclasses.replace(quick, epochs=epochs, batch_size=64, arch=arch, **changes)


def frame(mnist, index):
    """Kaggle-format frame of the MNIST training images at `index` (a slice or an index array)."""
    x, y, _, _ = mnist
    return pd.DataFrame(x[index], columns=PIXELS).assign(**{LABEL: y[index]})[[LABEL, *PIXELS]]


def frames(mnist, n_train, n_val=100):
    return frame(mnist, slice(0, n_train)), frame(mnist, slice(n_train, n_train + n_val))


def test_augmentation_keeps_shape_and_range_and_changes_images(mnist):
    x = mnist[0][:16].reshape(-1, 28, 28, 1).astype("float32") / 255
    layer = model.RandomAffine(rotation=15, zoom=0.1, shift=0.1, seed=3)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1.0 + 1e-6
    assert np.abs(out - x).mean() > 0.01                       # the images really moved
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)  # identity at inference
    still = model.RandomAffine(0, 0, 0, seed=3)
    assert np.allclose(keras.ops.convert_to_numpy(still(x, training=True)), x, atol=1e-5)


def test_model_maps_uint8_images_to_probabilities():
    cfg = tiny()
    m = model.build(cfg.arch, cfg.augment, seed=0)
    probs = m.predict(np.zeros((5, 28, 28, 1), np.uint8), verbose=0)
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("gpus, policy, mirrored", [(0, "float32", False), (1, "mixed_float16", False),
                                                      (2, "mixed_float16", True)])
def test_activate_sets_the_precision_and_returns_the_strategy(gpus, policy, mirrored):
    import tensorflow as tf
    plan = device.plan_for(gpus, flags=set())      # no bf16 hardware: float32 on the CPU
    try:
        strategy = device.activate(plan)
        assert keras.config.dtype_policy().name == policy
        layer = keras.layers.Dense(2)                # what the model is built with
        assert layer.compute_dtype == ("float32" if gpus == 0 else "float16") and layer.variable_dtype == "float32"
        assert isinstance(strategy, tf.distribute.MirroredStrategy) == mirrored
        if not mirrored:
            assert strategy is tf.distribute.get_strategy()
    finally:
        keras.config.set_dtype_policy("float32")
    where = {0: "CPU", 1: "1 GPU", 2: "2 GPUs"}[gpus]
    assert plan.describe(gpus).startswith(f"device: {where}; strategy: {'mirrored' if mirrored else 'default'}; "
                                          f"precision: {policy}")


def test_train_writes_metrics_and_a_model_that_reloads(tmp_path, mnist):
    tr, va = frames(mnist, 300)
    cpu0 = time.process_time()
    m, metrics, state = train.train(tiny(), 0, tr, va, "fp", tmp_path / "ck", tmp_path / "live", verbose=0)
    cpu = time.process_time() - cpu0
    assert metrics["epochs"] == 2 and metrics["best_epoch"] in (1, 2) and metrics["train_images"] == 300
    assert isinstance(metrics["val_accuracy"], float) and 0 <= metrics["val_accuracy"] <= 1
    assert isinstance(metrics["val_loss"], float) and metrics["images_per_second"] > 0
    assert 0 < metrics["train_seconds"]
    assert 0 < metrics["train_cpu_seconds"] <= cpu + 0.05      # the epochs' share of this process' CPU time (rounded)
    assert metrics["device"].startswith("device: CPU")
    # several steps per graph call, none lost: 300 images at batch 64 = 5 optimizer steps per epoch
    assert m.steps_per_execution == device.plan_for(0).steps_per_execution > 1
    assert int(model.load(tmp_path / "ck" / state["last"]).optimizer.iterations) == 2 * 5
    assert {f.name for f in (tmp_path / "ck").iterdir()} == {"state.json", "last-0002.keras", state["best"]}
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(state["history"][0])
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["step"] == 1 and "accuracy" in live["train"] and "accuracy" in live["eval"]
    assert (tmp_path / "live/plots/metrics/train/learning_rate.tsv").exists()
    m.save(tmp_path / "m.keras")
    x, _ = to_images(va)
    again = model.load(tmp_path / "m.keras")
    assert np.allclose(again.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)


def test_a_bfloat16_run_with_pinned_workers_trains_mixed_and_hands_back_a_float32_model(tmp_path, monkeypatch,
                                                                                         mnist, capsys):
    import os

    import keras
    tr, va = frames(mnist, 300)
    monkeypatch.setenv("DIGITS_PRECISION", "mixed_bfloat16")
    monkeypatch.setenv("DIGITS_PIN_WORKERS", "1")
    cpus, pinned = os.sched_getaffinity(0), {}

    def each_thread(do):
        for t in device.thread_ticks():
            try:
                do(t)
            except OSError:                                               # it ended meanwhile
                pass
    try:
        m, metrics, state = train.train(tiny(), 0, tr, va, "fp", tmp_path / "ck", tmp_path / "live", verbose=0)
        each_thread(lambda t: pinned.__setitem__(t, os.sched_getaffinity(t)))
    finally:                                                              # the next tests get every CPU
        each_thread(lambda t: os.sched_setaffinity(t, cpus))
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("threads: ")]
    assert len(said) == 1                                                 # once, after the first step
    if len(cpus) > 1:
        n = int(said[0].split()[1])
        assert said[0] == f"threads: {n} busiest workers pinned one per CPU ({', '.join(map(str, sorted(cpus)))})"
        assert 1 <= n <= len(cpus) and sum(len(a) == 1 for a in pinned.values()) >= n
    else:
        assert said == ["threads: not pinned (one CPU)"]
    assert "precision: mixed_bfloat16" in metrics["device"]
    trained = model.load(tmp_path / "ck" / state["last"])                 # the checkpoint: as trained
    trained.load_weights(tmp_path / "ck" / state["best"])
    assert trained.get_layer("probabilities").dtype_policy.name == "float32"
    assert {layer.dtype_policy.name for layer in trained.layers if layer.name.startswith("conv")} == {"mixed_bfloat16"}
    assert {layer.dtype_policy.name for layer in m.layers} == {"float32"}          # what leaves training
    assert keras.config.dtype_policy().name == "float32"                  # the caller's policy is back
    x, _ = to_images(va)
    p32, p16 = m.predict(x, verbose=0), trained.predict(x, verbose=0)
    assert p32.dtype == np.float32 and p32.shape == (len(x), 10)
    assert np.abs(p32 - p16).max() < 0.05                                 # the same weights, finer arithmetic
    assert (p32.argmax(1) == p16.argmax(1)).mean() > 0.95


class Killed(Exception):
    """Stands for a SIGKILL at one point of a checkpoint save (raised by a patched writer)."""


@pytest.mark.integration
@pytest.mark.parametrize("where", ["before state.json", "before the last model"])
def test_a_kill_between_checkpoint_writes_resumes_to_matching_history_and_weights(tmp_path, monkeypatch, mnist, where):
    """Epoch 2's save is cut after some of its files are written; the next run resumes from epoch 1
    (whose checkpoint is whole), trains to the end, and the best weights are the epoch the state names."""
    tr, va = frames(mnist, 300)
    cfg, folder = tiny(epochs=3), tmp_path / "ck"
    if where == "before state.json":
        real = train.write_json
        def cut(path, data):
            if path.name == train.STATE and data["epoch"] == 2:
                raise Killed
            real(path, data)
        monkeypatch.setattr(train, "write_json", cut)
    else:
        real_save = keras.Model.save
        def cut(self, path, *a, **k):
            if "last-0002" in str(path):
                raise Killed
            real_save(self, path, *a, **k)
        monkeypatch.setattr(keras.Model, "save", cut)
    with pytest.raises(Killed):
        train.train(cfg, 0, tr, va, "fp", folder, tmp_path / "live", verbose=0)
    monkeypatch.undo()
    on_disk = json.loads((folder / train.STATE).read_text())
    assert on_disk["epoch"] == 1 and on_disk["last"] == "last-0001.keras"
    (folder / ".tmp-x-state.json").write_text("{")            # what a kill inside a write leaves

    m, metrics, state = train.train(cfg, 0, tr, va, "fp", folder, tmp_path / "live", verbose=0)
    assert state["resumed_from"] == [1] and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert {f.name for f in folder.iterdir()} == {"state.json", "last-0003.keras", state["best"]}
    assert state["best"] == f"best-{state['best_epoch']:04d}.weights.h5"
    assert int(model.load(folder / state["last"]).optimizer.iterations) == 3 * 5   # the last model is epoch 3's
    x, y = to_images(va)
    accuracy = float((m.predict(x, verbose=0).argmax(1) == y).mean())
    assert accuracy == pytest.approx(state["best_val_accuracy"], abs=1e-6) == metrics["val_accuracy"]


@pytest.mark.parametrize("name", params.OPTIMIZERS)
@pytest.mark.parametrize("schedule", params.SCHEDULES)
def test_every_optimizer_and_schedule_params_accept_is_built(name, schedule):
    cfg = tiny()
    cfg = dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, name=name, schedule=schedule))
    optimizer = train.make_optimizer(cfg, steps_per_epoch=10)
    assert type(optimizer).__name__.lower() == name
    assert 0 < float(keras.ops.convert_to_numpy(optimizer.learning_rate)) <= cfg.optimizer.learning_rate * (1 + 1e-6)


@pytest.mark.parametrize("name", sorted(params.load(ROOT / "params.yaml").train.presets))
def test_every_preset_builds_and_takes_training_steps(name, mnist):
    """What a member of preset <name> starts with: the preset's net, optimizer and schedule."""
    cfg = params.load(ROOT / "params.yaml").train.presets[name]
    x, y = mnist[0][:2 * cfg.batch_size].reshape(-1, 28, 28, 1), mnist[1][:2 * cfg.batch_size]
    m = model.build(cfg.arch, cfg.augment, seed=0)
    m.compile(optimizer=train.make_optimizer(cfg, steps_per_epoch=2), loss="categorical_crossentropy",
              run_eagerly=True)     # two steps: tracing the graph would cost more than running them
    history = m.fit(x, np.eye(10)[y], batch_size=cfg.batch_size, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and int(m.optimizer.iterations) == 2
    rate = float(keras.ops.convert_to_numpy(m.optimizer.learning_rate))
    assert 0 < rate <= cfg.optimizer.learning_rate * (1 + 1e-6)


def test_one_cycle_rises_to_the_peak_then_falls_and_resumes_from_a_checkpoint(tmp_path):
    cycle = schedules.OneCycle(peak=0.01, total_steps=100, warmup_steps=30)
    rates = [float(keras.ops.convert_to_numpy(cycle(s))) for s in range(101)]
    assert rates[0] == pytest.approx(0.01 / 25) and rates[30] == pytest.approx(0.01)
    assert rates[100] == pytest.approx(0.01 / 25 / 1e4)
    assert all(a < b for a, b in zip(rates[:30], rates[1:31]))          # rises to the peak
    assert all(a > b for a, b in zip(rates[30:100], rates[31:101]))     # then only falls
    m = model.build(tiny().arch, tiny().augment, seed=0)
    m.compile(optimizer=keras.optimizers.AdamW(cycle), loss="categorical_crossentropy", run_eagerly=True)
    m.fit(np.zeros((64, 28, 28, 1), np.uint8), np.eye(10)[np.zeros(64, int)], batch_size=16, verbose=0)
    m.save(tmp_path / "ck.keras")
    again = model.load(tmp_path / "ck.keras").optimizer
    assert int(again.iterations) == 4
    assert float(keras.ops.convert_to_numpy(again.learning_rate)) == pytest.approx(rates[4])


def train_workspace(tmp_path, monkeypatch, tr, va, **changes):
    """A scratch workspace for the real `python -m tasks.train`: the split as Parquet files, no
    intake rows, and params.yaml with `changes` (dotted keys)."""
    (tmp_path / "data/split").mkdir(parents=True)
    tr.to_parquet(tmp_path / "data/split/train.parquet")
    va.to_parquet(tmp_path / "data/split/val.parquet")
    (tmp_path / "data/intake").mkdir(parents=True)
    tr.iloc[:0].to_parquet(tmp_path / "data/intake/train.parquet")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, **changes)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return tmp_path


MEMBER = "quick-42"                  # the default ensemble's one member


def run_train(workspace, member=MEMBER) -> str:
    return sh(workspace, sys.executable, "-m", "tasks.train", member).stdout


def state(workspace, member=MEMBER) -> dict:
    return json.loads((workspace / "checkpoints" / member / train.STATE).read_text())


def kill_after_epoch(workspace, epoch: int, member=MEMBER) -> int:
    """Start `python -m tasks.train MEMBER`, SIGKILL it once the checkpoint of `epoch` (or a later
    one) is written; return the epoch of the last checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "tasks.train", member], cwd=workspace,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (workspace / "checkpoints" / member / train.STATE).exists() and state(workspace, member)["epoch"] >= epoch:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"training ended by itself (exit {proc.returncode})"
    assert not (workspace / "models" / f"{member}.keras").exists()
    return state(workspace, member)["epoch"]


@pytest.mark.integration
def test_killed_training_resumes_from_last_epoch_and_finished_one_is_not_retrained(tmp_path, monkeypatch, mnist):
    """Interrupt a real `python -m tasks.train` with SIGKILL after its first checkpoint."""
    ws = train_workspace(tmp_path, monkeypatch, *frames(mnist, 3000, 200), **{
        "train.presets.quick.epochs": 4, "train.presets.quick.batch_size": 64,
        "train.presets.quick.arch.widths": [8, 16], "train.presets.quick.arch.dense": 32})
    killed_at = kill_after_epoch(ws, 1)
    assert 1 <= killed_at < 4

    assert f"resuming from epoch {killed_at} of 4" in run_train(ws)
    final = state(ws)
    assert final["epoch"] == 4 and final["resumed_from"] == [killed_at]
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3, 4]
    metrics = json.loads((ws / "metrics/details/members/quick-42.json").read_text())
    assert (metrics["epochs"], metrics["preset"], metrics["seed"], metrics["member"]) == (4, "quick", 42, "quick-42")
    headline = json.loads((ws / "metrics/members/quick-42.json").read_text())
    assert headline == {k: metrics[k] for k in ("val_accuracy", "epochs", "train_seconds", "train_cpu_seconds",
                                                "images_per_second", "device", "machine")}
    assert 0 < headline["train_cpu_seconds"]                  # cores busy = train_cpu_seconds / train_seconds
    live = json.loads((ws / "dvclive/quick-42/metrics.json").read_text())
    assert live["step"] == 3                                   # curves continue, not restart
    # the stage time of both runs that trained (the killed one's is lost with it: not in state)
    assert metrics["stage_seconds"] == final["stage_seconds"] > metrics["train_seconds"] / 2

    live_files = {f: f.read_bytes() for f in (ws / "dvclive/quick-42").rglob("*") if f.is_file()}
    assert "already trained: 4 epochs" in run_train(ws)
    assert state(ws)["history"] == final["history"]
    # DVCLive's folder deleted: the reload writes it again from the checkpoint's history, the same bytes
    shutil.rmtree(ws / "dvclive/quick-42")
    assert "re-creating dvclive/quick-42 from the checkpoint's history (4 epochs)" in run_train(ws)
    assert {f: f.read_bytes() for f in (ws / "dvclive/quick-42").rglob("*") if f.is_file()} == live_files
    again = json.loads((ws / "metrics/details/members/quick-42.json").read_text())
    assert again["stage_seconds"] == metrics["stage_seconds"]   # a reload adds nothing


@pytest.mark.integration
def test_killed_plateau_training_resumes_its_learning_rate_and_plateau_state(tmp_path, monkeypatch, mnist):
    """seed001's plateau schedule, shrunk, killed after epoch 2 or 3 and started again.

    Training has no 9s and validation only 9s, so validation accuracy stays 0 and ReduceLROnPlateau
    (patience 1) halves the rate after every epoch from the second: 1e-3, 5e-4, 2.5e-4, 1.25e-4.
    A resume that lost the optimizer's rate or the callback's best value breaks that sequence.
    """
    _, y, _, _ = mnist
    tr, va = frame(mnist, np.flatnonzero(y != 9)[:3000]), frame(mnist, np.flatnonzero(y == 9)[:200])
    preset = "train.presets.seed001"
    ws = train_workspace(tmp_path, monkeypatch, tr, va, **{
        "ensemble.members": {"plateau": {"preset": "seed001", "seed": 42}}, f"{preset}.epochs": 4, f"{preset}.batch_size": 64,
        f"{preset}.arch.widths": [8, 16], f"{preset}.arch.dense": 32, f"{preset}.optimizer.plateau_patience": 1})
    rates = [1e-3, 5e-4, 2.5e-4, 1.25e-4]
    steps = 47                                                 # ceil(3000 / 64)
    killed_at = kill_after_epoch(ws, 2, "plateau")
    assert 2 <= killed_at < 4

    assert f"resuming from epoch {killed_at} of 4" in run_train(ws, "plateau")
    final = state(ws, "plateau")
    assert final["resumed_from"] == [killed_at] and [h["epoch"] for h in final["history"]] == [1, 2, 3, 4]
    assert [h["val_accuracy"] for h in final["history"]] == [0, 0, 0, 0]
    assert [h["learning_rate"] for h in final["history"]] == pytest.approx(rates)
    assert final["plateau"] == {"best": 0.0, "wait": 0, "cooldown_counter": 0}
    optimizer = model.load(ws / "checkpoints/plateau" / final["last"]).optimizer
    assert int(optimizer.iterations) == 4 * steps
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(rates[-1])
    assert not list((ws / "checkpoints/plateau").glob(".tmp-*"))

    set_params(ws, **{f"{preset}.epochs": 2})                 # a new fingerprint: trained afresh
    out = run_train(ws, "plateau")
    assert "resuming" not in out and "already trained" not in out
    fresh = state(ws, "plateau")
    assert fresh["resumed_from"] == [] and [h["learning_rate"] for h in fresh["history"]] == pytest.approx(rates[:2])
    assert int(model.load(ws / "checkpoints/plateau" / fresh["last"]).optimizer.iterations) == 2 * steps
