"""Integration: the real `dvc repro` in a temporary git repo on a small sample of MNIST."""
import json

import pandas as pd
import pytest
import yaml

from conftest import make_repo, sh, write_sample

pytestmark = pytest.mark.integration


def set_params(repo, **changes):
    """Edit params.yaml in `repo`: keys are dotted paths (as `dvc exp run -S` takes them)."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_data_stages_from_kaggle_files_then_noop_then_change(tmp_path, mnist):
    repo = make_repo(tmp_path)
    write_sample(repo / "data" / "kaggle", mnist, n_train=400, n_test=50)
    set_params(repo, **{"data.source": "kaggle"})
    stages = ["ingest", "validate", "convert", "split"]
    out = sh(repo, "dvc", "repro", *stages).stdout
    for stage in stages:
        assert f"Running stage '{stage}'" in out
    train = pd.read_parquet(repo / "data/split/train.parquet")
    val = pd.read_parquet(repo / "data/split/val.parquet")
    assert (len(train), len(val)) == (360, 40)
    assert pd.read_parquet(repo / "data/parquet/test.parquet").shape == (50, 784)
    assert (repo / "data/answer_key/NO_ANSWER_KEY.txt").exists()
    assert json.loads((repo / "reports/validation/train.json").read_text())["table"]["success"] is True

    again = sh(repo, "dvc", "repro", *stages).stdout
    assert "Running stage" not in again and "up to date" in again

    # DVC notices new Kaggle files; a bad one stops the pipeline before convert.
    lines = (repo / "data/kaggle/train.csv").read_text().splitlines()
    lines[5] = "11" + lines[5][1:]
    (repo / "data/kaggle/train.csv").write_text("\n".join(lines) + "\n")
    proc = sh(repo, "dvc", "repro", *stages, check=False)
    assert proc.returncode != 0
    assert "column label: 1 value outside the integers 0..9 (rows 5)" in proc.stderr + proc.stdout
    assert "Running stage 'convert'" not in proc.stdout
