"""The recognizer on the exported models, without TensorFlow or Keras: ONNX Runtime or LiteRT.

`load(exports, runtime)` reads exports/ensemble.json (written by the export stage) and gives a
predictor with digits.recognize.Predictor's interface: uint8 images [n, 28, 28] or [n, 28, 28, 1]
-> float32 probabilities [n, 10], the mean over members and test-time views (digits/ensemble.py's
own views and mean), and `files`, `sha256`, `version`, `tta`. Anything but uint8 images of that
shape is a ValueError saying what came (digits/formats.py), never a silent cast.

`for_models` is the recognizer's hook: the exports of exactly the .keras files it would load
(matched by their sha256, so a retrained or promoted model is never answered by an old export).
"""
import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from digits import ensemble, formats, paths
from digits.io import SIDE, sha256

RUNTIMES = {"onnx": "onnx", "litert": "litert"}     # runtime -> the export format it reads
DEFAULT = "onnx"          # where exports exist, what serving uses unless told otherwise


class ExportedPredictor:
    """{member: runner} (digits.formats.load) -> the ensemble, as digits.recognize.Predictor."""

    def __init__(self, runners: dict, files: dict, tta=(), version: str | None = None, runtime: str = DEFAULT):
        self.runners, self.files, self.tta, self.runtime = runners, {k: Path(f) for k, f in files.items()}, tuple(tta), runtime
        self.sha256 = identity(self.files.values())
        self.version = version or self.sha256[:12]
        self._lock = threading.Lock()             # one inference at a time: LiteRT's interpreter is not thread-safe

    def __call__(self, images) -> np.ndarray:
        x = formats.check_images(images)
        with self._lock:
            vs = ensemble.views(x, self.tta)
            return ensemble.combine([ensemble.combine([run(v) for v in vs]) for run in self.runners.values()])


def identity(files) -> str:
    """What identifies files together, as digits.recognize.Predictor computes it: one file's sha256,
    or the sha256 of their hashes."""
    hashes = [sha256(f) for f in files]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256(" ".join(hashes).encode()).hexdigest()


def _manifest(exports: Path) -> dict:
    file = Path(exports) / paths.EXPORT_MANIFEST.name
    if not file.is_file():
        raise FileNotFoundError(f"no exported models in {exports} (no {file.name}); export them with "
                                f"`dvc repro export`")
    return json.loads(file.read_text())


def _check(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; one of: keras, {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime]


def load(exports=paths.EXPORTS_DIR, runtime: str = DEFAULT, tta=None, version: str | None = None) -> ExportedPredictor:
    """Every member of the exports folder, combined with its manifest's views (or `tta`), ready to call."""
    fmt, manifest = _check(runtime), _manifest(exports)
    files = {name: Path(exports) / m["files"][fmt] for name, m in manifest["members"].items()}
    return _ready(files, manifest["tta"] if tta is None else tta, version, runtime)


def for_models(model_files: dict, tta, version: str | None, runtime: str | None, root: Path = Path(".")):
    """The exports of exactly the given {member: .keras file} in `root`'s exports folder, loaded for
    `runtime`; with runtime None (the default runtime where exports exist), None when some file has
    no export; with a runtime named, FileNotFoundError saying which file has none."""
    fmt = _check(runtime or DEFAULT)
    exports = Path(root) / paths.EXPORTS_DIR
    try:
        manifest = _manifest(exports)
    except FileNotFoundError:
        if runtime is None:
            return None
        raise
    by_hash = {m["source_sha256"]: m for m in manifest["members"].values()}
    files, missing = {}, []
    for name, model_file in model_files.items():
        member = by_hash.get(sha256(model_file))
        if member is None:
            missing.append(str(model_file))
        else:
            files[name] = exports / member["files"][fmt]
    if missing:
        if runtime is None:
            return None
        raise FileNotFoundError(f"no {runtime} export of {', '.join(missing)} in {exports} (the exports are of "
                                f"other model files); export them with `dvc repro export`, or use --runtime keras")
    # the .keras files' identity, so feedback and /health name the same version whatever runs them
    version = version or identity(model_files.values())[:12]
    return _ready(files, tta, version, runtime or DEFAULT)


def _ready(files: dict, tta, version, runtime: str) -> ExportedPredictor:
    fmt = RUNTIMES[runtime]
    predictor = ExportedPredictor({name: formats.load(fmt, f) for name, f in files.items()}, files, tta or (),
                                  version, runtime)
    predictor(np.zeros((1, SIDE, SIDE), np.uint8))          # sessions and interpreters ready now
    return predictor
