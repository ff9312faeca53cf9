"""Stage robustness with stand-in classifiers: the accuracy arithmetic, the metrics' structure and
the files the stage writes (a fake predictor in place of the Keras model, a tiny synthetic split)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, kaggle_frame, set_params
from digits import ensemble, params
from digits.preprocess import to_mnist
from tasks import corruptions, robustness
from test_evaluate_submit import assert_plot


def by_first_pixel(images):
    """A stand-in classifier: the label is written in each image's top-left pixel."""
    return np.asarray(images)[:, 0, 0]


def encoded(labels):
    x = np.zeros((len(labels), 28, 28), np.uint8)
    x[:, 0, 0] = labels
    return x


def test_measure_reports_clean_and_corrupted_accuracy_and_the_error_ratio():
    y = np.array([0, 1, 2, 3])
    sets = {"clean": encoded([0, 1, 2, 9]),                       # 3 of 4 right: error 0.25
            "blur": encoded([0, 9, 9, 9]),                        # 1 of 4
            "noise": encoded([0, 1, 2, 3])}                       # 4 of 4
    out = robustness.measure({"m": by_first_pixel}, sets, y, log=lambda *_: None)
    assert out == {"m": {"clean": 0.75, "mean_corrupted": 0.625, "corruptions": {"blur": 0.25, "noise": 1.0},
                         "relative_error": pytest.approx(0.375 / 0.25)}}


def test_relative_error_has_no_value_when_the_clean_images_are_all_right():
    y = np.array([4, 5])
    out = robustness.measure({"m": by_first_pixel}, {"clean": encoded(y), "c": encoded([4, 0])}, y, log=lambda *_: None)
    assert out["m"]["relative_error"] is None and out["m"]["mean_corrupted"] == 0.5


def test_corrupted_gives_the_clean_images_then_every_corruption():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    sets = robustness.corrupted(x, seed=1)
    assert list(sets) == ["clean", *corruptions.CORRUPTIONS]
    assert sets["clean"] is x and all(s.shape == x.shape and s.dtype == np.uint8 for s in sets.values())
    np.testing.assert_array_equal(sets["fog"], corruptions.corrupt(x, "fog", 1))


def test_baselines_are_fitted_as_stage_baselines_fits_them_and_classify_images():
    frame = kaggle_frame(60)
    x, y = frame.drop(columns="label").to_numpy(np.uint8), frame["label"].to_numpy()
    cfg = params.Baseline(train_size=40, pca=0, standardize=False, options={"max_depth": 3})
    fitted = robustness.fit_baselines(["decision_tree"], {"decision_tree": cfg}, x, y, seed=0, log=lambda *_: None)
    labels = fitted["decision_tree"](x[:7].reshape(7, 28, 28))
    assert labels.shape == (7,) and set(labels) <= set(range(10))


def test_the_stage_writes_metrics_and_plots(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    set_params(tmp_path, **{"robustness.images": 25, "robustness.recognizer_images": 10,
                            "robustness.baselines": ["decision_tree"]})
    (tmp_path / "data/split").mkdir(parents=True)
    kaggle_frame(120, seed=1).to_parquet(tmp_path / "data/split/train.parquet")
    kaggle_frame(40, seed=2).to_parquet(tmp_path / "data/split/val.parquet")
    set_params(tmp_path, **{"ensemble.members": {"a": {"preset": "quick", "seed": 1}, "b": {"preset": "quick", "seed": 2}}})

    class Fake:                             # stands in for a Keras member: predict_on_batch only
        def predict_on_batch(self, x):
            return np.eye(10, dtype=np.float32)[np.asarray(x).reshape(len(x), -1).sum(1) % 10]
    (tmp_path / "models").mkdir()
    for name in ("a", "b"):
        (tmp_path / "models" / f"{name}.keras").write_bytes(name.encode())
    monkeypatch.setattr(ensemble, "model_files", lambda members: {m: tmp_path / "models" / f"{m}.keras" for m in members})
    monkeypatch.setattr(ensemble, "load", lambda files: {name: Fake() for name in files})
    monkeypatch.chdir(tmp_path)
    robustness.main()

    metrics = json.loads((tmp_path / "metrics/details/robustness.json").read_text())
    assert metrics["images"] == 25 and list(metrics["models"]) == ["cnn", "cnn a", "cnn b", "decision_tree"]
    assert metrics["models"]["cnn"] == metrics["models"]["cnn a"]         # identical members: same answers
    for m in metrics["models"].values():
        assert set(m) == {"clean", "mean_corrupted", "relative_error", "corruptions"}
        assert set(m["corruptions"]) == set(corruptions.CORRUPTIONS)     # (the JSON sorts its keys)
        assert m["mean_corrupted"] == pytest.approx(np.mean(list(m["corruptions"].values())))
    via = metrics["recognizer"]
    assert via["images"] == 10 and list(via["models"]) == ["cnn"]
    assert set(via["models"]["cnn"]["corruptions"]) == set(corruptions.CORRUPTIONS)
    assert all(0 <= a <= 1 for a in via["models"]["cnn"]["corruptions"].values())
    rows = (tmp_path / "plots/robustness/accuracy.csv").read_text().splitlines()
    assert rows[0] == "corruption,model,accuracy" and len(rows) == 1 + 4 * (1 + len(corruptions.CORRUPTIONS))
    assert rows[1].startswith("clean,cnn,")
    rows = (tmp_path / "plots/robustness/recognizer.csv").read_text().splitlines()
    assert rows[0] == "corruption,model,accuracy" and len(rows) == 1 + 1 + len(corruptions.CORRUPTIONS)
    # the headline file: the CNN's mean and worst corruption on each path
    headline = json.loads((tmp_path / "metrics/robustness.json").read_text())
    cnn, via_cnn = metrics["models"]["cnn"], via["models"]["cnn"]
    assert headline == {"model": {"mean_corrupted": cnn["mean_corrupted"], "worst": min(cnn["corruptions"].values())},
                        "recognizer": {"mean_corrupted": via_cnn["mean_corrupted"],
                                       "worst": min(via_cnn["corruptions"].values())}}
    assert_plot(tmp_path / "plots/robustness/accuracy.png", min_side=400)   # 4 inches high at 110 dpi
    assert_plot(tmp_path / "plots/robustness/examples.png", min_side=250)   # two rows of nine digits


def test_the_recognizer_path_reads_png_files_with_the_cli_s_code_and_counts_no_ink_as_wrong():
    from test_corruptions import digits
    seen = []

    def predictor(images):                  # the recognizer's predictor: 28 x 28 images -> probabilities
        seen.append(np.asarray(images))
        return np.eye(10, dtype=np.float32)[np.full(len(images), 7)]
    x = digits()
    x[1] = 0                                # a blank image: the recognizer finds no digit in it
    labels = robustness.through_recognizer(predictor)(x)
    assert labels.tolist() == [7, -1, 7, 7]
    got = np.concatenate(seen)
    assert got.shape == (3, 28, 28) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], to_mnist(Image.fromarray(x[0])))     # what the CLI's preprocessing makes
