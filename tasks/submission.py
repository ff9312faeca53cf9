"""Kaggle submission checker, usable on any file: python -m tasks.submission FILE [--rows N].

A valid file is UTF-8 text with the header `ImageId,Label`, ImageIds 1..N each exactly once
(N = the number of test rows when given), and labels 0..9. Both columns must be written as plain
integers, digits only: Kaggle's format is integers, so `3.0`, `+3` or `3e0` is rejected as "not
integers" (a float column usually means the predictions went through a float array by mistake).
Exit 1 with a message naming the file and the first offending rows otherwise, or naming the file
and why it cannot be read (missing, a folder, not UTF-8 text).
"""
import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from digits.cli import DataError

HEADER = ["ImageId", "Label"]


def check(path, rows: int | None = None) -> int:
    """Raise DataError naming `path` and the defect; return the number of rows of a valid file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text CSV ({err.reason} at byte {err.start})")
    header = text.partition("\n")[0].strip().split(",")
    if header != HEADER:
        raise DataError(f"{path}: header is {','.join(header)!r}, expected 'ImageId,Label'")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV ({err})")
    if rows is not None and len(frame) != rows:
        raise DataError(f"{path}: {len(frame)} rows, expected {rows} (one per test image)")
    problems, values = [], {}
    for col, lo, hi in (("ImageId", 1, len(frame)), ("Label", 0, 9)):
        digits = frame[col].str.fullmatch(r"[0-9]+")
        values[col] = pd.to_numeric(frame[col].where(digits), errors="coerce")  # NaN unless digits only
        bad = values[col].isna() | (values[col] < lo) | (values[col] > hi)
        if bad.any():
            rows_ = (np.flatnonzero(bad.to_numpy())[:5] + 1).tolist()
            problems.append(f"{int(bad.sum())} {col} values not integers in {lo}..{hi} (rows {', '.join(map(str, rows_))})")
    ids = values["ImageId"]
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
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{args.file}: valid Kaggle submission ({n} rows)")


if __name__ == "__main__":
    main()
