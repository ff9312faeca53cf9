"""The exported models run by their own runtimes: TensorFlow for the SavedModel, ONNX Runtime for
ONNX, the LiteRT interpreter for LiteRT. uint8 images [n, 28, 28, 1] -> probabilities [n, 10].

This file imports nothing of this project (only NumPy, and each runtime when asked for), so it is
what the export stage runs as a standalone script in a fresh `python -I` process for its parity
check, and what digits/runtime.py loads in the recognizer: the check and the product share one path.

    python -I digits/formats.py FORMAT PATH IMAGES.npy OUT.npy

writes the probabilities (float32 [n, 10]) of the uint8 images in IMAGES.npy to OUT.npy and prints
one JSON line: {"format", "images", "load_seconds", "predict_seconds", "project_modules"}, the last
being the modules of this project the process had imported (it must be none).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

SIDE, CLASSES = 28, 10
BATCH = 1000          # images per call: ONNX Runtime and LiteRT hold one batch's activations at once
# Each format's file (or folder) in a member's export folder.
FILES = {"saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite"}
PROJECT = ("tasks", "app", "flows", "bench")
CONTRACT = f"uint8 images [n, {SIDE}, {SIDE}, 1] or [n, {SIDE}, {SIDE}] (0..255, a white digit on black)"


def check_images(images) -> np.ndarray:
    """The models' input contract, uint8 [n, 28, 28, 1] (or [n, 28, 28]); ValueError naming what came.

    Nothing is cast: a float image in 0..1 cast to uint8 would be black, and one in 0..255 hides a
    caller that skipped the shared preprocessing."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"expected a NumPy array of {CONTRACT}; got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected {CONTRACT}; got dtype {images.dtype}")
    x = images[..., None] if images.ndim == 3 else images
    if x.ndim != 4 or x.shape[1:] != (SIDE, SIDE, 1):
        raise ValueError(f"expected {CONTRACT}; got shape {list(images.shape)}")
    return np.ascontiguousarray(x)


def _saved_model(path: Path):
    import tensorflow as tf
    serve = tf.saved_model.load(str(path)).signatures["serve"]
    return lambda x: next(iter(serve(image=tf.constant(x)).values())).numpy()


def _onnx(path: Path):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    allocated = [None]

    def run(x):
        if allocated[0] != x.shape:             # the batch size is fixed once per allocation
            interpreter.resize_tensor_input(inp, list(x.shape))
            interpreter.allocate_tensors()
            allocated[0] = x.shape
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()
    return run


LOADERS = {"saved_model": _saved_model, "onnx": _onnx, "litert": _litert}


def load(fmt: str, path):
    """A function: uint8 images (the contract above) -> float32 probabilities [n, 10], run in batches.

    Not thread-safe (the LiteRT interpreter is not): callers serialize their calls."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown format {fmt!r}; one of: {', '.join(LOADERS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {fmt} model")
    run = LOADERS[fmt](path)

    def predict(images) -> np.ndarray:
        x = check_images(images)
        out = [np.asarray(run(x[i:i + BATCH]), dtype=np.float32) for i in range(0, len(x), BATCH)]
        probs = np.concatenate(out) if out else np.zeros((0, CLASSES), np.float32)
        if probs.shape != (len(x), CLASSES):
            raise ValueError(f"{path}: the model answered shape {list(probs.shape)}, not [{len(x)}, {CLASSES}]")
        return probs
    return predict


def main(argv: list) -> int:
    if len(argv) != 4:
        print(__doc__.split("\n\n")[2].strip(), file=sys.stderr)
        return 2
    fmt, path, images_file, out_file = argv
    start = time.perf_counter()
    predict = load(fmt, path)
    loaded = time.perf_counter()
    probs = predict(np.load(images_file, allow_pickle=False))
    done = time.perf_counter()
    np.save(out_file, probs, allow_pickle=False)
    print(json.dumps({"format": fmt, "images": len(probs), "load_seconds": round(loaded - start, 3),
                      "predict_seconds": round(done - loaded, 3),
                      "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in PROJECT)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
