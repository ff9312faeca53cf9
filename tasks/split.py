"""Stage split: stratified, seeded train/validation split of the training Parquet.

`split.sample_fraction` < 1 first takes a stratified sample (seed 002 trained on 10%) for quick
runs. The test set is never read here.
"""
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from tasks import params as params_mod
from tasks import paths
from tasks.cli import run_stage
from tasks.io import LABEL, atomic_path


def split(frame: pd.DataFrame, val_fraction: float, sample_fraction: float, seed: int):
    """(train, val) frames, both stratified on the label; row order within each follows the draw."""
    if sample_fraction < 1:
        frame, _ = train_test_split(frame, train_size=sample_fraction, stratify=frame[LABEL], random_state=seed)
    train, val = train_test_split(frame, test_size=val_fraction, stratify=frame[LABEL], random_state=seed)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def write_parquet(frame: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, compression="zstd", index=False)


def main() -> None:
    p = params_mod.load()
    frame = pq.read_table(paths.TRAIN_PARQUET).to_pandas()
    train, val = split(frame, p.split.val_fraction, p.split.sample_fraction, p.base.seed)
    write_parquet(train, paths.SPLIT_TRAIN)
    write_parquet(val, paths.SPLIT_VAL)
    print(f"split: {len(train):,} train / {len(val):,} validation rows")


if __name__ == "__main__":
    run_stage(main)
