"""Fixtures of the recognizer's tests: a small real model and the real server command.

A fresh clone has no trained models (no DVC cache), so the recognizer, API and browser tests
train their own model once per session: the pipeline's network (digits.model.build, the `quick`
preset's augmentation) shrunk to 16/32 filters, a 64-unit dense layer and no batch norm (its
moving averages need more steps than this has), 2 epochs on 10,000 real MNIST training images:
about 97% on 1,000 others, enough that drawn 1s and 0s are recognised.

conftest.py loads this module as a plugin, so every test module can ask for `digit_model`,
`predictor`, `server_url` or `feedback_db` (the real server's feedback store, a temporary SQLite
file); each is built once per session, and a model that fails to train fails every test that
asks for it without training again.
"""
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT
from digits import params

TRAIN_IMAGES, VAL_IMAGES = 10_000, 1_000


def train_small_model(mnist, folder: Path) -> Path:
    import keras

    from digits import model as model_mod
    quick = params.load(ROOT / "params.yaml").train.presets["quick"]
    arch = dataclasses.replace(quick.arch, widths=(16, 32), dense=64, batch_norm=False)
    x, y = mnist[0].reshape(-1, 28, 28, 1), mnist[1]
    keras.utils.set_random_seed(0)
    model = model_mod.build(arch, quick.augment, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=16)
    model.fit(x[:TRAIN_IMAGES], y[:TRAIN_IMAGES], batch_size=64, epochs=2, verbose=0)
    val = slice(TRAIN_IMAGES, TRAIN_IMAGES + VAL_IMAGES)
    accuracy = model.evaluate(x[val], y[val], verbose=0, return_dict=True)["accuracy"]
    assert accuracy >= 0.95, f"the test model is too weak: {accuracy:.3f} on {VAL_IMAGES:,} images"
    model.save(folder / "model.keras")
    return folder / "model.keras"


@pytest.fixture(scope="session")
def digit_model(mnist, tmp_path_factory) -> Path:
    """Path of the session's small trained model (.keras)."""
    return train_small_model(mnist, tmp_path_factory.mktemp("digit-model"))


@pytest.fixture(scope="session")
def predictor(digit_model):
    """digits.recognize.load_predictor on the session's model, loaded once."""
    from digits.recognize import load_predictor
    return load_predictor(digit_model)


@pytest.fixture(scope="session")
def digit(mnist, predictor):
    """(canvas-export PNG bytes, label, 28 x 28 original) of a test image the model gets right."""
    import numpy as np

    from probes import render
    x, y = mnist[2].reshape(-1, 28, 28), mnist[3]
    i = int(np.flatnonzero(predictor(x[:50]).argmax(axis=1) == y[:50])[0])
    return render.render(x[i], "rgba", np.random.default_rng(0)), int(y[i]), x[i]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path | None, feedback_db: str, timeout: float = 120.0, cwd: Path = ROOT, args=(),
                 python: Path | None = None):
    """`python -m digits.server --host 127.0.0.1 --port P --model M`, the documented command, started
    in `cwd` with its feedback store at `feedback_db` and waited for until /health answers (no
    model: the server follows `cwd`'s production version); returns (process, base URL). `python`:
    another environment's interpreter, with its own installed `digits` (no PYTHONPATH)."""
    port = free_port()
    env = os.environ | {"DIGITS_FEEDBACK_DB": feedback_db}
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"} if python else env | {"PYTHONPATH": str(ROOT)}
    model_args = ["--model", str(model)] if model else []
    proc = subprocess.Popen([str(python or sys.executable), "-m", "digits.server", "--host", "127.0.0.1", "--port", str(port),
                             *model_args, "--log-level", "warning", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"python -m digits.server exited {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"python -m digits.server did not answer /health within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """End a server started by start_server: SIGTERM, then SIGKILL after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def feedback_db(tmp_path_factory) -> str:
    """The SQLAlchemy URL of the real server's feedback store (a SQLite file in a temporary folder)."""
    return f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'feedback.db'}"


@pytest.fixture(scope="session")
def server(digit_model, feedback_db):
    """The real server (uvicorn, its own process) serving the session's model: (process, base URL)."""
    proc, url = start_server(digit_model, feedback_db)
    yield proc, url
    stop(proc)


@pytest.fixture(scope="session")
def light_server(light_python, exported_repo, tmp_path_factory):
    """The real server without TensorFlow: the light environment's `python -m digits.server
    --runtime onnx`, started in a copy of the exported repository whose ensemble has no TTA (as the
    `server` fixture's model): (process, base URL)."""
    import yaml
    deploy = tmp_path_factory.mktemp("light-deploy")
    for name in ("params.yaml", "models", "exports"):
        (shutil.copytree if (exported_repo / name).is_dir() else shutil.copy)(exported_repo / name, deploy / name)
    raw = yaml.safe_load((deploy / "params.yaml").read_text())
    raw["ensemble"]["tta"] = []
    (deploy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    db = f"sqlite:///{tmp_path_factory.mktemp('light-feedback') / 'feedback.db'}"
    proc, url = start_server(None, db, cwd=deploy, args=("--runtime", "onnx"), python=light_python)
    yield proc, url
    stop(proc)


@pytest.fixture(scope="session")
def server_url(server):
    """Base URL of the real server."""
    return server[1]


EXPORT_IMAGES = 200       # test images of the export stage's parity check here (the pipeline uses all)


def make_export_inputs(root: Path, digit_model: Path, mnist) -> None:
    """params.yaml with one member, "small" (the session's model), TTA shift; its model; test.parquet."""
    import pandas as pd
    import yaml

    from digits import paths
    from tasks import ingest
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ensemble"] = {"members": {"small": {"preset": "quick", "seed": 0}}, "tta": ["shift"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "models").mkdir()
    shutil.copy(digit_model, root / "models" / "small.keras")
    (root / paths.TEST_PARQUET).parent.mkdir(parents=True)
    pd.DataFrame(ingest.pixel_columns(mnist[2][:EXPORT_IMAGES])).to_parquet(root / paths.TEST_PARQUET, index=False)


@pytest.fixture(scope="session")
def exported_repo(digit_model, mnist, tmp_path_factory) -> Path:
    """A repository after the export stage ran on it: the session's model as "small" (read only)."""
    from tasks import export
    root = tmp_path_factory.mktemp("export-repo")
    make_export_inputs(root, digit_model, mnist)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        export.main()
    return root


def build_wheel(folder: Path) -> Path:
    """The project's wheel, as a plain `pip install .` builds it, from a copy of its sources (a build
    writes build/ beside the code)."""
    source = folder / "source"
    shutil.copytree(ROOT / "digits", source / "digits", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(folder / "wheel"), str(source)], check=True, capture_output=True)
    [wheel] = (folder / "wheel").glob("*.whl")
    return wheel


@pytest.fixture(scope="session")
def light_python(tmp_path_factory) -> Path:
    """The interpreter of an environment made as `make setup-serve` makes it: requirements-serve.lock
    (no TensorFlow, no Keras) and the project's wheel, without its dependencies."""
    folder = tmp_path_factory.mktemp("light-env")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    pip = [str(folder / "venv/bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["-r", str(ROOT / "requirements-serve.lock")], ["--no-deps", str(build_wheel(folder))]):
        proc = subprocess.run(pip + args, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder / "venv/bin/python"
