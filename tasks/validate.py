"""Stage validate: Great Expectations checks of train.csv and test.csv before anything reads them.

One GX checkpoint validates, per file, two batches: the table itself (exact column names and
order, at least one row, labels in 0..9 with none missing) and its pixel-column profile (one row
per pixel column with the count of missing, non-numeric, non-integer and out-of-range values).
Profiling first keeps the suite at a few expectations: 785 per-column expectations cost GX about
4 ms each, the profile costs 0.1 s for 60,000 rows (measured on a 2-core AMD EPYC virtual machine;
`make bench` times the whole stage). Results go to reports/validation/<file>.json and Data Docs
HTML under reports/validation/docs/.

A failing file exits 65 with a message naming the file, each failing column, how many values fail
and the first row numbers (1-based data rows: row 1 is the line after the header). A row with more
or fewer fields than the header is reported as such, with its row and line number.
"""
import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import paths
from tasks.cli import DataError, run_stage
from tasks.io import LABEL, PIXELS, atomic_path

EXAMPLES = 5           # row numbers quoted per failing column
MAX_COLUMNS = 12       # failing columns listed in the message before "... and N more"
DEFECTS = {            # profile column -> how the message words it
    "missing": "missing",
    "not_numeric": "non-numeric",
    "not_integer": "non-integer",
    "out_of_range": "outside {lo}..{hi}",
}


@dataclass(frozen=True)
class Spec:
    name: str           # batch name in GX and the report file's stem
    columns: tuple      # the exact header
    label: bool


TRAIN = Spec("train", (LABEL, *PIXELS), label=True)
TEST = Spec("test", tuple(PIXELS), label=False)


def read_csv(path: Path) -> pd.DataFrame:
    """pandas' C reader, with its own errors turned into one clear line naming the file.

    pandas rejects a row longer than the header but pads a shorter one with missing values; both
    are the same defect and get the same message.
    """
    try:
        frame = pd.read_csv(path, engine="c", low_memory=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (no header, no rows)")
    except pd.errors.ParserError as err:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if m:
            want, line, got = map(int, m.groups())
            raise DataError(_field_count(path, line - 1, line, got, want))
        raise DataError(f"{path}: not a readable CSV ({err})")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text CSV ({err.reason} at byte {err.start})")
    # A short row leaves its last column missing; only then are the raw lines read again.
    if len(frame.columns) and frame.iloc[:, -1].isna().any():
        short = _short_row(path, len(frame.columns))
        if short:
            raise DataError(_field_count(path, *short, len(frame.columns)))
    return frame


def _field_count(path, row: int, line: int, got: int, want: int) -> str:
    return f"{path}: row {row} (line {line}) has {got} fields, the header has {want}"


def _short_row(path: Path, width: int):
    """(row, line, fields) of the first data row with fewer than `width` fields, or None."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        records = (r for r in reader if r)   # blank lines are skipped, as pandas skips them
        for row, fields in enumerate(records, 1):
            if len(fields) < width:
                return row, reader.line_num, len(fields)
    return None


def _rows(mask: np.ndarray) -> list[int]:
    return [int(i) + 1 for i in np.flatnonzero(mask)[:EXAMPLES]]


def profile(frame: pd.DataFrame, columns: list, hi: int) -> pd.DataFrame:
    """One row per column: count and first rows of each defect (missing, not numeric, ...)."""
    present = [c for c in columns if c in frame.columns]
    ints = [c for c in present if pd.api.types.is_integer_dtype(frame[c].dtype)]
    out = {c: {d: 0 for d in DEFECTS} | {f"{d}_rows": [] for d in DEFECTS} for c in present}
    if ints:  # the common case, all at once: no missing, non-numeric or non-integer possible
        block = frame[ints].to_numpy()
        bad = (block < 0) | (block > hi)
        for j in np.flatnonzero(bad.any(axis=0)):
            out[ints[j]].update(out_of_range=int(bad[:, j].sum()), out_of_range_rows=_rows(bad[:, j]))
    for c in set(present) - set(ints):
        raw = frame[c]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        masks = {"missing": raw.isna().to_numpy(),
                 "not_numeric": np.isnan(num) & raw.notna().to_numpy()}
        ok = ~np.isnan(num)
        v = np.where(ok, num, 0)                 # NaN-free copy for the comparisons below
        masks["not_integer"] = ok & (np.floor(v) != v)
        masks["out_of_range"] = ok & ~masks["not_integer"] & ((v < 0) | (v > hi))
        for d, m in masks.items():
            out[c].update({d: int(m.sum()), f"{d}_rows": _rows(m)})
    return pd.DataFrame([{"column": c} | out[c] for c in present])


def build_checkpoints(context, spec: Spec) -> dict:
    """GX suites and checkpoints for one file: {"table": ..., "pixel-profile": ...}."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    table = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(spec.columns)),
             gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    if spec.label:
        table += [gxe.ExpectColumnValuesToNotBeNull(column=LABEL),
                  gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=list(range(10)))]
    pixels = [gxe.ExpectColumnValuesToBeBetween(column=d, min_value=0, max_value=0) for d in DEFECTS]
    source = context.data_sources.add_pandas(spec.name)
    checkpoints = {}
    for batch, expectations in (("table", table), ("pixel-profile", pixels)):
        name = f"{spec.name}-{batch}"
        # The suite is built whole and added once: adding 1,570 expectations one by one re-saves
        # the suite each time and takes minutes (measured on the 2-core machine above).
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        batch_def = source.add_dataframe_asset(batch).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def, suite=suite))
        # Data Docs are built once after all checkpoints (validate() below), not by an
        # UpdateDataDocsAction per checkpoint, which re-renders the whole site four times.
        checkpoints[batch] = context.checkpoints.add(gx.Checkpoint(
            name=name, validation_definitions=[definition],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_COLUMNS}))
    return checkpoints


def new_context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one bar per metric floods logs
    context.add_data_docs_site(site_name="local", site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())}})
    return context


def describe_failures(spec: Spec, frame: pd.DataFrame, prof: pd.DataFrame, results) -> list[str]:
    """Message lines for every failed expectation, most specific first.

    Label and row-count failures come first, then one line per failing pixel column and defect in
    column order, MAX_COLUMNS lines at most; the rest is counted per defect ("... and 8 more
    columns with values outside 0..255").
    """
    failed = [r for r in results if not r.success]
    if any(r.expectation_config.type == "expect_table_columns_to_match_ordered_list" for r in failed):
        return [_header_problem(frame, spec)]  # column checks mean nothing under the wrong header
    items = []  # (position, defect or None, text)
    for result in failed:
        kind, column = result.expectation_config.type, result.expectation_config.kwargs.get("column")
        if kind == "expect_table_row_count_to_be_between":
            items.append((-1, None, "no data rows (at least one is required)"))
        elif column == LABEL:
            mask = frame[LABEL].isna() if "null" in kind else (
                frame[LABEL].notna() & ~frame[LABEL].isin(range(10)))
            what = "missing" if "null" in kind else "outside the integers 0..9"
            items.append((0, None, f"column {LABEL}: {_count(int(mask.sum()))} {what} (rows {_fmt(_rows(mask.to_numpy()))})"))
        elif column in DEFECTS:  # the profile holds every failing column, not only GX's sample
            for i in np.flatnonzero(prof[column].to_numpy() > 0):
                row = prof.iloc[i]
                items.append((1 + i, column, f"column {row['column']}: {_count(row[column])} {_words(column)} "
                                             f"(rows {_fmt(row[column + '_rows'])})"))
    items.sort(key=lambda t: t[0])
    lines = [text for _, _, text in items[:MAX_COLUMNS]]
    for defect, n in Counter(defect for _, defect, _ in items[MAX_COLUMNS:]).items():
        lines.append(f"... and {n} more column{'s' if n > 1 else ''} with values {_words(defect)}")
    return lines


def _words(defect: str) -> str:
    return DEFECTS[defect].format(lo=0, hi=255)


def _count(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _fmt(rows) -> str:
    return ", ".join(map(str, rows))


def _header_problem(frame: pd.DataFrame, spec: Spec) -> str:
    got = list(frame.columns)
    if all(re.fullmatch(r"-?\d+(\.\d+)?", str(c)) for c in got):
        return f"header missing: the first line holds numbers, not the {len(spec.columns)} column names"
    missing = [c for c in spec.columns if c not in got]
    extra = [c for c in got if c not in spec.columns]
    parts = [f"expected {len(spec.columns)} columns {spec.columns[0]}..{spec.columns[-1]}, found {len(got)}"]
    if missing:
        parts.append(f"missing columns: {', '.join(missing[:MAX_COLUMNS])}")
    if extra:
        parts.append(f"unexpected columns: {', '.join(map(str, extra[:MAX_COLUMNS]))}")
    if not missing and not extra:
        first = next(i for i, (a, b) in enumerate(zip(got, spec.columns)) if a != b)
        parts.append(f"columns out of order from position {first + 1} ({got[first]} where {spec.columns[first]} belongs)")
    return "; ".join(parts)


def validate(files: dict, report_dir: Path) -> None:
    """Validate {Spec: csv path}; write JSON + Data Docs to report_dir; DataError if any file fails."""
    with atomic_path(report_dir, directory=True) as tmp:
        context = new_context(tmp / "docs")
        errors = []
        for spec, path in files.items():
            frame = read_csv(path)
            prof = profile(frame, PIXELS, 255)
            results, report = [], {}
            for batch, checkpoint in build_checkpoints(context, spec).items():
                run = checkpoint.run(batch_parameters={"dataframe": frame if batch == "table" else prof})
                report[batch] = run.describe_dict()
                results += [r for v in run.run_results.values() for r in v.results]
            (tmp / f"{spec.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
            failures = describe_failures(spec, frame, prof, results)
            if failures:
                errors.append(f"{path}: failed validation\n  - " + "\n  - ".join(failures))
            else:
                print(f"{path}: valid ({len(frame):,} rows x {frame.shape[1]} columns)")
        context.build_data_docs()
    if errors:
        raise DataError("\n".join(errors) + f"\nreport: {report_dir / 'docs' / 'index.html'}")


def main() -> None:
    validate({TRAIN: paths.RAW_TRAIN, TEST: paths.RAW_TEST}, paths.VALIDATION_DIR)


if __name__ == "__main__":
    run_stage(main)
