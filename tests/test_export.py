"""The export stage on the session's small model: each format written, its parity checked in a fresh
process, the uint8 contract kept, augmentation left out, and a mismatch failing the stage."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from tasks import export, formats, ingest, paths
from tasks.io import sha256

IMAGES = 200              # test images of the stage's parity check here (the pipeline uses all of them)


def make_inputs(root, digit_model, mnist) -> None:
    """params.yaml with one member, "small" (the session's model), TTA shift; its model; test.parquet."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ensemble"] = {"members": {"small": {"preset": "quick", "seed": 0}}, "tta": ["shift"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "models").mkdir()
    shutil.copy(digit_model, root / "models" / "small.keras")
    (root / paths.TEST_PARQUET).parent.mkdir(parents=True)
    pd.DataFrame(ingest.pixel_columns(mnist[2][:IMAGES])).to_parquet(root / paths.TEST_PARQUET, index=False)


@pytest.fixture(scope="module")
def repo(digit_model, mnist, tmp_path_factory):
    """A repository after the export stage ran on it."""
    root = tmp_path_factory.mktemp("export-repo")
    make_inputs(root, digit_model, mnist)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        export.main()
    return root


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
    from tasks import ensemble
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

    from tasks import model as model_mod
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
