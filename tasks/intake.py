"""Stage intake: new labeled batches from the inbox, validated as train.csv is, joined to training.

Reads every `*.csv` in params.yaml's intake.inbox (train.csv's format, `label,pixel0..pixel783`),
in name order, and never modifies, moves or deletes one. A file whose bytes equal an earlier one's
(the same sha256) is a duplicate: listed, not taken. Every other file goes through validate's own
train.csv rules (tasks.validate.check: header, at least one row, labels 0..9, pixels 0..255, none
missing), one GX result per batch in reports/intake/<stem>.json. Writes:

- data/intake/train.parquet: the accepted batches' rows in name order, with the columns, dtypes
  (uint8) and pandas metadata of data/split/train.parquet; no rows when nothing was taken;
- data/intake/batches.json: each batch's file, sha256, rows, status (taken, rejected, duplicate),
  reason and report;
- data/intake/rejected/: a copy of each rejected batch with its report beside it;
- reports/intake/summary.md (the batches as a table) and metrics/intake.json (the counts).

The stage is a pure function of the inbox: running it again gives the same files, so a batch is
never taken twice. A rejected batch does not fail the stage; a missing inbox does (exit 65). The
accepted rows train the members only (train@<member>): the validation split never changes.
"""
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from digits import params as params_mod
from digits import paths
from digits.cli import DataError, run_stage
from digits.io import LABEL, PIXELS, atomic_path, sha256, write_json
from tasks import validate
from tasks.split import write_parquet

COLUMNS = [LABEL, *PIXELS]
SCHEMA = pa.schema([(c, pa.uint8()) for c in COLUMNS])   # data/split/train.parquet's


@dataclasses.dataclass
class Batch:
    file: str                  # the name in the inbox
    sha256: str
    rows: int | None           # data rows; None when the CSV reader could not read the file
    status: str                # taken, rejected or duplicate
    reason: str | None         # why it was rejected, or which batch it duplicates
    report: str | None         # its GX result (reports/intake/<stem>.json); none for a duplicate


def inbox_files(inbox: Path) -> list[Path]:
    if not inbox.is_dir():
        raise DataError(f"{inbox}: the intake inbox (params.yaml intake.inbox) is not a folder"
                        if inbox.exists() else f"{inbox}: the intake inbox (params.yaml intake.inbox) does not exist")
    return sorted((p for p in inbox.glob("*.csv") if p.is_file()), key=lambda p: p.name)


def read_rows(path: Path) -> pd.DataFrame:
    """A validated batch as uint8 columns, read by the same pandas reader, in the same batches, that
    validated it (so a value validation saw as the integer 7, such as "7.0", is 7 here too)."""
    with pd.read_csv(path, engine="c", chunksize=validate.BATCH_ROWS) as reader:
        return pd.concat([chunk[COLUMNS].astype(np.uint8) for chunk in reader], ignore_index=True)


def digest(path: Path) -> str:
    try:
        return sha256(path)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})")


def to_table(frames: list[pd.DataFrame]) -> pa.Table:
    if not frames:
        return SCHEMA.empty_table()
    frame = pd.concat(frames, ignore_index=True)
    return pa.table({c: pa.array(frame[c].to_numpy(), pa.uint8()) for c in COLUMNS}, schema=SCHEMA)


def intake(files: list[Path], out_dir: Path, report_dir: Path) -> tuple[list[Batch], pa.Table]:
    """Sort the batch `files` into taken, rejected and duplicate; write the reports to `report_dir`
    and the rejected copies under `out_dir`/rejected; return the batches and the taken rows."""
    context, seen, batches, frames = None, {}, [], []
    for path in files:
        h = digest(path)
        if h in seen:
            first = seen[h]
            batches.append(Batch(path.name, h, first.rows, "duplicate", f"duplicate of {first.file}", None))
            print(f"{path}: duplicate of {first.file}")
            continue
        if context is None:               # started only when a batch needs it: GX takes seconds to load
            context = validate.new_context()
        spec = dataclasses.replace(validate.TRAIN, name=path.stem)
        try:
            scan, report, failures = validate.check(context, spec, path)
            rows, reason = scan.rows, "; ".join(failures) or None
        except DataError as err:          # the reader's own errors: a short row, not UTF-8, empty
            rows, reason = None, str(err).removeprefix(f"{path}: ")
            report = {"reader": {"success": False, "error": reason}}
        validate.write_report(report_dir / f"{path.stem}.json", report)
        status = "rejected" if reason else "taken"
        batch = Batch(path.name, h, rows, status, reason, str(paths.INTAKE_REPORTS / f"{path.stem}.json"))
        batches.append(batch)
        seen[h] = batch
        if reason:
            rejected = out_dir / paths.INTAKE_REJECTED.relative_to(paths.INTAKE_DIR)
            rejected.mkdir(exist_ok=True)
            shutil.copyfile(path, rejected / path.name)
            shutil.copyfile(report_dir / f"{path.stem}.json", rejected / f"{path.stem}.json")
            print(f"{path}: rejected: {reason}")
        else:
            frames.append(read_rows(path))
            print(f"{path}: taken ({rows:,} rows)")
    return batches, to_table(frames)


def summary(inbox: Path, batches: list[Batch]) -> str:
    """The batches as a Markdown table (names and reasons come from outside: their pipes escaped)."""
    cell = lambda v: "" if v is None else str(v).replace("|", "\\|")
    lines = [f"# Intake: {inbox}", "", f"Batches, in name order: {len(batches)}.", ""]
    if batches:
        lines += ["| file | status | rows | reason | report |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell(v) for v in (b.file, b.status, b.rows, b.reason, b.report)) + " |"
                  for b in batches]
    return "\n".join(lines) + "\n"


def counts(batches: list[Batch], table: pa.Table) -> dict:
    status = [b.status for b in batches]
    return {"batches": len(batches), "taken": status.count("taken"), "rejected": status.count("rejected"),
            "duplicates": status.count("duplicate"), "rows": table.num_rows}


def main() -> None:
    inbox = Path(params_mod.load().intake.inbox)
    files = inbox_files(inbox)
    with (atomic_path(paths.INTAKE_DIR, directory=True) as out,
          atomic_path(paths.INTAKE_REPORTS, directory=True) as reports):
        batches, table = intake(files, out, reports)
        write_parquet(table, out / paths.INTAKE_TRAIN.relative_to(paths.INTAKE_DIR))
        write_json(out / paths.INTAKE_MANIFEST.relative_to(paths.INTAKE_DIR),
                   {"inbox": str(inbox), "batches": [dataclasses.asdict(b) for b in batches]})
        # also keeps the folder non-empty, so git holds it even when the inbox is empty
        (reports / "summary.md").write_text(summary(inbox, batches))
    n = counts(batches, table)
    write_json(paths.INTAKE_METRICS, n)
    print(f"intake: batches {n['batches']}, taken {n['taken']} ({n['rows']:,} rows), rejected {n['rejected']}, "
          f"duplicates {n['duplicates']} -> {paths.INTAKE_TRAIN}")


if __name__ == "__main__":
    run_stage(main)
