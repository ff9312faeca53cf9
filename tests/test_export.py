"""The export stage on the session's small model: each format written, its parity checked in a fresh
process, the uint8 contract kept, augmentation left out, and a mismatch failing the stage."""
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from digits import formats, paths
from digits.io import sha256
from model_fixture import EXPORT_IMAGES as IMAGES
from model_fixture import make_export_inputs as make_inputs
from tasks import export


@pytest.fixture(scope="module")
def repo(exported_repo):
    """A repository after the export stage ran on it (shared with the light server's tests)."""
    return exported_repo


@pytest.fixture(scope="module")
def images(mnist):
    return mnist[2][:IMAGES].reshape(-1, 28, 28, 1)


def test_the_stage_writes_every_format_with_its_parity_figures(repo):
    folder = repo / paths.EXPORTS_DIR / "small"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.tflite", "saved_model"]
    assert (folder / "saved_model" / "saved_model.pb").is_file()
    details = json.loads((repo / paths.EXPORT_DETAILS).read_text())
    assert details["images"] == IMAGES and details["tolerance"] == 1e-5
    assert set(details["members"]) == {"small"} and set(details["members"]["small"]) == set(formats.FILES)
    for fmt, f in details["members"]["small"].items():
        assert f["disagreements"] == 0 and 0 <= f["max_abs_difference"] <= 1e-5 and f["images"] == IMAGES, fmt
        assert f["bytes"] > 10_000 and f["export_seconds"] > 0
        assert f["sha256"] == export.digest(folder / formats.FILES[fmt])
    assert details["members"]["small"]["onnx"]["sha256"] == sha256(folder / "model.onnx")
    headline = json.loads((repo / paths.EXPORT_METRICS).read_text())
    assert headline["disagreements"] == 0 and headline["members"] == 1 and headline["formats"] == 3
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]          # no temporary folder left


def test_the_manifest_says_how_to_combine_members_and_views(repo):
    from digits import ensemble
    m = json.loads((repo / paths.EXPORT_MANIFEST).read_text())
    assert m["input"] | {"values": ""} == {"name": "image", "dtype": "uint8", "shape": [None, 28, 28, 1], "values": ""}
    assert m["output"]["shape"] == [None, 10] and m["tta"] == ["shift"]
    small = m["members"]["small"]
    assert small["files"] == {"saved_model": "small/saved_model", "onnx": "small/model.onnx",
                              "litert": "small/model.tflite"}
    assert small["source_sha256"] == sha256(repo / "models" / "small.keras")
    assert [(v["view"], v.get("rows"), v.get("columns")) for v in m["views"]] == \
        [("image", None, None)] + [("shift", dy, dx) for dy, dx in ensemble.SHIFTS]
    assert "mean" in m["combine"]


def test_each_format_takes_uint8_and_answers_float32_probabilities(repo):
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    folder = repo / paths.EXPORTS_DIR / "small"
    serve = tf.saved_model.load(str(folder / "saved_model")).signatures["serve"]
    (spec,) = serve.structured_input_signature[1].values()
    assert (spec.name, spec.dtype, spec.shape.as_list()) == ("image", tf.uint8, [None, 28, 28, 1])
    (out,) = serve.structured_outputs.values()
    assert (out.dtype, out.shape.as_list()) == (tf.float32, [None, 10])
    (inp,) = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).get_inputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(uint8)", [28, 28, 1])
    interpreter = Interpreter(model_path=str(folder / "model.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 28, 28, 1]
    assert interpreter.get_output_details()[0]["dtype"] == np.float32


def test_the_exports_hold_no_augmentation_and_the_keras_model_keeps_it(repo, digit_model):
    import onnx

    from digits import model as model_mod
    model = model_mod.load(digit_model)
    names = [layer.name for layer in export.inference_model(model).layers]
    assert "augment" not in names and "degrade" not in names and names[:2] == ["scale", "levels"]
    assert {"augment", "degrade"} <= {layer.name for layer in model.layers}
    ops = {node.op_type for node in onnx.load(repo / paths.EXPORTS_DIR / "small" / "model.onnx").graph.node}
    assert not {op for op in ops if op.startswith("Random")} and {"Conv", "Softmax"} <= ops


def test_a_fresh_process_imports_nothing_of_the_project(repo, images, tmp_path):
    np.save(tmp_path / "x.npy", images)
    report = export.run_isolated("onnx", repo / paths.EXPORTS_DIR / "small" / "model.onnx", tmp_path / "x.npy",
                                 tmp_path / "p.npy")
    assert report["project_modules"] == [] and report["images"] == IMAGES
    probs = np.load(tmp_path / "p.npy")
    assert probs.shape == (IMAGES, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 28, 28, 1), np.float32), "got dtype float32"),
    (np.zeros((2, 28, 28, 3), np.uint8), "got shape [2, 28, 28, 3]"),
    (np.zeros((28, 28), np.uint8), "got shape [28, 28]"),
    ([[0] * 28] * 28, "got list"),
])
def test_a_float_or_wrong_shaped_input_is_a_clear_error(repo, bad, message):
    for fmt in ("onnx", "litert"):
        predict = formats.load(fmt, repo / paths.EXPORTS_DIR / "small" / formats.FILES[fmt])
        with pytest.raises(ValueError, match="expected a NumPy array of uint8|expected uint8") as err:
            predict(bad)
        assert message in str(err.value)


def test_a_difference_beyond_the_tolerance_is_a_mismatch_even_with_the_same_answers(repo, images, tmp_path,
                                                                                    monkeypatch):
    folder = repo / paths.EXPORTS_DIR / "small"
    np.save(tmp_path / "x.npy", images)
    monkeypatch.setattr(formats, "FILES", {"onnx": "model.onnx"})       # one format is enough here
    expected = formats.load("onnx", folder / "model.onnx")(images).astype(np.float64)
    assert export.parity("small", folder, tmp_path / "x.npy", expected)["onnx"]["max_abs_difference"] == 0
    expected[3, 0] += 2e-5
    with pytest.raises(export.ParityError, match=r"small onnx: 0 of 200 answers differ .* 2\.00e-05 \(allowed 1e-05\)"):
        export.parity("small", folder, tmp_path / "x.npy", expected)


def tamper(onnx_file) -> None:
    """Add 5 to the logit of digit 0 (the last layer's bias): a valid model with other answers."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(onnx_file)
    bias = next(t for t in model.graph.initializer if list(t.dims) == [10])
    values = numpy_helper.to_array(bias).copy()
    values[0] += 5.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, onnx_file)


def test_a_tampered_export_fails_the_stage_naming_member_and_format(digit_model, mnist, tmp_path, monkeypatch, capsys):
    make_inputs(tmp_path, digit_model, mnist)
    monkeypatch.chdir(tmp_path)
    real = export.write_formats

    def write_and_tamper(model, folder):
        seconds = real(model, folder)
        tamper(folder / "model.onnx")
        return seconds
    monkeypatch.setattr(export, "write_formats", write_and_tamper)
    with pytest.raises(SystemExit) as exit:
        export.main()
    message = str(exit.value.code)
    assert message.startswith("error: export: small onnx: ") and "answers differ from the Keras model's" in message
    assert "saved_model" not in message and "litert" not in message      # those two still agree
    assert not (tmp_path / paths.EXPORTS_DIR).exists() and not (tmp_path / paths.EXPORT_DETAILS).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# The recognizer on the exports (digits/runtime.py): the same answers, no TensorFlow.

@pytest.fixture(scope="module")
def photos(mnist, tmp_path_factory):
    """Eight MNIST test digits rendered as the files users hand in (JPEG photos, canvas PNGs)."""
    from probes import render
    folder = tmp_path_factory.mktemp("export-photos")
    x, rng = mnist[2].reshape(-1, 28, 28), np.random.default_rng(3)
    for k in range(8):
        kind = render.KINDS[k % 2]
        (folder / f"digit{k}.{'jpg' if kind == 'jpeg' else 'png'}").write_bytes(render.render(x[k], kind, rng))
    return sorted(folder.iterdir())


def test_every_runtime_gives_the_same_answers_on_digit_files(repo, photos):
    from digits import recognize
    answers = {}
    for runtime in ("keras", "onnx", "litert"):
        predictor = recognize.load_predictor(root=repo, runtime=runtime)
        assert (predictor.runtime, predictor.version, predictor.tta) == (runtime, "workspace", ("shift",))
        seen = []
        assert recognize.recognize(photos, predictor, out=io.StringIO(), keep=seen) == 0
        answers[runtime] = np.stack([p for _, _, p in seen])
    onnx = recognize.load_predictor(root=repo, runtime="onnx")
    assert onnx.files == {"small": repo / "exports" / "small" / "model.onnx"}
    assert onnx.sha256 == sha256(repo / "exports" / "small" / "model.onnx")
    for runtime in ("onnx", "litert"):
        assert np.array_equal(answers[runtime].argmax(axis=1), answers["keras"].argmax(axis=1)), runtime
        assert np.abs(answers[runtime] - answers["keras"]).max() <= 1e-5, runtime
    with pytest.raises(ValueError, match="got dtype float32"):
        onnx(np.zeros((1, 28, 28), np.float32))


def test_serving_defaults_to_onnx_only_where_the_models_own_exports_exist(repo, tmp_path):
    from digits import recognize
    assert recognize.load_predictor(root=repo, runtime=None).runtime == "onnx"
    other = tmp_path / "other"
    other.mkdir()
    for name in ("params.yaml", "models", "exports"):
        (shutil.copytree if (repo / name).is_dir() else shutil.copy)(repo / name, other / name)
    manifest = json.loads((other / paths.EXPORT_MANIFEST).read_text())
    manifest["members"]["small"]["source_sha256"] = "0" * 64          # exports of some other model
    (other / paths.EXPORT_MANIFEST).write_text(json.dumps(manifest))
    assert recognize.load_predictor(root=other, runtime=None).runtime == "keras"
    with pytest.raises(FileNotFoundError, match=r"no litert export of .*small\.keras in .*exports"):
        recognize.load_predictor(root=other, runtime="litert")
    shutil.rmtree(other / "exports")
    assert recognize.load_predictor(root=other, runtime=None).runtime == "keras"
    with pytest.raises(FileNotFoundError, match="no exported models in .*exports.*dvc repro export"):
        recognize.load_predictor(root=other, runtime="onnx")


NO_TENSORFLOW = """
import json, sys
import numpy as np
from fastapi.testclient import TestClient
from digits.server import create_app
from digits import runtime
from digits import recognize
repo, digit, db = sys.argv[1:]
answers = {}
for name in ("onnx", "litert"):
    predictor = recognize.load_predictor(root=repo, runtime=name)
    answers[name] = predictor(np.load(digit)[None]).tolist()
bare = runtime.load(f"{repo}/exports", "onnx")
with TestClient(create_app(predictor, f"sqlite:///{db}", per_minute=5, root=repo)) as client:
    body = client.post("/predict", json={"pixels": np.load(digit).ravel().tolist()}).json()
print(json.dumps({"answers": answers, "bare": bare(np.load(digit)[None]).tolist(), "api": body["probabilities"],
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}))
"""


def test_the_exported_runtimes_and_the_api_run_without_tensorflow_or_keras(repo, mnist, tmp_path):
    digit = tmp_path / "digit.npy"
    np.save(digit, mnist[2][0].reshape(28, 28))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(repo), str(digit), str(tmp_path / "fb.db")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    onnx, litert = (np.array(result["answers"][k][0]) for k in ("onnx", "litert"))
    assert onnx.argmax() == litert.argmax() == int(mnist[3][0]) and np.abs(onnx - litert).max() <= 1e-5
    assert np.abs(np.array(result["api"]) - litert).max() <= 1e-5 and np.allclose(result["bare"][0], onnx, atol=1e-6)


def test_the_cli_takes_a_runtime(repo, photos):
    proc = subprocess.run([sys.executable, "-m", "digits.recognize", str(photos[0]), "--runtime", "litert", "--json"],
                          cwd=repo, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from digits import recognize
    record, expected = json.loads(proc.stdout), []
    recognize.recognize(photos[:1], recognize.load_predictor(root=repo), out=io.StringIO(), keep=expected)
    assert record["digit"] == int(expected[0][2].argmax())
    assert np.abs(np.array(record["probabilities"]) - expected[0][2]).max() <= 1e-5 + 1e-6   # printed to 6 places


def test_the_server_takes_a_runtime(repo, tmp_path, monkeypatch, capsys):
    import uvicorn

    from digits import server
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app.state.serving.current))
    monkeypatch.setattr(server.Serving, "start", lambda self: self)        # no watcher thread in this test
    monkeypatch.setenv("DIGITS_FEEDBACK_DB", f"sqlite:///{tmp_path / 'fb.db'}")
    server.main(["--runtime", "litert"], root=repo)
    (predictor,) = served
    assert predictor.runtime == "litert" and predictor.files == {"small": repo / "exports/small/model.tflite"}
    assert "version workspace on litert: models " in capsys.readouterr().out
