"""The installed commands (digits/commands.py): without --model they read the repository's params.yaml
and models/ whatever the current directory; `digits-recognize` as `make setup` installs it."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from digits import commands
from probes import render


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A repository with params.yaml naming two members and TTA views, its models/ (empty files:
    loading is stubbed), and the current directory somewhere else."""
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


@pytest.fixture
def loaded(monkeypatch):
    """Stands in for loading models: records the (files, tta) each predictor is made of (and its version)."""
    from digits import ensemble, recognize
    seen = []

    class Predictor:
        def __init__(self, models, files, tta, version=None):
            seen.append((files, tta))
            self.version = version

        def __call__(self, images):
            return None
    monkeypatch.setattr(ensemble, "load", lambda files: dict.fromkeys(files))
    monkeypatch.setattr(recognize, "Predictor", Predictor)
    return seen


def test_the_default_model_is_the_repositorys_ensemble_from_any_directory(repository, loaded):
    from digits import recognize
    assert commands.repository() == repository
    recognize.load_predictor(root=commands.repository())
    assert loaded == [({"quick-42": repository / "models/quick-42.keras", "quick-7": repository / "models/quick-7.keras"},
                       ("shift",))]
    recognize.load_predictor(root=commands.repository(), tta=[])            # an explicit tta wins
    assert loaded[-1][1] == ()


def test_named_models_stay_relative_to_the_current_directory(repository, loaded):
    from digits import recognize
    Path("mine.keras").write_bytes(b"")
    recognize.load_predictor([Path("mine.keras")], root=commands.repository())
    assert loaded == [({"mine": Path("mine.keras")}, ())]


def test_a_missing_member_is_named_with_the_repository(repository, loaded, capsys):
    from digits import recognize
    (repository / "models" / "quick-7.keras").unlink()
    Path("seven.png").write_bytes(b"")
    assert recognize.main(["seven.png"], root=commands.repository(), prog="digits-recognize") == 1
    assert re.fullmatch(r"error: no model .*/repo/models/quick-7\.keras; train the ensemble with `dvc repro` "
                        r"in .*/repo, or name a model with --model\n", capsys.readouterr().err)
    assert loaded == []


def test_without_a_repository_the_current_directory_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "ROOT", tmp_path)                  # no params.yaml there
    assert commands.repository() is None


def test_the_commands_name_themselves(capsys):
    with pytest.raises(SystemExit):
        commands.recognize(["--help"])
    assert capsys.readouterr().out.startswith("usage: digits-recognize ")


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
