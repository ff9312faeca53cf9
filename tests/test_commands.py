"""The installed commands (app/commands.py): without --model they read the repository's params.yaml
and models/ whatever the current directory; `digits-recognize` as `make setup` installs it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from app import commands
from bench import render
from conftest import ROOT


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A repository with params.yaml naming two members and TTA views, its models/ (empty files:
    the loader is a stand-in), and the current directory somewhere else."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ensemble"]["members"] = {"quick-42": {"preset": "quick", "seed": 42}, "quick-7": {"preset": "quick", "seed": 7}}
    raw["ensemble"]["tta"] = ["shift"]
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for name in ("quick-42", "quick-7"):
        (repo / "models" / f"{name}.keras").write_bytes(b"")
    monkeypatch.setattr(commands, "ROOT", repo)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return repo


def recording_loader():
    calls = []
    return calls, lambda model_files=None, tta=None: calls.append((model_files, tta)) or "predictor"


def test_the_default_model_is_the_repositorys_ensemble_from_any_directory(repository):
    calls, loader = recording_loader()
    assert commands.repository_default(loader)() == "predictor"
    assert calls == [([repository / "models/quick-42.keras", repository / "models/quick-7.keras"], ("shift",))]
    commands.repository_default(loader)(tta=[])                       # an explicit tta wins
    assert calls[-1][1] == []


def test_named_models_stay_relative_to_the_current_directory(repository):
    calls, loader = recording_loader()
    commands.repository_default(loader)([Path("mine.keras")])
    assert calls == [([Path("mine.keras")], None)]


def test_a_missing_member_is_named_with_the_repository(repository):
    (repository / "models" / "quick-7.keras").unlink()
    calls, loader = recording_loader()
    with pytest.raises(FileNotFoundError, match=r"no model .*/models/quick-7\.keras; train the ensemble with "
                                                r"`dvc repro` in .*repo, or name a model with --model"):
        commands.repository_default(loader)()
    assert calls == []


def test_without_a_repository_the_modules_default_applies(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "ROOT", tmp_path)                  # no params.yaml there
    calls, loader = recording_loader()
    commands.repository_default(loader)()
    assert calls == [(None, None)]


@pytest.mark.integration                # the installed command in its own process, with a trained model
def test_the_installed_command_runs_outside_the_repository(mnist, predictor, digit_model, tmp_path):
    command = Path(sys.executable).parent / "digits-recognize"
    assert command.exists(), f"{command} missing: `make setup` installs the project (pip install -e .)"
    x, y = mnist[2][:50].reshape(-1, 28, 28), mnist[3][:50]
    i = int(np.flatnonzero(predictor(x).argmax(axis=1) == y)[0])
    (tmp_path / "digit.png").write_bytes(render.render(x[i], "rgba", np.random.default_rng(0)))
    shutil.copy(digit_model, tmp_path / "model.keras")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([command, "digit.png", "--model", "model.keras"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"digit.png: {y[i]} (")
