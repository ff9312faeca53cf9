"""Stage export: every ensemble member in standard formats, runnable without this project's code.

For each member of params.yaml's ensemble (models/<member>.keras), exports/<member>/ holds
  saved_model/   a TensorFlow SavedModel; signature `serve`: image uint8 [n, 28, 28, 1] -> output_0
                 float32 [n, 10] (also as serving_default, which TensorFlow Serving needs)
  model.onnx     ONNX: input "image", uint8 [n, 28, 28, 1] -> float32 probabilities [n, 10]
  model.tflite   LiteRT (TensorFlow Lite): the same input and output
written by Keras's own model.export from the inference model: the training-only augmentation
layers taken out, the scaling and the level normalization kept inside. exports/ensemble.json says
how the recognizer combines them (the mean of the probabilities over members and test-time views,
each view spelled out), so any runtime can reproduce it; digits/runtime.py does, without TensorFlow.

Parity, checked here: each format is run in a fresh `python -I` process that imports nothing of
this project (digits/formats.py as a script) on every test image and must give the Keras model's
answer on each, probabilities within TOLERANCE. A mismatch fails the stage, naming the member and
the format, and leaves no exports/ (it is written under a temporary name, renamed when all passed).
metrics/details/export.json has every figure per member and format (largest difference, answers
that differ, size, sha256, export seconds), metrics/export.json the headline.

Measured on a 2-core AMD EPYC (AVX2), the test suite's small trained model on 10,000 MNIST test
images: 0.8-1.3 s per format, every answer the same, probabilities within 1.1e-6 (docs/export.md).
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from digits import formats, paths
from digits.cli import run_stage
from digits.io import SIDE, atomic_path, sha256, to_images, write_json

TOLERANCE = 1e-5          # largest allowed |p_export - p_keras| over every image and class
KERAS_FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}   # ours -> model.export's


class ParityError(Exception):
    """An export that does not answer as its Keras model does; the message names member and format."""


def inference_model(model):
    """The same layers (shared weights) without the training-only augmentation, uint8 in as before."""
    import keras

    from digits.augment import RandomAffine, RandomDegrade
    if not isinstance(model, keras.Sequential):
        raise TypeError(f"expected the pipeline's Sequential model (digits/model.py), got {type(model).__name__}")
    kept = [layer for layer in model.layers if not isinstance(layer, (RandomAffine, RandomDegrade))]
    return keras.Sequential([keras.Input((SIDE, SIDE, 1), dtype="uint8", name="image"), *kept], name=model.name)


def write_formats(model, folder: Path) -> dict:
    """Every format of FILES written into `folder` by model.export; {format: seconds it took}."""
    seconds = {}
    for fmt, keras_format in KERAS_FORMATS.items():
        start = time.perf_counter()
        with warnings.catch_warnings():          # tf2onnx's NumPy deprecation notice, not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(folder / formats.FILES[fmt]), format=keras_format, verbose=False)
        seconds[fmt] = time.perf_counter() - start
    return seconds


def digest(path: Path) -> str:
    """A file's sha256; for a folder, the sha256 of its `sha256  relative/path` lines, sorted by path."""
    if path.is_file():
        return sha256(path)
    lines = [f"{sha256(f)}  {f.relative_to(path).as_posix()}" for f in sorted(path.rglob("*")) if f.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_isolated(fmt: str, path: Path, images_file: Path, out_file: Path) -> dict:
    """digits/formats.py as a standalone script in a fresh interpreter: -I keeps this repository
    off sys.path and ignores PYTHON* variables; its report says which project modules it imported."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-I", formats.__file__, fmt, str(path), str(images_file), str(out_file)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ParityError(f"{fmt} ({path}) could not be run in a fresh process (exit {proc.returncode}):\n"
                          + proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parity(name: str, folder: Path, images_file: Path, expected: np.ndarray, tolerance: float = TOLERANCE) -> dict:
    """{format: figures} of each export in `folder` against the Keras probabilities `expected`;
    ParityError naming `name` and each format that differs."""
    figures, failed = {}, []
    for fmt, file in formats.FILES.items():
        with tempfile.TemporaryDirectory() as scratch:
            out_file = Path(scratch) / "probabilities.npy"
            report = run_isolated(fmt, folder / file, images_file, out_file)
            got = np.load(out_file)
        if report["project_modules"]:
            failed.append(f"{name} {fmt}: the fresh process imported this project ({', '.join(report['project_modules'])})")
        if got.shape != expected.shape:
            raise ParityError(f"{name} {fmt}: {list(got.shape)} probabilities for {list(expected.shape)} expected")
        difference = float(np.abs(got.astype(np.float64) - expected).max()) if len(got) else 0.0
        differ = int((got.argmax(axis=1) != expected.argmax(axis=1)).sum())
        figures[fmt] = {"max_abs_difference": difference, "disagreements": differ, "images": len(got),
                        "load_seconds": report["load_seconds"], "predict_seconds": report["predict_seconds"]}
        if differ or not difference <= tolerance:
            failed.append(f"{name} {fmt}: {differ} of {len(got):,} answers differ from the Keras model's, "
                          f"largest probability difference {difference:.2e} (allowed {tolerance:g})")
    if failed:
        raise ParityError("; ".join(failed))
    return figures


def views_spec(tta) -> list:
    """The test-time views of digits/ensemble.py, in its order, as data a runtime can follow."""
    from digits import ensemble
    spec = [{"view": "image"}]
    if "shift" in tta:
        spec += [{"view": "shift", "rows": dy, "columns": dx, "fill": 0} for dy, dx in ensemble.SHIFTS]
    if "rotate" in tta:
        spec += [{"view": "rotate", "degrees": a, "about": "the image centre", "interpolation": "bilinear",
                  "fill": 0, "then": "rounded to the nearest integer, clipped to 0..255, uint8"}
                 for a in ensemble.ANGLES]
    return spec


def manifest(members: dict, tta) -> dict:
    """exports/ensemble.json: the contract, each member's files, and how they are combined."""
    return {"input": {"name": "image", "dtype": "uint8", "shape": [None, SIDE, SIDE, 1],
                      "values": "0..255, a white digit on black, as digits/preprocess.py makes it"},
            "output": {"dtype": "float32", "shape": [None, 10], "values": "probabilities of the digits 0..9"},
            "members": members, "tta": list(tta), "views": views_spec(tta),
            "combine": "the mean of the probabilities over every view of every member (each view is a "
                       "shifted or rotated copy of the uint8 input, run through each member); the answer "
                       "is the digit of the largest mean"}


def export_all(model_files: dict, images: np.ndarray, tta=(), target: Path = paths.EXPORTS_DIR,
               tolerance: float = TOLERANCE) -> dict:
    """Export every member of {member: .keras file} into `target` and check each format's parity on
    `images`; {member: {format: figures}}. On any failure `target` is left as it was."""
    from digits import ensemble
    from digits import model as model_mod
    images = formats.check_images(images)
    details, members = {}, {}
    with atomic_path(target, directory=True) as tmp, tempfile.TemporaryDirectory() as scratch:
        images_file = Path(scratch) / "images.npy"
        np.save(images_file, images, allow_pickle=False)
        for name, file in model_files.items():
            model = model_mod.load(file)
            expected = ensemble.member_probabilities({name: model}, images)[name].astype(np.float64)
            folder = tmp / name
            folder.mkdir()
            seconds = write_formats(inference_model(model), folder)
            figures = parity(name, folder, images_file, expected, tolerance)
            for fmt, file_name in formats.FILES.items():
                figures[fmt] |= {"export_seconds": round(seconds[fmt], 3), "bytes": size(folder / file_name),
                                 "sha256": digest(folder / file_name), "file": f"{name}/{file_name}"}
            details[name] = figures
            members[name] = {"source": str(file), "source_sha256": sha256(file),
                             "files": {fmt: f"{name}/{f}" for fmt, f in formats.FILES.items()},
                             "sha256": {fmt: figures[fmt]["sha256"] for fmt in formats.FILES}}
            print(f"export: {name}: " + ", ".join(
                f"{fmt} {f['export_seconds']:.1f} s, max diff {f['max_abs_difference']:.1e}" for fmt, f in figures.items()),
                flush=True)
        write_json(tmp / paths.EXPORT_MANIFEST.name, manifest(members, tta))
    return details


def headline(details: dict, images: int) -> dict:
    every = [f for member in details.values() for f in member.values()]
    return {"members": len(details), "formats": len(formats.FILES), "images": images,
            "max_abs_difference": max(f["max_abs_difference"] for f in every),
            "disagreements": sum(f["disagreements"] for f in every),
            "export_seconds": round(sum(f["export_seconds"] for f in every), 3)}


def main() -> None:
    from digits import ensemble
    from digits import params as params_mod
    p = params_mod.load()
    files = ensemble.model_files(p.ensemble.members)
    x, _ = to_images(pq.read_table(paths.TEST_PARQUET).to_pandas())
    try:
        details = export_all(files, x, p.ensemble.tta)
    except ParityError as e:
        raise SystemExit(f"error: export: {e}; nothing was written to {paths.EXPORTS_DIR}/")
    write_json(paths.EXPORT_DETAILS, {"tolerance": TOLERANCE, "images": len(x), "members": details})
    write_json(paths.EXPORT_METRICS, headline(details, len(x)))
    print(f"export: {len(files)} member(s) x {len(formats.FILES)} formats -> {paths.EXPORTS_DIR}/, "
          f"parity on {len(x):,} test images -> {paths.EXPORT_DETAILS}")


if __name__ == "__main__":
    run_stage(main)
