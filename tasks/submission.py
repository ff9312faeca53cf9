"""Kaggle submission checker, usable on any file: python -m tasks.submission FILE [--rows N].

A valid file has the header `ImageId,Label`, ImageIds 1..N each exactly once (N = the number of
test rows when given), and integer labels 0..9. Exit 1 with a message naming the file and the
first offending rows otherwise.
"""
import argparse
import sys

import numpy as np
import pandas as pd

from tasks.cli import DataError

HEADER = ["ImageId", "Label"]


def check(path, rows: int | None = None) -> int:
    """Raise DataError naming `path` and the defect; return the number of rows of a valid file."""
    with open(path, newline="") as f:
        header = f.readline().strip().split(",")
    if header != HEADER:
        raise DataError(f"{path}: header is {','.join(header)!r}, expected 'ImageId,Label'")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV ({err})")
    if rows is not None and len(frame) != rows:
        raise DataError(f"{path}: {len(frame)} rows, expected {rows} (one per test image)")
    problems = []
    for col, lo, hi in (("ImageId", 1, len(frame)), ("Label", 0, 9)):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values != values.round()) | (values < lo) | (values > hi)
        if bad.any():
            rows_ = (np.flatnonzero(bad.to_numpy())[:5] + 1).tolist()
            problems.append(f"{int(bad.sum())} {col} values not integers in {lo}..{hi} (rows {', '.join(map(str, rows_))})")
    ids = pd.to_numeric(frame["ImageId"], errors="coerce")
    dup = ids[ids.duplicated(keep="first") & ids.notna()]
    if len(dup):
        problems.append(f"duplicate ImageIds: {', '.join(str(int(v)) for v in dup.unique()[:5])}")
    missing = sorted(set(range(1, len(frame) + 1)) - set(ids.dropna().astype(int)))
    if missing:
        problems.append(f"missing ImageIds: {', '.join(map(str, missing[:5]))}")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    return len(frame)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.submission", description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--rows", type=int, help="expected number of rows (test images)")
    args = ap.parse_args(argv)
    try:
        n = check(args.file, args.rows)
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{args.file}: valid Kaggle submission ({n} rows)")


if __name__ == "__main__":
    main()
