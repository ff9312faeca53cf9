"""The CLI as a user runs it: python -m digits.recognize PATH [PATH ...] (files and folders)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from digits import recognize
from digits.preprocess import open_image, to_mnist
from probes import render


def cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "digits.recognize", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(mnist, predictor, tmp_path_factory):
    """A folder of six rendered MNIST digits the test model gets right, two unreadable files, a blank
    image and a text file; returns (folder, {file name: digit})."""
    folder = tmp_path_factory.mktemp("photos")
    x, y = mnist[2].reshape(-1, 28, 28), mnist[3]
    right = np.flatnonzero(predictor(x[:200]).argmax(axis=1) == y[:200])
    rng = np.random.default_rng(5)
    labels = {}
    for k, i in enumerate(right[:6]):
        kind = render.KINDS[k % 2]
        name = f"digit{k}.{'jpg' if kind == 'jpeg' else 'png'}"
        (folder / name).write_bytes(render.render(x[i], kind, rng))
        labels[name] = int(y[i])
    (folder / "nested").mkdir()
    (folder / "nested" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    Image.new("L", (120, 90), 255).save(folder / "blank.png")
    (folder / "cut.jpg").write_bytes((folder / "digit0.jpg").read_bytes()[:400])     # truncated
    (folder / "notes.txt").write_text("not an image, and not an image extension: skipped in folders")
    return folder, labels


@pytest.mark.integration                # the command in its own process, with a trained model
def test_a_folder_as_json_lines_with_the_images_the_model_saw(photos, tmp_path, digit_model):
    folder, labels = photos
    notes, saved = folder / "notes.txt", tmp_path / "seen"
    proc = cli(folder, notes, "--json", "--save-preprocessed", saved, "--model", digit_model)
    assert proc.returncode == 1                                   # some files failed...
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in records) == sorted(labels)   # ...the rest answered
    for r in records:
        assert set(r) == {"path", "digit", "confidence", "probabilities", "preprocessed"}
        probs = np.array(r["probabilities"])
        assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-4
        assert r["digit"] == probs.argmax() == labels[os.path.basename(r["path"])]
        assert r["confidence"] == pytest.approx(probs.max(), abs=1e-6)
        seen = np.asarray(Image.open(r["preprocessed"]))
        assert seen.shape == (28, 28) and np.array_equal(seen, to_mnist(open_image(r["path"])))
    errors = proc.stderr.splitlines()
    assert any("broken.png" in e and "not an image" in e for e in errors), proc.stderr
    assert any("cut.jpg" in e and "cannot decode" in e for e in errors), proc.stderr
    assert any("blank.png" in e and "no ink" in e for e in errors), proc.stderr
    assert any("notes.txt" in e and "not an image" in e for e in errors), proc.stderr
    assert "4 of 10 files could not be recognized" in proc.stderr


@pytest.mark.integration
def test_one_file_with_the_top_guesses(photos, digit_model):
    folder, labels = photos
    name = sorted(labels)[0]
    proc = cli(folder / name, "--top", "3", "--model", digit_model)
    assert proc.returncode == 0, proc.stderr
    line, = proc.stdout.splitlines()
    head, then = line.split("; then ")
    assert head.startswith(f"{folder / name}: {labels[name]} (") and head.endswith("%)")
    assert len(then.split(", ")) == 2


def test_a_missing_model_is_a_clear_error(photos, tmp_path):
    folder, _ = photos
    proc = cli(folder, "--model", tmp_path / "none.keras")
    assert proc.returncode == 1 and "none.keras: no model" in proc.stderr


def test_folders_expand_to_their_image_files_only(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/x.PNG", "a/b/y.jpg", "a/z.txt", ".hidden/w.png", "v.webp"):
        (tmp_path / name).write_bytes(b"")
    files = recognize.image_files([tmp_path, tmp_path / "a" / "z.txt"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/b/y.jpg", "a/x.PNG", "v.webp", "a/z.txt"]


def test_the_line_format():
    probs = np.array([0.01, 0.9, 0.05, 0, 0, 0, 0, 0.04, 0, 0])
    assert recognize.describe("p.png", probs, 1) == "p.png: 1 (90.0%)"
    assert recognize.describe("p.png", probs, 3) == "p.png: 1 (90.0%); then 2 (5.0%), 7 (4.0%)"


def test_output_goes_to_the_streams_of_the_moment_of_the_call(tmp_path, capsys):
    """A caller that redirects sys.stdout/sys.stderr after importing the module gets the lines."""
    good, bad = tmp_path / "one.png", tmp_path / "broken.png"
    Image.fromarray(np.pad(np.full((12, 4), 255, np.uint8), 8)).save(good)
    bad.write_bytes(b"not an image")
    failed = recognize.recognize([good, bad], lambda x: np.tile(np.eye(10)[7], (len(x), 1)))
    captured = capsys.readouterr()
    assert failed == 1
    assert captured.out == f"{good}: 7 (100.0%)\n"
    assert captured.err.startswith(f"error: {bad}: ")


class Stub:
    """A predictor that always says 1 (90%), under a made-up hash."""
    sha256 = "f" * 64

    def __call__(self, images):
        return np.tile(np.array([0.01, 0.9] + [0.01125] * 8, np.float32), (len(images), 1))


def test_label_stores_the_image_the_model_saw_as_feedback(tmp_path, monkeypatch, capsys):
    from digits import feedback
    photo = tmp_path / "one.png"
    Image.fromarray(np.pad(np.full((30, 6), 0, np.uint8), 30, constant_values=255)).save(photo)
    monkeypatch.setattr(recognize, "load_predictor", lambda *a, **k: Stub())
    url = f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}"
    assert recognize.main([str(photo), "--label", "7", "--feedback-db", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{photo}: 1 (90.0%)", "feedback #1 saved for review (python -m digits.feedback list)"]
    item, = feedback.items(feedback.open_store(url))
    assert (item.label, item.predicted, item.source, item.client, item.model_version) == (7, 1, "cli", "cli", "f" * 12)
    assert item.confidence == pytest.approx(0.9) and np.array_equal(item.image, to_mnist(open_image(photo)))


@pytest.mark.parametrize("paths", [["a.png", "b.png"], ["."]])
def test_label_needs_exactly_one_image_file(paths, capsys):
    with pytest.raises(SystemExit) as exit:
        recognize.main([*paths, "--label", "3"])
    assert exit.value.code == 2 and "--label goes with exactly one image file" in capsys.readouterr().err
