"""Metrics on hand-made predictions, the submission checker's rules, score, the report, PNGs."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT
from digits import paths
from digits.cli import DataError
from digits.io import write_json
from tasks import evaluate, plots, predict, report, score, submission


def assert_plot(path, min_side=100):
    """A real picture: opens as a PNG of at least min_side pixels each way, not one flat colour."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"))
    assert min(pixels.shape) >= min_side and pixels.std() > 0, path


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


def test_headline_metrics_are_the_figures_compared_across_runs():
    """metrics/evaluate.json keeps 7 figures; per class, per member and calibration go to the details."""
    y = np.array([0, 1, 2, 3, 3])
    probs = np.eye(10)[[0, 1, 2, 3, 2]] * 0.9 + 0.01
    result = evaluate.classification_metrics(y, probs) | {
        "ensemble": {"size": 2, "tta": [], "members": {"a": 0.8, "b": 0.6}, "accuracy_without_tta": 0.8,
                     "accuracy_with_tta": 0.9, "tta_measured": ["shift"]},
        "calibration": {"temperature": 1.2, "before": {"ece": 0.05, "mce": 0.3}, "after": {"ece": 0.02, "mce": 0.2}}}
    assert evaluate.headline(result) == {"accuracy": 0.8, "errors": 1, "loss": result["loss"],
                                         "ensemble": {"size": 2, "accuracy_with_tta": 0.9},
                                         "calibration": {"ece": 0.05, "temperature": 1.2}}


def test_one_vs_rest_auc_is_1_for_a_perfect_ranking():
    y = np.repeat(np.arange(10), 3)
    probs = np.eye(10)[y] * 0.9 + 0.01
    roc, pr = evaluate.one_vs_rest(y, probs)
    assert all(v[2] == 1.0 for v in roc.values()) and all(v[2] == 1.0 for v in pr.values())


def write_sub(path, ids, labels, header="ImageId,Label"):
    path.write_text(header + "\n" + "".join(f"{i},{label}\n" for i, label in zip(ids, labels)))
    return path


@pytest.mark.parametrize("ids, labels, header, rows, message", [
    ([1, 2, 3], [1, 2, 3], "ImageId,Label", 3, None),
    ([1, 2, 3], [1, 2, 3], "id,label", 3, "header is 'id,label', expected 'ImageId,Label'"),
    ([1, 2], [1, 2], "ImageId,Label", 3, "2 rows, expected 3 (one per test image)"),
    ([1, 2, 2], [1, 2, 3], "ImageId,Label", 3, "duplicate ImageIds: 2; missing ImageIds: 3"),
    ([1, 2, 4], [1, 2, 3], "ImageId,Label", 3, "1 ImageId values not integers in 1..3 (rows 3); missing ImageIds: 3"),
    ([1, 2, 3], [1, 10, -1], "ImageId,Label", 3, "2 Label values not integers in 0..9 (rows 2, 3)"),
    ([1, 2, 3], [1, "x", 2.5], "ImageId,Label", 3, "2 Label values not integers in 0..9 (rows 2, 3)"),
    # Kaggle's format is integers: a label or id written as a float is rejected even if whole
    ([1, 2, 3], [1, "1.0", 2], "ImageId,Label", 3, "1 Label values not integers in 0..9 (rows 2)"),
    ([1, "2.0", 3], [1, 2, 3], "ImageId,Label", 3, "1 ImageId values not integers in 1..3 (rows 2); missing ImageIds: 2"),
])
def test_checker_rules(tmp_path, ids, labels, header, rows, message):
    path = write_sub(tmp_path / "s.csv", ids, labels, header)
    if message is None:
        assert submission.check(path, rows) == 3
    else:
        with pytest.raises(DataError) as err:
            submission.check(path, rows)
        assert str(err.value) == f"{path}: {message}"


def checker(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks.submission", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_checker_cli_exit_codes(tmp_path):
    good = write_sub(tmp_path / "good.csv", [1, 2], [3, 4])
    bad = write_sub(tmp_path / "bad.csv", [1, 1], [3, 4])
    ok = checker(good, "--rows", 2)
    assert ok.returncode == 0 and "valid Kaggle submission (2 rows)" in ok.stdout
    no = checker(bad)
    assert no.returncode == 1 and "duplicate ImageIds: 1" in no.stderr


def test_checker_cli_names_a_file_it_cannot_read(tmp_path):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"ImageId,Label\n1,\xff\xfe\x00\x81\n")
    for path, why in [(tmp_path / "absent.csv", "cannot be read (No such file or directory)"),
                      (tmp_path, "cannot be read (Is a directory)"),
                      (garbage, "not a UTF-8 text CSV (invalid start byte at byte 16)")]:
        proc = checker(path)
        assert (proc.returncode, proc.stderr) == (1, f"error: {path}: {why}\n")


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


def test_score_names_the_file_when_ids_do_not_match_the_key(tmp_path):
    key = write_sub(tmp_path / "k.csv", [1, 2, 3, 4], [1, 2, 0, 4])
    shuffled = write_sub(tmp_path / "s.csv", [1, 3, 2, 4], [1, 2, 0, 4])
    with pytest.raises(DataError) as err:
        score.score(shuffled, key)
    assert str(err.value) == (f"{shuffled}: ImageIds do not match the answer key {key}: "
                              "2 differ, the first at row 2 (3 where the key has 2)")
    short = write_sub(tmp_path / "short.csv", [1, 2, 3], [1, 2, 0])
    with pytest.raises(DataError) as err:
        score.score(short, key)
    assert str(err.value) == f"{short}: 3 rows, the answer key {key} has 4"


def write_run_metrics(score_metrics=None, baselines=None):
    """Hand-made metrics of a run, where the stages write them (relative to the working directory)."""
    for name, seed, seconds in (("quick-42", 42, 250.0), ("quick-7", 7, 260.5)):
        write_json(paths.member(name).details, {
            "member": name, "preset": "quick", "seed": seed, "epochs": 12, "best_epoch": 11, "train_seconds": seconds,
            "stage_seconds": seconds + 21.5, "train_cpu_seconds": 2 * seconds, "images_per_second": 2600.5,
            "device": "device: CPU", "machine": "2 CPU cores, AMD EPYC, AVX2", "train_images": 54000})
    classes = [str(c) for c in range(10)]
    write_json(paths.EVALUATE_DETAILS, {
        "ensemble": {"size": 2, "tta": [], "members": {"quick-42": 0.9945, "quick-7": 0.9941},
                     "accuracy_without_tta": 0.9952, "accuracy_with_tta": 0.9950, "tta_measured": ["shift", "rotate"]},
        "accuracy": 0.9952, "errors": 29, "n": 6000, "loss": 0.0171, "macro_f1": 0.9951,
        "per_class": {c: {"precision": 0.99, "recall": 0.98, "f1": 0.985, "support": 600} for c in classes},
        "roc_auc": dict.fromkeys(classes, 0.99999), "average_precision": dict.fromkeys(classes, 0.9999)})
    if score_metrics:
        write_json(paths.SCORE_METRICS, score_metrics)
    if baselines:
        write_json(paths.BASELINE_DETAILS, baselines)


def tables(text: str) -> dict:
    """{section title: its table's rows, header first, as lists of cell strings}."""
    out, title = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|") and not line.startswith("|---"):
            out.setdefault(title, []).append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def test_report_with_answer_key_and_baselines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = lambda acc: {"val_accuracy": acc, "train_size": 54000, "fit_seconds": 12.34, "predict_seconds": 0.5, "note": ""}
    detector = {"digit": 5, "folds": 3, "train_size": 20000, "cv_precision": 0.9, "cv_recall": 0.8, "cv_f1": 0.85,
                "requested_precision": 0.9, "threshold": 1.5, "precision_at_threshold": 0.91,
                "recall_at_threshold": 0.7, "sgd_roc_auc": 0.96, "forest_roc_auc": 0.99}
    write_run_metrics({"answer_key": True, "test_accuracy": 0.9957, "test_errors": 43, "test_n": 10000},
                      {"models": {"knn": model(0.97), "svc_rbf": model(0.98)}, "detector": detector})
    (tmp_path / paths.EVAL_PLOTS).mkdir(parents=True)
    (tmp_path / paths.EVAL_PLOTS / "confusion_matrix.png").write_bytes(b"")
    summary = lambda ece: {"ece": ece, "mce": 0.2, "brier": 0.01, "nll": 0.02, "accuracy": 0.995, "mean_confidence": 0.99}
    ev = json.loads(paths.EVALUATE_DETAILS.read_text())
    write_json(paths.EVALUATE_DETAILS, ev | {"calibration": {
        "temperature": 1.25, "fitted_on": "even rows of the validation split", "measured_on": "odd rows",
        "before": summary(0.004), "after": summary(0.0015)}})
    robust = lambda clean, fog: {"clean": clean, "mean_corrupted": (clean + fog) / 2,
                                 "relative_error": (1 - (clean + fog) / 2) / (1 - clean), "corruptions": {"fog": fog}}
    write_json(paths.ROBUSTNESS_DETAILS, {"images": 2000, "models": {"cnn": robust(0.99, 0.95), "svc_rbf": robust(0.98, 0.5)},
                                          "recognizer": {"images": 1000, "models": {"cnn": robust(0.98, 0.9)}}})
    text = report.render()
    t = tables(text)
    assert t["Calibration (validation, odd rows)"][1] == ["ece", "0.0040", "0.0015"]
    assert "Temperature 1.250, fitted on the even rows of the validation split." in text
    assert t["Robustness: the recognizer path (the first 1,000 of them)"] == [
        ["corruption", "cnn"], ["**clean**", "**0.9800**"], ["fog", "0.9000"],
        ["**mean over corruptions**", "**0.9400**"], ["error relative to clean", "3.0x"]]
    assert t["Robustness: the model path (2,000 validation images per corruption)"] == [
        ["corruption", "cnn", "svc_rbf"], ["**clean**", "**0.9900**", "**0.9800**"], ["fog", "0.9500", "0.5000"],
        ["**mean over corruptions**", "**0.9700**", "**0.7400**"], ["error relative to clean", "3.0x", "13.0x"]]
    assert ["**test accuracy (answer key)**", "**0.9957** (43 errors of 10000)"] in t["Summary"]
    assert ["validation errors", "29 of 6000"] in t["Summary"] and ["ensemble", "2 member(s), TTA none"] in t["Summary"]
    assert ["machine", "2 CPU cores, AMD EPYC, AVX2"] in t["Summary"]
    assert ["training time", "510.5 s of epochs, 1021.0 CPU s (all members)"] in t["Summary"]
    assert t["Ensemble members (validation)"] == [
        ["member", "preset", "seed", "val. accuracy", "epochs (best)", "train s", "CPU s", "stage s"],
        ["quick-42", "quick", "42", "0.9945", "12 (11)", "250.0", "500.0", "271.5"],
        ["quick-7", "quick", "7", "0.9941", "12 (11)", "260.5", "521.0", "282.0"],
        ["**ensemble, no TTA**", "", "", "**0.9952**", "", "", "", ""],
        ["**ensemble, TTA shift+rotate**", "", "", "**0.9950**", "", "", "", ""]]
    assert len(t["Per-class report (validation)"]) == 11
    assert t["Per-class report (validation)"][4] == ["3", "0.9900", "0.9800", "0.9850", "600", "0.99999", "0.99990"]
    baselines = t["Baselines (same split)"]
    assert [row[0] for row in baselines] == ["model", "knn", "svc_rbf", "**CNN ensemble (this run)**"]
    assert baselines[-1] == ["**CNN ensemble (this run)**", "**0.9952**", "54000", "510.5", "", "2 member(s): quick-42, quick-7"]
    assert ["threshold for 90% precision", "1.500"] in t["Binary detector: is it a 5? (3-fold CV, 20000 images)"]
    assert "![Confusion matrix](../plots/evaluate/confusion_matrix.png)" in text   # relative to reports/
    assert "## ROC curves" not in text                                              # no such plot


def test_report_without_answer_key_or_baselines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run_metrics({"answer_key": False, "note": "no answer key"})
    t = tables(report.render())
    assert ["test accuracy", "no answer key (Kaggle's files)"] in t["Summary"]
    assert not any("answer key)" in row[0] for row in t["Summary"])
    assert set(t) == {"Summary", "Ensemble members (validation)", "Per-class report (validation)"}
    (tmp_path / paths.SCORE_METRICS).unlink()                     # the score stage has not run
    assert ["test accuracy", "no answer key (Kaggle's files)"] in tables(report.render())["Summary"]


def test_plots_are_png_files(tmp_path):
    plots.confusion(np.arange(100).reshape(10, 10), tmp_path / "cm.png")
    plots.digit_grid(np.zeros((3, 28, 28)), ["a", "b", "c"], tmp_path / "grid.png")
    plots.bars(range(3), [3, 1, 2], tmp_path / "bars.png", "t", "n")
    for name in ("cm.png", "grid.png", "bars.png"):
        assert_plot(tmp_path / name)


def test_confused_pairs_count_every_misclassified_pair_most_frequent_first():
    y = np.array([4, 4, 4, 9, 7, 7, 1, 3])
    pred = np.array([9, 9, 4, 4, 1, 1, 1, 5])
    assert evaluate.confused_pairs(y, pred) == [[4, 9, 2], [7, 1, 2], [3, 5, 1], [9, 4, 1]]
    assert evaluate.confused_pairs(y, y) == []


def test_the_model_card_names_the_figures_of_the_run_it_describes(tmp_path, monkeypatch):
    from digits import params as params_mod
    from tasks import model_card
    p = params_mod.load(ROOT / "params.yaml")
    monkeypatch.chdir(tmp_path)
    write_run_metrics()
    ev = json.loads(paths.EVALUATE_DETAILS.read_text()) | {"confused_pairs": [[4, 9, 7], [7, 2, 5], [3, 5, 1]]}
    robust = lambda accs: {"clean": 0.99, "mean_corrupted": 0.97, "corruptions": accs}
    robustness = {"images": 2000, "models": {"cnn": robust({"fog": 0.99, "zigzag": 0.91, "rotate": 0.97, "stripe": 0.95})},
                  "recognizer": {"images": 1000, "models": {"cnn": robust({"fog": 0.98, "zigzag": 0.92, "rotate": 0.96})}}}
    exports = {"images": 28_000, "members": {"quick-42": {"onnx": {
        "file": "quick-42/model.onnx", "bytes": 1_234_567, "sha256": "ab" * 32, "max_abs_difference": 7.2e-7}}}}
    score_metrics = {"answer_key": True, "test_accuracy": 0.996, "test_errors": 40, "test_n": 10000}
    text = model_card.render(p, ev, score_metrics, report.members(ev), robustness, exports)
    t = tables(text)
    assert ["validation accuracy", "0.9952 (29 errors of 6,000)"] in t["Figures"]
    assert ["answer-key accuracy (held out, never used to choose)", "0.9960 (40 errors of 10,000)"] in t["Figures"]
    assert ["robustness, recognizer path (1,000 images as PNG files)", "mean 0.9700, clean 0.9900"] in t["Figures"]
    assert "on all 28,000 test images" in text
    assert t["Exports"][1] == ["quick-42", "onnx", "quick-42/model.onnx", "1,234,567", f"`{'ab' * 32}`", "7.2e-07"]
    assert "- Most confused (validation, actual -> predicted): 4 -> 9 (7), 7 -> 2 (5), 3 -> 5 (1)" in text
    assert "- Worst corruptions, model path: zigzag 91.0%, stripe 95.0%, rotate 97.0%" in text
    assert "- Worst corruptions, recognizer path: zigzag 92.0%, rotate 96.0%, fog 98.0%" in text
    quick = p.train.presets["quick"]
    assert f"- **quick-42**: {quick.epochs} epochs, batch {quick.batch_size}" in text
    assert "trained on 54,000 images in 250 s (device: CPU; 2 CPU cores, AMD EPYC, AVX2)" in text
    assert f"{p.split.val_fraction:.0%} of them held out for validation" in text
    bare = model_card.render(p, ev | {"confused_pairs": []}, None, report.members(ev), None, None)
    assert "None in this run." in bare and "answer-key" not in bare and "No validation image was misclassified" in bare
