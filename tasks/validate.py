"""Stage validate: Great Expectations checks of train.csv and test.csv before anything reads them.

Each file is read once, in batches of BATCH_ROWS rows, so memory stays flat however long the file
is; what the batches leave is the header, the number of data rows and a column profile (one row
per checked column, the label and each pixel, with the count and first row numbers of missing,
non-numeric, non-integer and out-of-range values). One GX checkpoint per file and batch validates
the table on its header (exact column names and order) and the profile (at least one data row,
every defect count 0: labels 0..9, pixels 0..255, none missing). Profiling first keeps the suite
at a few expectations: 785 per-column expectations cost GX about 4 ms each (measured on a 2-core
AMD EPYC virtual machine; `python -m bench --only data,validate-scale` times the whole stage and
its memory). Results go to reports/validation/<file>.json and Data Docs HTML under
reports/validation/docs/, which works offline: the scripts, stylesheets and fonts GX's pages load
from CDNs are copied into the site from tasks/vendor/ (offline_data_docs()).

A failing file exits 65 with a message naming the file, each failing column, how many values fail
and the first row numbers (1-based data rows of the whole file: row 1 is the line after the
header). A row with more or fewer fields than the header is reported as such, with its row and
line number. check() validates one file; the intake stage (tasks/intake.py) applies it, with TRAIN's
rules, to each arriving batch.
"""
import csv
import json
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from digits import paths
from digits.cli import DataError, run_stage
from digits.io import LABEL, PIXELS, atomic_path

EXAMPLES = 5           # row numbers quoted per failing column
MAX_COLUMNS = 12       # failing columns listed in the message before "... and N more"
BATCH_ROWS = 10_000    # rows read at a time: about 18 MB of MNIST CSV, 65 MB as int64
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


@dataclass
class Scan:
    """What one pass over a file leaves: its header, its number of data rows and its profile."""
    columns: list
    rows: int
    profile: pd.DataFrame


def scan(path: Path, spec: Spec, batch_rows: int | None = None) -> Scan:
    """Read the CSV in batches of `batch_rows` (default BATCH_ROWS) rows with pandas' C reader and
    profile it as it goes.

    Memory stays at about one batch whatever the file's length; counts and row numbers are over the
    whole file. pandas' own errors become one clear line naming the file. pandas rejects a row
    longer than the header but pads a shorter one with missing values; both are the same defect and
    get the same message. As when the file was read whole, a long row anywhere wins over a short
    one, and a short row over every other defect.
    """
    prof, rows, short = None, 0, None
    try:
        with pd.read_csv(path, engine="c", chunksize=batch_rows or BATCH_ROWS) as reader:
            for batch in reader:
                if prof is None:
                    columns, prof = list(batch.columns), Profile(spec, batch.columns)
                    fields = _RawRows(path, len(columns))
                prof.add(batch, rows)
                # A short row leaves its last column missing; only then are raw lines read again.
                gaps = np.flatnonzero(batch.iloc[:, -1].isna().to_numpy())
                if short is None and len(gaps):
                    short = fields.first_short(rows + 1 + gaps)
                rows += len(batch)
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
    if short:
        raise DataError(_field_count(path, *short, len(columns)))
    return Scan(columns, rows, prof.frame(rows))


def _field_count(path, row: int, line: int, got: int, want: int) -> str:
    return f"{path}: row {row} (line {line}) has {got} fields, the header has {want}"


class _RawRows:
    """The raw file's data rows as the csv module reads them: only they tell a short row from a
    full one whose last field is empty. Read lazily, from where the last question stopped, so the
    file is read again at most once however many batches ask."""

    def __init__(self, path: Path, width: int):
        self.path, self.width, self.it = path, width, None

    def _iter(self):
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)
            records = (r for r in reader if r)   # blank lines are skipped, as pandas skips them
            for row, fields in enumerate(records, 1):
                yield row, reader.line_num, len(fields)

    def first_short(self, candidates):
        """(row, line, fields) of the first of these ascending row numbers with too few fields."""
        self.it = self.it or self._iter()
        for want in candidates:
            for row, line, got in self.it:
                if row == want:
                    break
            else:
                return None
            if got < self.width:
                return row, line, got
        return None


def _rows(mask: np.ndarray, start: int = 0) -> list[int]:
    """The first EXAMPLES 1-based row numbers where mask holds; `start` rows come before it."""
    return [start + int(i) + 1 for i in np.flatnonzero(mask)[:EXAMPLES]]


class Profile:
    """One row per checked column: count and first rows of each defect, added batch by batch.

    The label is profiled as the pixels are, with 9 as its largest value; its message words every
    value that is not missing as "outside the integers 0..9".
    """

    def __init__(self, spec: Spec, columns):
        bounds = {LABEL: 9} if spec.label else {}
        present = set(columns)
        self.hi = {c: bounds.get(c, 255) for c in spec.columns if c in present}
        self.out = {c: {d: 0 for d in DEFECTS} | {f"{d}_rows": [] for d in DEFECTS} for c in self.hi}

    def _note(self, column: str, defect: str, mask: np.ndarray, start: int) -> None:
        entry, shown = self.out[column], self.out[column][f"{defect}_rows"]
        entry[defect] += int(mask.sum())
        if len(shown) < EXAMPLES:
            shown += _rows(mask, start)[:EXAMPLES - len(shown)]

    def add(self, frame: pd.DataFrame, start: int) -> None:
        """Profile `frame`, whose first row is data row start + 1 of the file."""
        dtypes = dict(zip(frame.columns, frame.dtypes))   # frame[c] per column costs 40 ms a batch
        ints = [c for c in self.hi if dtypes[c].kind in "iu"]
        others = [c for c in self.hi if dtypes[c].kind not in "iu"]
        if ints:  # the common case, all at once: no missing, non-numeric or non-integer possible
            block = (frame if ints == list(frame.columns) else frame[ints]).to_numpy()
            top = np.array([self.hi[c] for c in ints])
            # column minima and maxima first: only a column outside its range needs a row mask
            for j in np.flatnonzero((block.min(axis=0) < 0) | (block.max(axis=0) > top)):
                self._note(ints[j], "out_of_range", (block[:, j] < 0) | (block[:, j] > top[j]), start)
        for c in others:
            raw = frame[c]
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            masks = {"missing": raw.isna().to_numpy(),
                     "not_numeric": np.isnan(num) & raw.notna().to_numpy()}
            ok = ~np.isnan(num)
            v = np.where(ok, num, 0)                 # NaN-free copy for the comparisons below
            masks["not_integer"] = ok & (np.floor(v) != v)
            masks["out_of_range"] = ok & ~masks["not_integer"] & ((v < 0) | (v > self.hi[c]))
            for d, m in masks.items():
                self._note(c, d, m, start)

    def frame(self, rows: int) -> pd.DataFrame:
        """The profile; `rows`, the file's number of data rows, is in every row for GX to check."""
        return pd.DataFrame([{"column": c, "rows": rows} | self.out[c] for c in self.hi])


def build_checkpoints(context, spec: Spec) -> dict:
    """GX suites and checkpoints for one file: {"table": ..., "column-profile": ...}.

    The table batch is the file's header (no rows: GX never holds the data), the profile batch
    holds every count over the whole file, the number of data rows included.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    table = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(spec.columns))]
    profile = [gxe.ExpectColumnMinToBeBetween(column="rows", min_value=1)] + [
        gxe.ExpectColumnValuesToBeBetween(column=d, min_value=0, max_value=0) for d in DEFECTS]
    source = context.data_sources.add_pandas(spec.name)
    checkpoints = {}
    for batch, expectations in (("table", table), ("column-profile", profile)):
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


def new_context(docs_dir: Path | None = None):
    """An ephemeral GX context; with `docs_dir`, one whose Data Docs site is built there."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one bar per metric floods logs
    if docs_dir is None:
        return context
    context.add_data_docs_site(site_name="local", site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())}})
    return context


# Data Docs offline. GX's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from
# CDNs and its logo from S3; offline the index renders unstyled and lists no validation results
# (bootstrap-table fills the table from a script). The same files, pinned, are vendored from npm in
# tasks/vendor/ (its README: versions, sha256, licenses; its update.py re-fetches them). After GX
# builds the site they are copied into static/vendor/ and every page and stylesheet is pointed at
# them with relative URLs, so the site also works when moved. Rewriting GX's output was chosen over
# overriding its Jinja templates: those URLs sit in five templates (the logo is forced to S3 in
# top_navbar.j2) that would have to be copied whole and kept in step with GX; a URL this map does
# not know is reported, and tests/test_offline_pages.py opens the site with the network cut off.
VENDOR = Path(__file__).resolve().parent / "vendor"
FILTER_CONTROL = "dist/extensions/filter-control/bootstrap-table-filter-control"
# URL in GX 1.24's pages -> file under tasks/vendor/: the package and version the URL names (vega@5,
# vega-lite@5 and vega-embed@6 follow the newest release on the CDN; here they are pinned), minified
# where GX names the unminified build, and 1.19.1's filter-control stylesheet where GX names 1.19.0's.
DOCS_ASSETS = {
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/build/vega-embed.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        "popper.js@1.12.9/dist/umd/popper.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap@4.3.1/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap@4.3.1/dist/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.js",
    f"https://unpkg.com/bootstrap-table@1.19.1/{FILTER_CONTROL}.min.js": f"bootstrap-table@1.19.1/{FILTER_CONTROL}.min.js",
    f"https://unpkg.com/bootstrap-table@1.19.0/{FILTER_CONTROL}.min.css": f"bootstrap-table@1.19.1/{FILTER_CONTROL}.min.css",
    f"https://unpkg.com/bootstrap-table@1.19.0/{FILTER_CONTROL}.css": f"bootstrap-table@1.19.1/{FILTER_CONTROL}.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "@fortawesome/fontawesome-free@6.6.0/css/all.min.css",
}
# GX's logo from S3 (with a timestamp and the context id as query) -> the copy GX puts in the site
GX_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/"
                     r"(?:logo-long|full_logo_dark)\.png[^\"')]*")
# what a page or stylesheet would still fetch: <script src>, <link href>, <img src>, CSS url()
REMOTE = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=\"(https?://[^\"]+)\""
                    r"|url\(['\"]?(https?://[^'\")]+)")


def offline_data_docs(site: Path) -> None:
    """Copy tasks/vendor/'s assets into the Data Docs site and point its pages at them."""
    shutil.copytree(VENDOR, site / "static" / "vendor",
                    ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    left = set()
    for file in [*site.glob("**/*.html"), *(site / "static" / "styles").glob("*.css")]:
        static = Path(os.path.relpath(site / "static", file.parent)).as_posix()
        text = file.read_text(encoding="utf-8")
        for url, path in DOCS_ASSETS.items():
            text = text.replace(f'"{url}"', f'"{static}/vendor/{path}"')
        text = GX_LOGO.sub(f"{static}/images/logo-long.png", text)
        # Subresource integrity needs a CORS fetch, which Chromium refuses for file:// URLs (the
        # two hashes GX gives, popper's and bootstrap.min.js's, match the vendored files).
        text = re.sub(r'\s(?:integrity|crossorigin)="[^"]*"', "", text)
        file.write_text(text, encoding="utf-8")
        left |= {a or b for a, b in REMOTE.findall(text)}
    if left:
        print(f"warning: Data Docs still load from the network: {', '.join(sorted(left))}", file=sys.stderr)


def describe_failures(spec: Spec, columns: list, prof: pd.DataFrame, results) -> list[str]:
    """Message lines for every failed expectation, most specific first.

    Label and row-count failures come first, then one line per failing pixel column and defect in
    column order, MAX_COLUMNS lines at most; the rest is counted per defect ("... and 8 more
    columns with values outside 0..255").
    """
    failed = [r for r in results if not r.success]
    if any(r.expectation_config.type == "expect_table_columns_to_match_ordered_list" for r in failed):
        return [_header_problem(columns, spec)]  # column checks mean nothing under the wrong header
    items = []  # (position, defect or None, text)
    for result in failed:
        kind, column = result.expectation_config.type, result.expectation_config.kwargs.get("column")
        if kind == "expect_column_min_to_be_between":     # the number of rows
            items.append((-1, None, "no data rows (at least one is required)"))
        elif column in DEFECTS:  # the profile holds every failing column, not only GX's sample
            for i in np.flatnonzero(prof[column].to_numpy() > 0):
                row = prof.iloc[i]
                if row["column"] != LABEL:  # the label is worded on its own, below
                    items.append((1 + i, column, f"column {row['column']}: {_count(row[column])} {_words(column)} "
                                                 f"(rows {_fmt(row[column + '_rows'])})"))
    if any(r.expectation_config.kwargs.get("column") in DEFECTS for r in failed) and spec.label:
        items += _label_problems(prof.set_index("column").loc[LABEL])
    items.sort(key=lambda t: t[0])
    lines = [text for _, _, text in items[:MAX_COLUMNS]]
    for defect, n in Counter(defect for _, defect, _ in items[MAX_COLUMNS:]).items():
        lines.append(f"... and {n} more column{'s' if n > 1 else ''} with values {_words(defect)}")
    return lines


def _label_problems(row: pd.Series) -> list:
    """The label's profile row as at most two items: values missing, then any other defect, all
    worded as values outside the integers 0..9 (the counts are disjoint, so they add up)."""
    items = []
    if row["missing"]:
        items.append((0, None, f"column {LABEL}: {_count(row['missing'])} missing (rows {_fmt(row['missing_rows'])})"))
    other = [d for d in DEFECTS if d != "missing"]
    if n := sum(row[d] for d in other):
        first = sorted(r for d in other for r in row[f"{d}_rows"])[:EXAMPLES]
        items.append((0, None, f"column {LABEL}: {_count(n)} outside the integers 0..9 (rows {_fmt(first)})"))
    return items


def _words(defect: str) -> str:
    return DEFECTS[defect].format(lo=0, hi=255)


def _count(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _fmt(rows) -> str:
    return ", ".join(map(str, rows))


def _header_problem(got: list, spec: Spec) -> str:
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


def check(context, spec: Spec, path: Path) -> tuple[Scan, dict, list[str]]:
    """Scan `path` and run its GX checkpoints in `context` (whose names `spec.name` begins; one
    spec name per file): (the scan, GX's results by batch, the failure lines, [] if it passes).
    A file the CSV reader cannot read raises DataError, as scan() does."""
    seen = scan(path, spec)
    results, report = [], {}
    for batch, checkpoint in build_checkpoints(context, spec).items():
        data = pd.DataFrame(columns=seen.columns) if batch == "table" else seen.profile
        run = checkpoint.run(batch_parameters={"dataframe": data})
        report[batch] = run.describe_dict()
        results += [r for v in run.run_results.values() for r in v.results]
    return seen, report, describe_failures(spec, seen.columns, seen.profile, results)


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def failure_message(path: Path, failures: list[str]) -> str:
    return f"{path}: failed validation\n  - " + "\n  - ".join(failures)


def validate(files: dict, report_dir: Path) -> None:
    """Validate {Spec: csv path}; write JSON + Data Docs to report_dir; DataError if any file fails."""
    with atomic_path(report_dir, directory=True) as tmp:
        context = new_context(tmp / "docs")
        errors = []
        for spec, path in files.items():
            seen, report, failures = check(context, spec, path)
            write_report(tmp / f"{spec.name}.json", report)
            if failures:
                errors.append(failure_message(path, failures))
            else:
                print(f"{path}: valid ({seen.rows:,} rows x {len(seen.columns)} columns)")
        context.build_data_docs()
        offline_data_docs(tmp / "docs")
    if errors:
        raise DataError("\n".join(errors) + f"\nreport: {report_dir / 'docs' / 'index.html'}")


def main() -> None:
    validate({TRAIN: paths.RAW_TRAIN, TEST: paths.RAW_TEST}, paths.VALIDATION_DIR)


if __name__ == "__main__":
    run_stage(main)
