"""Atomic writes and the one conversion from Kaggle-format tables to image arrays.

Every output goes through `atomic_path`: it is written next to its destination under a temporary
name and renamed only when complete, so a failed stage never leaves a file that looks finished.
"""
import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

SIDE = 28                      # MNIST images are 28 x 28, one channel
PIXELS = [f"pixel{i}" for i in range(SIDE * SIDE)]
LABEL = "label"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, directory: bool = False):
    """Yield a temporary sibling of `path` (a file, or a folder if `directory`); rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        # the name keeps every suffix (.weights.h5, .keras): some writers insist on it
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_UMASK)  # mkstemp makes 0600
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_rows(path, header: list, rows) -> None:
    """A small CSV (plot data for DVC), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def thin(*cols, points: int):
    """Rows of equally long columns, every k-th one, so a curve keeps about `points` points."""
    step = max(1, len(cols[0]) // points)
    return zip(*(np.asarray(c)[::step].tolist() for c in cols))


def to_images(frame):
    """Kaggle-format frame -> (x uint8 [n, 28, 28, 1], y uint8 [n] or None if there is no label)."""
    x = frame[PIXELS].to_numpy(dtype=np.uint8).reshape(-1, SIDE, SIDE, 1)
    y = frame[LABEL].to_numpy(dtype=np.uint8) if LABEL in frame.columns else None
    return x, y
