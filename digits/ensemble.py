"""The ensemble: the members named in params.yaml (ensemble.members), combined by the mean of
their class probabilities, optionally over test-time views of each image (ensemble.tta).

With one member and no TTA the result is that member's own output, unchanged. The views are
deterministic and never flip an image (digits are not symmetric): "shift" adds the image moved one
pixel left, right, up and down; "rotate" adds it turned by +-8 degrees.
"""
from pathlib import Path

import numpy as np

from digits import paths
from digits.io import SIDE
from digits.params import TTA_VIEWS  # noqa: F401  ("shift", "rotate"), the views params.yaml may name

BATCH = 1024
SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))     # (rows, columns) in pixels
ANGLES = (8.0, -8.0)                           # degrees


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move [n, 28, 28, 1] images by whole pixels, filling with background (0), no wrap-around."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    from scipy import ndimage
    turned = ndimage.rotate(x.astype(np.float32), degrees, axes=(2, 1), reshape=False, order=1, cval=0.0)
    return np.clip(np.rint(turned), 0, 255).astype(np.uint8)


def views(x: np.ndarray, tta=()) -> list:
    """The images themselves, then one array per test-time view named in `tta`."""
    x = np.asarray(x, dtype=np.uint8).reshape(-1, SIDE, SIDE, 1)
    out = [x]
    if "shift" in tta:
        out += [_shift(x, dy, dx) for dy, dx in SHIFTS]
    if "rotate" in tta:
        out += [_rotate(x, a) for a in ANGLES]
    return out


def combine(probabilities: list) -> np.ndarray:
    """The mean of equally shaped [n, 10] probability arrays (members, views), as float32."""
    if not probabilities:
        raise ValueError("nothing to combine: no member probabilities")
    shapes = {np.shape(p) for p in probabilities}
    if len(shapes) != 1:
        raise ValueError(f"member probabilities differ in shape: {sorted(shapes)}")
    return np.mean(np.stack(probabilities), axis=0, dtype=np.float64).astype(np.float32)


def _predict(model, x: np.ndarray) -> np.ndarray:
    out = [np.asarray(model.predict_on_batch(x[i:i + BATCH]), dtype=np.float32) for i in range(0, len(x), BATCH)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def view_probabilities(models: dict, images: np.ndarray, tta=()) -> dict:
    """{member: [its probabilities for each view]} for uint8 images [n, 28, 28(, 1)]; the first view
    is the images themselves."""
    vs = views(images, tta)
    return {name: [_predict(m, v) for v in vs] for name, m in models.items()}


def member_probabilities(models: dict, images: np.ndarray, tta=()) -> dict:
    """{member: its probabilities averaged over the views} for uint8 images [n, 28, 28(, 1)]."""
    return {name: combine(ps) for name, ps in view_probabilities(models, images, tta).items()}


def predict(models: dict, images: np.ndarray, tta=()) -> np.ndarray:
    """The ensemble's probabilities [n, 10]: the mean over members (and views)."""
    return combine(list(member_probabilities(models, images, tta).values()))


def model_files(members, root: Path = Path(".")) -> dict:
    """{member: model file} for the names in `members`, in order, in the repository at `root` (the
    current directory by default); an error names a missing file."""
    files = {name: root / paths.member(name).model for name in members}
    missing = [str(f) for f in files.values() if not Path(f).exists()]
    if missing:
        where = "" if root == Path(".") else f" in {root}"
        raise FileNotFoundError(f"no model {', '.join(missing)}; train the ensemble with `dvc repro`{where}")
    return files


def load(files: dict) -> dict:
    """{member: loaded Keras model} for {member: model file}."""
    from digits import model as model_mod
    return {name: model_mod.load(f) for name, f in files.items()}
