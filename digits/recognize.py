"""Recognize digits in your own images: python -m digits.recognize PATH [PATH ...]

Each PATH is an image file (anything Pillow opens: PNG, JPEG, GIF, BMP, WebP, ...) or a folder,
searched recursively for files with an image extension. Every image goes through the shared
preprocessing (digits/preprocess.py) and the pipeline's model; one line per image:

    photos/seven.jpg: 7 (98.1%)
    photos/seven.jpg: 7 (98.1%); then 1 (1.2%), 2 (0.4%)          with --top 3

--json prints one JSON object per line instead: {"path", "digit", "confidence", "probabilities"}
(plus "preprocessed", the file written, with --save-preprocessed DIR, which keeps the 28 x 28
images the model saw). A file that cannot be read or holds no digit gets a message naming it on
stderr, the others are still processed, and the exit status is 1 at the end.

`--label D` (with one image file) says the right digit: the 28 x 28 image the model saw is stored
as feedback for review (digits/feedback.py; --feedback-db URL, default params.yaml feedback.database
or env DIGITS_FEEDBACK_DB) and its number printed.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from digits.io import SIDE, atomic_path, sha256

BATCH = 256                                       # images preprocessed per batch


class Predictor:
    """uint8 images [n, 28, 28] (or [n, 28, 28, 1]) -> class probabilities [n, 10], float32: the
    mean of the models' probabilities over the test-time views (digits/ensemble.py).

    `files` are the model files, in order; `sha256` identifies them together (for one file, that
    file's own hash); `tta` the views used; `version` the registry's version users can name
    (digits/registry.py), or "workspace" / the files' hash for models that were never promoted.
    """

    runtime = "keras"

    def __init__(self, models: dict, files: dict, tta=(), version: str | None = None):
        self.models, self.files, self.tta = models, {k: Path(f) for k, f in files.items()}, tuple(tta)
        hashes = [sha256(f) for f in self.files.values()]
        self.sha256 = hashes[0] if len(hashes) == 1 else hashlib.sha256(" ".join(hashes).encode()).hexdigest()
        self.version = version or self.sha256[:12]
        self._lock = threading.Lock()             # one inference at a time (the HTTP server's threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from digits import ensemble
        with self._lock:
            return ensemble.predict(self.models, images, self.tta)


def load_predictor(model_files=None, tta=None, root: Path | None = None, runtime: str | None = "keras"):
    """The model users get in the repository at `root` (the current directory by default): the
    production version when one was promoted (serving/production.json), else the ensemble of its
    params.yaml (members and TTA views); or the model files given (a path or a list of paths,
    relative to the current directory, averaged; no TTA unless `tta` names views), ready to call.

    `runtime` "onnx" or "litert": the same models' exports, without TensorFlow (digits/runtime.py);
    None: "onnx" where those exports exist, else Keras."""
    files, tta, version = model_choice(model_files, tta, root)
    if runtime != "keras":
        from digits import runtime as runtimes
        exported = runtimes.for_models(files, tta or (), version, runtime, Path(root or "."))
        if exported is not None:
            return exported
    from digits import ensemble
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")     # TensorFlow's start-up chatter
    predictor = Predictor(ensemble.load(files), files, tta or (), version)
    predictor(np.zeros((1, SIDE, SIDE), np.uint8))          # builds the predict functions now
    return predictor


def model_choice(model_files=None, tta=None, root: Path | None = None) -> tuple:
    """({member: model file}, TTA views, version or None) of load_predictor's model."""
    from digits import ensemble, paths, registry
    from digits import params as params_mod
    version = None
    if model_files is None and registry.production(root or "."):
        root = Path(root or ".")
        record = registry.production(root)
        files, version = registry.production_files(record, root), record["version"]
        tta = record.get("tta", ()) if tta is None else tta
    elif model_files is None:
        root = Path(root or ".")
        p = params_mod.load(root / paths.PARAMS)
        files, tta = ensemble.model_files(p.ensemble.members, root), p.ensemble.tta if tta is None else tta
        version = "workspace"
    else:
        listed = [model_files] if isinstance(model_files, (str, Path)) else list(model_files)
        files = {Path(f).stem if len(listed) == 1 else f"{i}:{Path(f).stem}": Path(f) for i, f in enumerate(listed)}
        missing = [str(f) for f in files.values() if not f.exists()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)}: no model")
    return files, tta, version


def image_files(args: list) -> list:
    """Named files as given; folders expanded (recursively, sorted) to their image files."""
    from PIL import Image
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            files.append(p)
    return files


def describe(path, probs: np.ndarray, top: int) -> str:
    order = np.argsort(probs)[::-1]
    line = f"{path}: {order[0]} ({probs[order[0]]:.1%})"
    if top > 1:
        line += "; then " + ", ".join(f"{d} ({probs[d]:.1%})" for d in order[1:top])
    return line


def _save_name(folder: Path, path: Path, taken: set) -> Path:
    name, n = f"{path.stem}.png", 1
    while name in taken:
        n += 1
        name = f"{path.stem}-{n}.png"
    taken.add(name)
    return folder / name


def recognize(files: list, predictor, top: int = 1, as_json: bool = False, save_dir=None,
              deskew: bool = False, out=None, err=None, keep: list | None = None) -> int:
    """Print one line per file to `out` (default: sys.stdout as it is when called; errors to
    `err`, sys.stderr); return the number of files that failed. `keep`, a list, receives
    (path, the 28 x 28 image the model saw, probabilities) for each file recognized."""
    from PIL import Image
    out, err = out or sys.stdout, err or sys.stderr

    from digits import preprocess
    failed, taken = 0, set()
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), BATCH):
        ok, images = [], []
        for path in files[start:start + BATCH]:
            try:
                images.append(preprocess.to_mnist(preprocess.open_image(path), deskew=deskew))
                ok.append(path)
            except (preprocess.ImageError, OSError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else e
                print(f"error: {path}: {reason}", file=err, flush=True)
                failed += 1
        if not ok:
            continue
        probs = predictor(np.stack(images))
        for path, image, p in zip(ok, images, probs):
            if keep is not None:
                keep.append((path, image, p))
            saved = None
            if save_dir is not None:
                saved = _save_name(save_dir, path, taken)
                with atomic_path(saved) as tmp:
                    Image.fromarray(image).save(tmp, format="PNG")
            if as_json:
                record = {"path": str(path), "digit": int(p.argmax()), "confidence": float(p.max()),
                          "probabilities": [round(float(v), 6) for v in p]}
                if saved is not None:
                    record["preprocessed"] = str(saved)
                print(json.dumps(record), file=out)
            else:
                print(describe(path, p, top), file=out)
        out.flush()
    return failed


def main(argv=None, root: Path | None = None, prog: str = "python -m digits.recognize") -> int:
    """The command line; without --model the ensemble of the repository at `root` (default: here)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--top", type=int, default=1, metavar="K", help="also show the next K-1 guesses")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--save-preprocessed", type=Path, metavar="DIR",
                        help="write the 28 x 28 images the model saw here (PNG)")
    parser.add_argument("--deskew", action="store_true", help="straighten slanted digits first")
    parser.add_argument("--model", type=Path, action="append", metavar="FILE",
                        help="a .keras model; repeat to average several (default: the ensemble of params.yaml)")
    parser.add_argument("--runtime", choices=["keras", "onnx", "litert"],
                        help="what runs the model: keras, or its exports (ONNX Runtime, LiteRT: no TensorFlow); "
                             "default onnx where the exports of the model exist (dvc repro export), else keras")
    parser.add_argument("--label", type=int, choices=range(10), metavar="D",
                        help="the right digit for the one image given: stored as feedback for review")
    parser.add_argument("--feedback-db", metavar="URL",
                        help="the feedback store for --label (default: params.yaml feedback.database, "
                             "or env DIGITS_FEEDBACK_DB)")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= 10:
        parser.error("--top must be 1..10")
    if args.label is not None and (len(args.paths) != 1 or Path(args.paths[0]).is_dir()):
        parser.error("--label goes with exactly one image file (the image it corrects)")
    if args.feedback_db and args.label is None:
        parser.error("--feedback-db goes with --label")
    store = None
    if args.label is not None:
        from sqlalchemy.exc import SQLAlchemyError

        from digits import feedback
        from digits.params import ParamsError
        try:                                   # before the model loads: a wrong URL fails fast
            store = feedback.open_store(args.feedback_db or feedback.database_url(Path(root or ".")))
        except (OSError, ValueError, ParamsError, SQLAlchemyError) as e:
            print(f"error: the feedback store: {e}", file=sys.stderr)
            return 1
    files = image_files(args.paths)
    if not files:
        print("error: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    try:
        predictor = load_predictor(args.model, root=root, runtime=args.runtime)
    except FileNotFoundError as e:
        print(f"error: {e}" + ("" if args.model else ", or name a model with --model"), file=sys.stderr)
        return 1
    seen = []
    failed = recognize(files, predictor, args.top, args.json, args.save_preprocessed, args.deskew, keep=seen)
    if store is not None and seen:
        (_, image, probs), = seen
        item = feedback.add(store, image, args.label, int(probs.argmax()), float(probs.max()), "cli",
                            feedback.model_version(predictor), "cli")
        # with --json, stdout stays JSON lines
        print(f"feedback #{item} saved for review (python -m digits.feedback list)",
              file=sys.stderr if args.json else sys.stdout)
    if failed:
        print(f"{failed} of {len(files)} files could not be recognized", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
