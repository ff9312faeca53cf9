"""Training on a few hundred real MNIST images with a tiny net: shapes, saving, metrics, resume."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from tasks import device, model, params, schedules, train
from tasks.io import LABEL, PIXELS, to_images


def tiny(epochs=2, **changes):
    quick = params.load(ROOT / "params.yaml").train.presets["quick"]
    arch = dataclasses.replace(quick.arch, widths=(4, 8), dense=16)
    return dataclasses.replace(quick, epochs=epochs, batch_size=64, arch=arch, **changes)


def frames(mnist, n_train, n_val=100):
    x, y, _, _ = mnist
    make = lambda sl: pd.DataFrame(x[sl], columns=PIXELS).assign(**{LABEL: y[sl]})[[LABEL, *PIXELS]]
    return make(slice(0, n_train)), make(slice(n_train, n_train + n_val))


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


@pytest.mark.parametrize("gpus, strategy, precision, xla", [
    (0, "default", "float32", False), (1, "default", "mixed_float16", True), (4, "mirrored", "mixed_float16", True)])
def test_device_plan(gpus, strategy, precision, xla):
    plan = device.plan_for(gpus)
    assert (plan.strategy, plan.precision, plan.jit_compile) == (strategy, precision, xla)
    assert plan.describe(gpus).startswith("device: CPU" if gpus == 0 else f"device: {gpus} GPU")


def test_train_writes_metrics_and_a_model_that_reloads(tmp_path, mnist):
    tr, va = frames(mnist, 300)
    m, metrics, state = train.train(tiny(), 0, tr, va, "fp", tmp_path / "ck", tmp_path / "live", verbose=0)
    assert metrics["epochs"] == 2 and metrics["best_epoch"] in (1, 2) and metrics["train_images"] == 300
    assert isinstance(metrics["val_accuracy"], float) and 0 <= metrics["val_accuracy"] <= 1
    assert isinstance(metrics["val_loss"], float) and metrics["images_per_second"] > 0
    assert 0 < metrics["train_cpu_seconds"] and 0 < metrics["train_seconds"]
    assert state["history"][-1]["cpu_seconds"] == pytest.approx(metrics["train_cpu_seconds"], abs=0.05)
    assert metrics["device"].startswith("device: CPU")
    # several steps per graph call, none lost: 300 images at batch 64 = 5 optimizer steps per epoch
    assert m.steps_per_execution == device.plan_for(0).steps_per_execution > 1
    assert int(model.load(tmp_path / "ck" / train.LAST).optimizer.iterations) == 2 * 5
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(state["history"][0])
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["step"] == 1 and "accuracy" in live["train"] and "accuracy" in live["eval"]
    assert (tmp_path / "live/plots/metrics/train/learning_rate.tsv").exists()
    m.save(tmp_path / "m.keras")
    x, _ = to_images(va)
    again = model.load(tmp_path / "m.keras")
    assert np.allclose(again.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)


def test_unknown_optimizer_or_schedule_is_rejected():
    cfg = tiny()
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        train.make_optimizer(dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, schedule="linear")), 10)
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        train.make_optimizer(dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, name="adagrad")), 10)


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
    """What `dvc exp run -S train.preset=<name>` starts with: the preset's net, optimizer and schedule."""
    cfg = params.load(ROOT / "params.yaml").train.presets[name]
    x, y = mnist[0][:2 * cfg.batch_size].reshape(-1, 28, 28, 1), mnist[1][:2 * cfg.batch_size]
    m = model.build(cfg.arch, cfg.augment, seed=0)
    m.compile(optimizer=train.make_optimizer(cfg, steps_per_epoch=2), loss="categorical_crossentropy")
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
    m.compile(optimizer=keras.optimizers.AdamW(cycle), loss="categorical_crossentropy")
    m.fit(np.zeros((64, 28, 28, 1), np.uint8), np.eye(10)[np.zeros(64, int)], batch_size=16, verbose=0)
    m.save(tmp_path / "ck.keras")
    again = model.load(tmp_path / "ck.keras").optimizer
    assert int(again.iterations) == 4
    assert float(keras.ops.convert_to_numpy(again.learning_rate)) == pytest.approx(rates[4])


@pytest.mark.integration
def test_killed_training_resumes_from_last_epoch_and_finished_one_is_not_retrained(tmp_path, mnist):
    """Interrupt a real `python -m tasks.train` with SIGKILL after its first checkpoint."""
    tr, va = frames(mnist, 3000, 200)
    (tmp_path / "data/split").mkdir(parents=True)
    tr.to_parquet(tmp_path / "data/split/train.parquet")
    va.to_parquet(tmp_path / "data/split/val.parquet")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    quick = raw["train"]["presets"]["quick"]
    quick.update(epochs=4, batch_size=64)
    quick["arch"].update(widths=[8, 16], dense=32)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tasks.train"]
    state = tmp_path / "checkpoints/state.json"

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert proc.returncode == -signal.SIGKILL and 1 <= killed_at < 4
    assert not (tmp_path / "models/model.keras").exists()

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert f"resuming from epoch {killed_at} of 4" in out
    final = json.loads(state.read_text())
    assert final["epoch"] == 4 and final["resumed_from"] == [killed_at]
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3, 4]
    metrics = json.loads((tmp_path / "metrics/train.json").read_text())
    assert metrics["epochs"] == 4 and metrics["preset"] == "quick"
    live = json.loads((tmp_path / "dvclive/metrics.json").read_text())
    assert live["step"] == 3                                   # curves continue, not restart

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert "already trained: 4 epochs" in out
    assert json.loads(state.read_text())["history"] == final["history"]
