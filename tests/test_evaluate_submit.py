"""Metrics on hand-made predictions, the submission checker's rules, score without a key, PNGs."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from tasks import evaluate, plots, predict, score, submission
from tasks.cli import DataError

PNG = b"\x89PNG\r\n\x1a\n"


def test_metrics_on_a_hand_made_prediction_set():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    pred = y.copy()
    pred[1] = 1           # one 0 called 1
    pred[12] = 9 - 1      # the 9 at index 12 called 8
    probs = np.full((len(y), 10), 0.01)
    probs[np.arange(len(y)), pred] = 0.91
    m = evaluate.classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(12 / 14) and m["errors"] == 2 and m["n"] == 14
    assert m["per_class"]["0"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["1"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["1"]["recall"] == 1.0
    assert m["per_class"]["8"]["precision"] == 0.5
    # F1 per class: 0: 2/3, 1: 0.8, 8: 2/3, 9: 2/3, the other six 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 * 3 + 0.8 + 6) / 10)
    expected_loss = -(12 * np.log(0.91) + 2 * np.log(0.01)) / 14
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_one_vs_rest_auc_is_1_for_a_perfect_ranking():
    y = np.repeat(np.arange(10), 3)
    probs = np.eye(10)[y] * 0.9 + 0.01
    roc, pr = evaluate.one_vs_rest(y, probs)
    assert all(v[2] == 1.0 for v in roc.values()) and all(v[2] == 1.0 for v in pr.values())


def write_sub(path, ids, labels, header="ImageId,Label"):
    path.write_text(header + "\n" + "".join(f"{i},{l}\n" for i, l in zip(ids, labels)))
    return path


@pytest.mark.parametrize("ids, labels, header, rows, message", [
    ([1, 2, 3], [1, 2, 3], "ImageId,Label", 3, None),
    ([1, 2, 3], [1, 2, 3], "id,label", 3, "header is 'id,label', expected 'ImageId,Label'"),
    ([1, 2], [1, 2], "ImageId,Label", 3, "2 rows, expected 3 (one per test image)"),
    ([1, 2, 2], [1, 2, 3], "ImageId,Label", 3, "duplicate ImageIds: 2; missing ImageIds: 3"),
    ([1, 2, 4], [1, 2, 3], "ImageId,Label", 3, "1 ImageId values not integers in 1..3 (rows 3); missing ImageIds: 3"),
    ([1, 2, 3], [1, 10, -1], "ImageId,Label", 3, "2 Label values not integers in 0..9 (rows 2, 3)"),
    ([1, 2, 3], [1, "x", 2.5], "ImageId,Label", 3, "2 Label values not integers in 0..9 (rows 2, 3)"),
])
def test_checker_rules(tmp_path, ids, labels, header, rows, message):
    path = write_sub(tmp_path / "s.csv", ids, labels, header)
    if message is None:
        assert submission.check(path, rows) == 3
    else:
        with pytest.raises(DataError) as err:
            submission.check(path, rows)
        assert str(err.value) == f"{path}: {message}"


def test_checker_cli_exit_codes(tmp_path):
    good = write_sub(tmp_path / "good.csv", [1, 2], [3, 4])
    bad = write_sub(tmp_path / "bad.csv", [1, 1], [3, 4])
    run = lambda *a: subprocess.run([sys.executable, "-m", "tasks.submission", *a], cwd=ROOT,
                                    capture_output=True, text=True)
    ok = run(str(good), "--rows", "2")
    assert ok.returncode == 0 and "valid Kaggle submission (2 rows)" in ok.stdout
    no = run(str(bad))
    assert no.returncode == 1 and "duplicate ImageIds: 1" in no.stderr


def test_write_submission_is_kaggle_format_with_probabilities(tmp_path):
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=7).astype(np.float32)
    predict.write_submission(probs, tmp_path / "sub.csv", tmp_path / "p.parquet")
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub.columns) == ["ImageId", "Label"] and sub.ImageId.tolist() == list(range(1, 8))
    assert sub.Label.tolist() == probs.argmax(1).tolist()
    p = pd.read_parquet(tmp_path / "p.parquet")
    assert p.shape == (7, 11) and np.allclose(p[[f"p{c}" for c in range(10)]].to_numpy(), probs)


def test_score_with_and_without_answer_key(tmp_path):
    sub = write_sub(tmp_path / "s.csv", [1, 2, 3, 4], [1, 2, 3, 4])
    key = write_sub(tmp_path / "k.csv", [1, 2, 3, 4], [1, 2, 0, 4])
    assert score.score(sub, key) == {"answer_key": True, "test_accuracy": 0.75, "test_errors": 1, "test_n": 4}
    none = score.score(sub, tmp_path / "absent.csv")
    assert none["answer_key"] is False and "no answer key" in none["note"]


def test_plots_are_png_files(tmp_path):
    plots.confusion(np.arange(100).reshape(10, 10), tmp_path / "cm.png")
    plots.digit_grid(np.zeros((3, 28, 28)), ["a", "b", "c"], tmp_path / "grid.png")
    plots.bars(range(3), [3, 1, 2], tmp_path / "bars.png", "t", "n")
    for name in ("cm.png", "grid.png", "bars.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
