"""Stage eda: class distribution and a grid of sample digits from the raw training data
(the EDA of seeds 001 and 003), as PNG files plus the class counts as a CSV DVC draws as bars."""
import numpy as np
import pyarrow.parquet as pq

from digits import paths
from digits.cli import run_stage
from digits.io import atomic_path, to_images, write_rows
from tasks import plots

PER_CLASS = 10             # sample digits shown per class


def main() -> None:
    x, y = to_images(pq.read_table(paths.TRAIN_PARQUET).to_pandas())
    counts = np.bincount(y, minlength=10)
    with atomic_path(paths.EDA_PLOTS, directory=True) as tmp:
        write_rows(tmp / "class_counts.csv", ["digit", "count"], enumerate(counts.tolist()))
        plots.bars(range(10), counts.tolist(), tmp / "class_distribution.png",
                   f"Training images per digit (n={len(y):,})", "images")
        picks = np.concatenate([np.flatnonzero(y == c)[:PER_CLASS] for c in range(10)])
        plots.digit_grid(x[picks], [str(v) for v in y[picks]], tmp / "samples.png", cols=PER_CLASS,
                         title="Sample training digits")
    print(f"eda: {len(y):,} training images, per digit {counts.tolist()}")


if __name__ == "__main__":
    run_stage(main)
