"""The loop's pieces without a server or engine: the gate's decision, fast-forwarding a clone, the
registry's tags and production record, and a server's predictor following a promotion."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, sh
from digits import paths, registry
from digits.params import Promotion
from flows import git_ops
from tasks import promote

RULES = Promotion(max_extra_errors=5, alpha=0.05, robustness_drop=0.005, worst_drop=0.02)
ROBUST = {"model": {"mean_corrupted": 0.98, "worst": 0.91}, "recognizer": {"mean_corrupted": 0.98, "worst": 0.92}}


def predictions(y: np.ndarray, wrong: int, start: int = 0) -> np.ndarray:
    """Labels equal to `y` except `wrong` rows from `start` on."""
    pred = y.copy()
    pred[start:start + wrong] = (y[start:start + wrong] + 1) % 10
    return pred


Y = np.arange(6000) % 10


def test_with_no_champion_the_challenger_is_the_first_version():
    d = promote.decide(Y, predictions(Y, 40), None, RULES, ROBUST, None)
    assert d["promote"] and d["verdict"] == "first model" and d["challenger"]["errors"] == 40


def test_a_clearly_worse_challenger_is_a_regression_and_is_not_promoted():
    d = promote.decide(Y, predictions(Y, 300), predictions(Y, 30), RULES, ROBUST, ROBUST)
    assert not d["promote"] and d["verdict"] == "regression"
    assert d["mcnemar"]["champion_only_right"] == 270 and d["mcnemar"]["challenger_only_right"] == 0
    assert d["mcnemar"]["p_value"] < 1e-50
    failed = {c["check"] for c in d["checks"] if not c["ok"]}
    assert failed == {"errors", "mcnemar"}
    assert "kept the champion" in d["reason"] and "regression" in d["reason"]


def test_a_few_more_errors_on_other_rows_are_noise_and_within_the_tolerance():
    # 33 errors against 30, on rows that differ: 30 + 33 discordant rows, p far above 0.05
    d = promote.decide(Y, predictions(Y, 33, start=3000), predictions(Y, 30), RULES, ROBUST, ROBUST)
    assert d["promote"] and d["verdict"].startswith("no significant difference")
    assert d["mcnemar"] == {"champion_only_right": 33, "challenger_only_right": 30, "p_value": pytest.approx(
        __import__("scipy.stats").stats.binomtest(30, 63, 0.5).pvalue)}


def test_more_errors_than_the_tolerance_fail_even_when_not_significant():
    d = promote.decide(Y, predictions(Y, 36, start=3000), predictions(Y, 30), RULES, ROBUST, ROBUST)
    assert not d["promote"] and d["verdict"].startswith("no significant difference")
    assert [c["check"] for c in d["checks"] if not c["ok"]] == ["errors"]


def test_a_better_challenger_is_promoted_as_an_improvement():
    d = promote.decide(Y, predictions(Y, 10), predictions(Y, 60), RULES, ROBUST, ROBUST)
    assert d["promote"] and d["verdict"] == "improvement"


def test_a_robustness_drop_beyond_its_floor_keeps_the_champion():
    weaker = {"model": {"mean_corrupted": 0.98, "worst": 0.85}, "recognizer": ROBUST["recognizer"]}
    d = promote.decide(Y, predictions(Y, 30), predictions(Y, 30), RULES, weaker, ROBUST)
    assert not d["promote"]
    [failed] = [c for c in d["checks"] if not c["ok"]]
    assert failed["check"] == "robustness model.worst" and failed["limit"] == pytest.approx(0.89)
    assert "robustness model.worst 0.85" in d["reason"]


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "config", "user.email", "ci@example.com")
    sh(path, "git", "config", "user.name", "ci")
    (path / "a.txt").write_text("one\n")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-qm", "first")
    return path


@pytest.fixture
def origin_and_clone(tmp_path):
    origin = git_repo(tmp_path / "origin")
    commit(origin, ".dvc/.gitignore", "/tmp\n", "as `dvc init` makes it: .dvc/tmp holds the flow's journal")
    sh(tmp_path, "git", "clone", "-q", str(origin), "clone")
    clone = tmp_path / "clone"
    sh(clone, "git", "config", "user.email", "ci@example.com")
    sh(clone, "git", "config", "user.name", "ci")
    return origin, clone


def commit(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)
    return git_ops.head(repo)


def test_a_clone_behind_its_branch_is_brought_forward(origin_and_clone):
    origin, clone = origin_and_clone
    before = git_ops.head(clone)
    new = commit(origin, "b.txt", "two\n", "a merged improvement")
    moved = git_ops.fast_forward(clone, "main")
    assert moved["before"] == before and moved["commit"] == new == git_ops.head(clone)
    assert len(moved["commits"]) == 1 and moved["commits"][0].endswith("a merged improvement")
    assert (clone / "b.txt").read_text() == "two\n"
    assert git_ops.fast_forward(clone, "main")["commits"] == []           # already there


def test_a_clone_with_local_changes_is_refused_naming_them_and_left_alone(origin_and_clone):
    origin, clone = origin_and_clone
    commit(origin, "b.txt", "two\n", "upstream")
    (clone / "a.txt").write_text("edited on the worker\n")
    (clone / "notes.txt").write_text("new\n")
    before = git_ops.head(clone)
    with pytest.raises(git_ops.CloneRefused, match="has local changes") as e:
        git_ops.fast_forward(clone, "main")
    assert "M a.txt" in str(e.value) and "?? notes.txt" in str(e.value)
    assert git_ops.head(clone) == before and (clone / "a.txt").read_text() == "edited on the worker\n"


def test_a_clone_with_commits_of_its_own_is_refused_naming_them(origin_and_clone):
    origin, clone = origin_and_clone
    commit(origin, "b.txt", "two\n", "upstream")
    local = commit(clone, "c.txt", "three\n", "made on the worker")
    with pytest.raises(git_ops.CloneRefused, match="cannot fast-forward") as e:
        git_ops.fast_forward(clone, "main")
    assert f"{local[:7]} made on the worker" in str(e.value)
    assert git_ops.head(clone) == local


def test_a_clone_on_another_branch_is_refused(origin_and_clone):
    _, clone = origin_and_clone
    sh(clone, "git", "switch", "-q", "-c", "experiment")
    with pytest.raises(git_ops.CloneRefused, match="not the deployed branch 'main'"):
        git_ops.fast_forward(clone, "main")


def fake_model(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name


def test_promote_tags_versions_and_rollback_makes_an_earlier_one_production(tmp_path):
    repo = git_repo(tmp_path / "repo")
    first_commit = git_ops.head(repo)
    m1 = fake_model(repo / "models", "quick-42.keras", b"first model")
    r1 = registry.promote(repo, first_commit, {"quick-42": m1}, figures={"robustness": ROBUST})
    second_commit = commit(repo, "a.txt", "two\n", "retrained")
    m1.write_bytes(b"second model")
    r2 = registry.promote(repo, second_commit, {"quick-42": m1})
    assert (r1["version"], r2["version"]) == ("v1.0.0", "v1.1.0")
    tags = sh(repo, "git", "tag", "-l").stdout.split()
    assert {"digits@v1.0.0", "digits@v1.1.0", "digits#prod#1", "digits#prod#2"} == set(tags)
    assert sh(repo, "git", "rev-list", "-n1", "digits@v1.0.0").stdout.strip() == first_commit
    assert registry.production(repo)["version"] == "v1.1.0"
    assert (repo / "serving/v1.0.0/quick-42.keras").read_bytes() == b"first model"   # each version's own copy
    assert [v["version"] for v in registry.versions(repo) if v["production"]] == ["v1.1.0"]

    back = subprocess.run([sys.executable, "-m", "digits.registry", "--repo", str(repo), "rollback", "v1.0.0"],
                          capture_output=True, text=True, cwd=ROOT)
    assert back.returncode == 0, back.stderr
    record = registry.production(repo)
    assert record["version"] == "v1.0.0" and record["commit"] == first_commit and record["rollback"]
    assert registry.production_files(record, repo)["quick-42"].read_bytes() == b"first model"
    assert record["figures"]["robustness"] == ROBUST
    assert "digits#prod#3" in sh(repo, "git", "tag", "-l").stdout.split()
    shown = subprocess.run([sys.executable, "-m", "digits.registry", "--repo", str(repo), "show"],
                           capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
    assert shown[0].startswith("  v1.1.0") and shown[1].startswith("* v1.0.0")


def test_rollback_to_an_unknown_version_fails_naming_it(tmp_path):
    repo = git_repo(tmp_path / "repo")
    out = subprocess.run([sys.executable, "-m", "digits.registry", "--repo", str(repo), "rollback", "v9.0.0"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "no version v9.0.0 of digits" in out.stderr
    assert not (repo / paths.PRODUCTION).exists()


class Fake:
    def __init__(self, version):
        self.version = version


def test_serving_swaps_to_a_newly_promoted_version_and_keeps_the_old_one_if_it_fails(tmp_path):
    from digits.serving import Serving
    record = tmp_path / paths.PRODUCTION
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"version": "v1.0.0"}))
    loads = []

    def load(root):
        version = json.loads((root / paths.PRODUCTION).read_text())["version"]
        loads.append(version)
        if version == "broken":
            raise OSError("no such model")
        return Fake(version)

    serving = Serving(Fake("v1.0.0"), root=tmp_path, load=load)
    assert not serving.check() and loads == []                # unchanged: nothing loaded
    record.write_text(json.dumps({"version": "v1.1.0"}))
    assert serving.check() and serving.current.version == "v1.1.0"
    record.write_text(json.dumps({"version": "broken"}))
    assert not serving.check() and serving.current.version == "v1.1.0"
    assert loads == ["v1.1.0", "broken"]


def test_the_gate_never_reads_the_answer_key(tmp_path, monkeypatch):
    """tasks.promote.evaluate on a repository whose answer key and score exist: every file it opens
    is recorded, and none of them is the answer key or the score."""
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and args else None)
    repo = tmp_path / "repo"
    for f in (paths.ANSWER_KEY, paths.SCORE_METRICS):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("poison\n")
    import pandas as pd

    from digits import ensemble
    from digits.io import PIXELS
    (repo / paths.SPLIT_VAL).parent.mkdir(parents=True)
    frame = pd.DataFrame(np.zeros((20, 784), np.uint8), columns=PIXELS)
    frame.insert(0, "label", np.arange(20, dtype=np.uint8) % 10)
    frame.to_parquet(repo / paths.SPLIT_VAL)
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    model = fake_model(repo / "models", "quick-42.keras", b"x")
    monkeypatch.setattr(ensemble, "load", lambda files: {n: None for n in files})
    monkeypatch.setattr(ensemble, "predict", lambda models, x, tta=(): np.eye(10, dtype=np.float32)[np.arange(len(x)) % 10])
    start = len(opened)
    decision = promote.evaluate(repo)
    assert decision["promote"] and decision["challenger"]["errors"] == 0 and decision["gate"]["rows"] == 20
    assert model.exists()
    seen = opened[start:]
    assert any(s.endswith("val.parquet") for s in seen)
    assert not [s for s in seen if "answer_key" in s or s.endswith("score.json")]


def test_the_next_run_gets_back_what_the_last_run_left_except_what_new_commits_changed(origin_and_clone):
    from flows import dvc_ops
    origin, clone = origin_and_clone
    commit(origin, "metrics.json", "{}\n", "metrics")
    commit(origin, "lock.txt", "old lock\n", "lock")
    git_ops.fast_forward(clone, "main")
    with dvc_ops.worktree_kept(clone):                      # a night: its outputs, then the restore
        (clone / "lock.txt").write_text("night 1 lock\n")
        (clone / "metrics.json").write_text('{"accuracy": 0.9}\n')
        (clone / "report.md").write_text("night 1\n")
        dvc_ops.remember_run(clone)
    assert sh(clone, "git", "status", "--porcelain").stdout == ""
    commit(origin, "metrics.json", '{"new": "format"}\n', "a change to the metrics file")
    git_ops.fast_forward(clone, "main")
    carried = dvc_ops.carry_over(clone)
    assert carried == ["lock.txt", "report.md"]
    assert (clone / "lock.txt").read_text() == "night 1 lock\n" and (clone / "report.md").read_text() == "night 1\n"
    assert (clone / "metrics.json").read_text() == '{"new": "format"}\n'     # the new commit wins
