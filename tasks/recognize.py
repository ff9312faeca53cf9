"""Recognize digits in your own images: python -m tasks.recognize PATH [PATH ...]

Each PATH is an image file (anything Pillow opens: PNG, JPEG, GIF, BMP, WebP, ...) or a folder,
searched recursively for files with an image extension. Every image goes through the shared
preprocessing (tasks/preprocess.py) and the pipeline's model; one line per image:

    photos/seven.jpg: 7 (98.1%)
    photos/seven.jpg: 7 (98.1%); then 1 (1.2%), 2 (0.4%)          with --top 3

--json prints one JSON object per line instead: {"path", "digit", "confidence", "probabilities"}
(plus "preprocessed", the file written, with --save-preprocessed DIR, which keeps the 28 x 28
images the model saw). A file that cannot be read or holds no digit gets a message naming it on
stderr, the others are still processed, and the exit status is 1 at the end.
"""
import argparse
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from tasks import paths
from tasks.io import SIDE, atomic_path, sha256

BATCH = 256


class Predictor:
    """uint8 images [n, 28, 28] (or [n, 28, 28, 1]) -> class probabilities [n, 10], float32.

    Wraps the loaded model once; `path` and `sha256` say which file it came from. An ensemble can
    take its place: anything with the same call, `path` and `sha256` will do.
    """

    def __init__(self, model, path: Path):
        self.model, self.path, self.sha256 = model, Path(path), sha256(path)
        self._lock = threading.Lock()             # one inference at a time (the HTTP server's threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.uint8).reshape(-1, SIDE, SIDE, 1)
        out = []
        with self._lock:
            for start in range(0, len(x), BATCH):
                out.append(np.asarray(self.model.predict_on_batch(x[start:start + BATCH]), dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def load_predictor(path=None) -> Predictor:
    """The pipeline's model (models/model.keras unless `path` is given), ready to call."""
    path = Path(path or paths.MODEL)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no model; train one with `dvc repro` (or pass --model)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")     # TensorFlow's start-up chatter
    from tasks import model as model_mod
    predictor = Predictor(model_mod.load(path), path)
    predictor(np.zeros((1, SIDE, SIDE), np.uint8))          # builds the predict function now
    return predictor


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
              deskew: bool = False, out=sys.stdout, err=sys.stderr) -> int:
    """Print one line per file; return the number of files that failed."""
    from PIL import Image

    from tasks import preprocess
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.recognize", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--top", type=int, default=1, metavar="K", help="also show the next K-1 guesses")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--save-preprocessed", type=Path, metavar="DIR",
                        help="write the 28 x 28 images the model saw here (PNG)")
    parser.add_argument("--deskew", action="store_true", help="straighten slanted digits first")
    parser.add_argument("--model", type=Path, default=paths.MODEL, help=f"default {paths.MODEL}")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= 10:
        parser.error("--top must be 1..10")
    files = image_files(args.paths)
    if not files:
        print("error: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    try:
        predictor = load_predictor(args.model)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = recognize(files, predictor, args.top, args.json, args.save_preprocessed, args.deskew)
    if failed:
        print(f"{failed} of {len(files)} files could not be recognized", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
