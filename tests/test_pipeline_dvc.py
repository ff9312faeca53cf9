"""Integration: the real `dvc repro` in a temporary git repo on a small sample of MNIST."""
import json
import shutil

import pandas as pd
import pytest

from conftest import TINY, TWO, make_repo, set_params, sh, write_sample
from digits.io import LABEL
from tasks import ingest

pytestmark = pytest.mark.integration


def flat_keys(d: dict, prefix="") -> set:
    """{"a.b", ...}: the dotted names `dvc metrics show` gives the figures of a metrics file."""
    return set().union(*(flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k} for k, v in d.items()))


def test_data_stages_from_kaggle_files_then_noop_then_intake_then_change(tmp_path, mnist):
    """The data stages on Kaggle-format files; run again, nothing runs. An empty inbox, then a good
    and a bad batch: `dvc diff` and `dvc metrics diff` show what arrived between the two revisions,
    the split never re-runs and the inbox is as it was. Then a bad train.csv stops the pipeline."""
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

    out = sh(repo, "dvc", "repro", "split", "intake").stdout
    assert "Running stage 'intake'" in out and "Running stage 'split'" not in out
    assert len(pd.read_parquet(repo / "data/intake/train.parquet")) == 0
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "empty inbox")
    x, y, _, _ = mnist
    ingest.write_csv(repo / "data/inbox/001-good.csv", {LABEL: y[1000:1030]} | ingest.pixel_columns(x[1000:1030]))
    lines = (repo / "data/inbox/001-good.csv").read_text().splitlines()
    lines[1] = "55" + lines[1][1:]                                   # row 1's label: 55
    (repo / "data/inbox/002-bad.csv").write_text("\n".join(lines) + "\n")
    inbox = {f.name: f.read_bytes() for f in (repo / "data/inbox").iterdir()}
    val_before = (repo / "data/split/val.parquet").read_bytes()
    out = sh(repo, "dvc", "repro", "split", "intake").stdout
    assert "Running stage 'intake'" in out and "Running stage 'split'" not in out
    assert "data/inbox/001-good.csv: taken (30 rows)" in out
    assert "data/inbox/002-bad.csv: rejected: column label: 1 value outside the integers 0..9 (rows 1)" in out
    assert {f.name: f.read_bytes() for f in (repo / "data/inbox").iterdir()} == inbox
    assert (repo / "data/split/val.parquet").read_bytes() == val_before
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "two batches")
    diff = json.loads(sh(repo, "dvc", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert {d["path"] for d in diff["added"]} == {"data/intake/rejected/002-bad.csv", "data/intake/rejected/002-bad.json"}
    assert {d["path"] for d in diff["modified"]} >= {"data/intake/train.parquet", "data/intake/batches.json"}
    metrics = json.loads(sh(repo, "dvc", "metrics", "diff", "HEAD~1", "--json").stdout)["metrics/intake.json"]
    assert metrics["taken"] == {"old": 0, "new": 1, "diff": 1} and metrics["rows"]["new"] == 30
    assert metrics["rejected"]["new"] == 1

    # DVC notices new Kaggle files; a bad one stops the pipeline before convert.
    lines = (repo / "data/kaggle/train.csv").read_text().splitlines()
    lines[5] = "11" + lines[5][1:]
    (repo / "data/kaggle/train.csv").write_text("\n".join(lines) + "\n")
    proc = sh(repo, "dvc", "repro", *stages, check=False)
    assert proc.returncode != 0
    assert "column label: 1 value outside the integers 0..9 (rows 5)" in proc.stderr + proc.stdout
    assert "Running stage 'convert'" not in proc.stdout


def test_full_repro_then_compare_branches(tmp_path):
    """The default data source (MNIST from the pinned wheel, with its answer key) on a 1% sample
    and a two-member ensemble, through score and report; a third member as an experiment trains only
    the third; as a branch it is compared with main (metrics diff, also in a fresh clone with no
    cache, and plots diff); removing it again retrains nothing."""
    repo = make_repo(tmp_path)
    set_params(repo, **{k: v for k, v in TINY.items() if k != "data.source"},
               **{"split.sample_fraction": 0.01, "ensemble.members": TWO})
    out = sh(repo, "dvc", "repro").stdout
    for stage in ("ingest", "validate", "intake", "train@quick-42", "train@quick-7", "export", "predict", "score",
                  "report"):
        assert f"Running stage '{stage}'" in out
    assert "kaggle competitions submit -c digit-recognizer -f submission/submission.csv" in out
    assert len(pd.read_parquet(repo / "data/split/train.parquet")) == 540          # 1% of 60,000, less 10%
    sub = pd.read_csv(repo / "submission/submission.csv")
    assert list(sub.columns) == ["ImageId", "Label"] and sub.ImageId.tolist() == list(range(1, 10_001))
    assert pd.read_parquet(repo / "submission/probabilities.parquet").shape == (10_000, 11)
    key = pd.read_csv(repo / "data/answer_key/test_labels.csv")
    score = json.loads((repo / "metrics/score.json").read_text())
    errors = int((sub.Label != key.Label).sum())
    assert score == {"answer_key": True, "test_accuracy": 1 - errors / 10_000, "test_errors": errors,
                     "test_n": 10_000}
    report = (repo / "reports/report.md").read_text()
    assert f"**{score['test_accuracy']:.4f}** ({errors} errors of 10000)" in report and "## Confusion matrix" in report
    # `dvc metrics show`: the headline figures only; the details beside them, in git
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)[""]["data"]
    member = {"val_accuracy", "epochs", "train_seconds", "train_cpu_seconds", "images_per_second", "device", "machine"}
    assert {f: flat_keys(d["data"]) for f, d in shown.items()} == {
        "metrics/evaluate.json": {"accuracy", "errors", "loss", "ensemble.size", "ensemble.accuracy_with_tta",
                                  "calibration.ece", "calibration.temperature"},
        "metrics/members/quick-42.json": member, "metrics/members/quick-7.json": member,
        "metrics/score.json": {"answer_key", "test_accuracy", "test_errors", "test_n"},
        "metrics/intake.json": {"batches", "taken", "rejected", "duplicates", "rows"},
        "metrics/baselines.json": {"best_model", "best_val_accuracy", "fit_seconds"},
        "metrics/robustness.json": {"model.mean_corrupted", "model.worst", "recognizer.mean_corrupted",
                                    "recognizer.worst"},
        "metrics/export.json": {"members", "formats", "images", "max_abs_difference", "disagreements",
                                "export_seconds"}}
    headline = json.loads((repo / "metrics/evaluate.json").read_text())
    ev = json.loads((repo / "metrics/details/evaluate.json").read_text())["ensemble"]
    assert ev["size"] == 2 and set(ev["members"]) == {"quick-42", "quick-7"} and ev["tta"] == []
    assert ev["accuracy_without_tta"] == headline["accuracy"]
    assert ev["accuracy_with_tta"] == headline["ensemble"]["accuracy_with_tta"]
    per_class = pd.read_csv(repo / "plots/evaluate/per_class.csv")
    assert per_class.digit.tolist() == list(range(10)) and per_class.support.sum() == 60
    details = json.loads((repo / "metrics/details/members/quick-7.json").read_text())
    assert (details["member"], details["seed"], details["intake_images"]) == ("quick-7", 7, 0)   # an empty inbox
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline run")
    # A finished member whose DVCLive folder is gone: `dvc repro` reloads it and writes the curves again
    shutil.rmtree(repo / "dvclive/quick-7")
    out = sh(repo, "dvc", "repro", "-s", "train@quick-7").stdout
    assert "re-creating dvclive/quick-7 from the checkpoint's history" in out
    assert sh(repo, "git", "status", "--porcelain", "dvclive").stdout == ""      # the same files as committed

    # A third member, of another preset (shrunk), as an experiment: only it trains.
    out = sh(repo, "dvc", "exp", "run", "-n", "ensemble-3", "-S", "+ensemble.members.full-5={preset: full, seed: 5}",
             "-S", "train.presets.full.epochs=2", "-S", "train.presets.full.batch_size=64",
             "-S", "train.presets.full.arch.widths=[4,8,8]", "-S", "train.presets.full.arch.dense=16").stdout
    assert "Running stage 'train@full-5'" in out
    assert "Running stage 'train@quick-42'" not in out and "Running stage 'train@quick-7'" not in out
    assert "Running stage 'evaluate'" in out and "Running stage 'ingest'" not in out
    [experiment] = [e for rev in json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
                    for e in (rev.get("experiments") or []) if e.get("name") == "ensemble-3"]
    [run] = experiment["revs"]
    assert set(run["data"]["params"]["params.yaml"]["data"]["ensemble"]["members"]) == {"quick-42", "quick-7", "full-5"}
    assert run["data"]["metrics"]["metrics/members/full-5.json"]["data"]["epochs"] == 2
    assert run["data"]["metrics"]["metrics/evaluate.json"]["data"]["ensemble"]["size"] == 3

    # The experiment as a branch, compared with main: metrics diff and plots diff.
    sh(repo, "dvc", "exp", "branch", "ensemble-3", "three-members")
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "main", "three-members", "--json").stdout)
    assert diff["metrics/evaluate.json"]["ensemble.size"] == {"old": 2, "new": 3, "diff": 1}
    assert diff["metrics/members/full-5.json"]["epochs"]["new"] == 2
    assert "metrics/members/quick-7.json" not in diff                     # unchanged member

    # Every declared metric is readable at any revision from git alone: a fresh clone has no cache.
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "git", "checkout", "-q", "three-members")
    proc = sh(clone, "dvc", "metrics", "diff", "main", "--json")
    assert "failed to load" not in proc.stderr + proc.stdout
    fresh = json.loads(proc.stdout)
    assert fresh["metrics/members/full-5.json"]["epochs"]["new"] == 2
    assert fresh["metrics/evaluate.json"]["ensemble.size"]["new"] == 3

    plots = json.loads(sh(repo, "dvc", "plots", "diff", "main", "three-members", "--json").stdout)["data"]
    [confusion] = plots["plots/evaluate/confusion.csv"]
    assert confusion["revisions"] == ["main", "three-members"]
    rows = confusion["content"]["data"]["values"]
    assert {r["rev"] for r in rows} == {"main", "three-members"}
    assert sum(r["rev"] == "main" for r in rows) == 60                   # one row per validation image
    assert {"main", "three-members"} <= {p["revisions"][0] for p in plots["plots/evaluate/confusion_matrix.png"]}
    sh(repo, "dvc", "plots", "diff", "main", "three-members", "-o", str(tmp_path / "plots"))
    assert "confusion" in (tmp_path / "plots/index.html").read_text()
    # Plots of every member's curves, from DVCLive, per revision.
    assert {"dvclive/quick-42/plots/metrics/train/loss.tsv", "dvclive/full-5/plots/metrics/eval/accuracy.tsv"} <= set(plots)
    # and the details behind the headline figures: per class, per corruption on both paths
    assert {"plots/evaluate/per_class.csv", "plots/robustness/accuracy.csv", "plots/robustness/recognizer.csv"} <= set(plots)

    # Removing the member again retrains nothing, only what combines the members re-runs (DVC's plan,
    # `repro --dry`, so the suite does not run those stages a fourth time).
    set_params(repo, **{"ensemble.members": TWO})
    out = sh(repo, "dvc", "repro", "--dry").stdout
    assert "Running stage 'train@" not in out and "Running stage 'evaluate'" in out
    assert "Running stage 'predict'" in out and "Running stage 'split'" not in out
