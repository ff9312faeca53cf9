"""Each rule of the validator: the intended message, a non-zero exit, nothing written downstream."""
import subprocess
import sys

import pytest

from conftest import ROOT, kaggle_frame
from tasks import validate
from tasks.cli import DataError


def write(path, frame, crlf=False):
    text = frame.to_csv(index=False)
    path.write_bytes(text.replace("\n", "\r\n").encode() if crlf else text.encode())
    return path


def check(tmp_path, train_text=None, test_text=None, train=None, test=None):
    """Validate; return the DataError message ('' when both files pass)."""
    tr, te = tmp_path / "train.csv", tmp_path / "test.csv"
    tr.write_text(train_text) if train_text is not None else write(tr, kaggle_frame(20) if train is None else train)
    te.write_text(test_text) if test_text is not None else write(te, kaggle_frame(5, label=False) if test is None else test)
    try:
        validate.validate({validate.TRAIN: tr, validate.TEST: te}, tmp_path / "report")
    except DataError as err:
        return str(err)
    return ""


def test_valid_files_pass_and_write_json_and_data_docs(tmp_path):
    assert check(tmp_path) == ""
    report = tmp_path / "report"
    assert (report / "train.json").read_text().count('"success": true') >= 2
    assert (report / "docs" / "index.html").stat().st_size > 0


def test_crlf_line_endings_are_valid(tmp_path, capsys):
    write(tmp_path / "train.csv", kaggle_frame(12), crlf=True)
    write(tmp_path / "test.csv", kaggle_frame(3, label=False), crlf=True)
    validate.validate({validate.TRAIN: tmp_path / "train.csv", validate.TEST: tmp_path / "test.csv"},
                      tmp_path / "report")
    out = capsys.readouterr().out
    assert "train.csv: valid (12 rows x 785 columns)" in out and "test.csv: valid (3 rows x 784 columns)" in out


def test_pixel_out_of_range_names_column_count_and_rows(tmp_path):
    frame = kaggle_frame(20)
    frame.loc[[3, 7], "pixel10"] = [256, -1]
    msg = check(tmp_path, train=frame)
    assert "train.csv: failed validation" in msg
    assert "column pixel10: 2 values outside 0..255 (rows 4, 8)" in msg


def test_more_failing_columns_than_listed_are_counted_exactly(tmp_path):
    frame = kaggle_frame(20)
    frame.loc[0, [f"pixel{i}" for i in range(20)]] = 300
    failures = [l[4:] for l in check(tmp_path, train=frame).splitlines() if l.startswith("  - ")]
    assert failures == [f"column pixel{i}: 1 value outside 0..255 (rows 1)" for i in range(12)] + [
        "... and 8 more columns with values outside 0..255"]
    # several defects: labels first, then columns in order; the rest counted per defect
    frame = kaggle_frame(20).astype({f"pixel{i}": float for i in range(100, 103)})
    frame.loc[2, "label"] = 11
    frame.loc[0, [f"pixel{i}" for i in range(12)]] = -5
    frame.loc[1, [f"pixel{i}" for i in range(100, 103)]] = 0.5
    failures = [l[4:] for l in check(tmp_path, train=frame).splitlines() if l.startswith("  - ")]
    assert failures[0] == "column label: 1 value outside the integers 0..9 (rows 3)"
    assert failures[11] == "column pixel10: 1 value outside 0..255 (rows 1)"
    assert failures[12:] == ["... and 1 more column with values outside 0..255",
                             "... and 3 more columns with values non-integer"]


def test_label_outside_0_to_9(tmp_path):
    frame = kaggle_frame(20)
    frame.loc[5, "label"] = 10
    assert "column label: 1 value outside the integers 0..9 (rows 6)" in check(tmp_path, train=frame)


def test_missing_label(tmp_path):
    frame = kaggle_frame(20).astype({"label": "float"})
    frame.loc[2, "label"] = None
    assert "column label: 1 value missing (rows 3)" in check(tmp_path, train=frame)


def test_text_and_decimal_pixels(tmp_path):
    frame = kaggle_frame(20).astype({"pixel3": object, "pixel4": float})
    frame.loc[1, "pixel3"] = "abc"
    frame.loc[[0, 9], "pixel4"] = [1.5, 2.25]
    msg = check(tmp_path, train=frame)
    assert "column pixel3: 1 value non-numeric (rows 2)" in msg
    assert "column pixel4: 2 values non-integer (rows 1, 10)" in msg


def test_short_row_is_a_reader_error_with_row_number_in_the_test_file(tmp_path):
    lines = kaggle_frame(4, label=False).to_csv(index=False).splitlines()
    lines[2] = ",".join(lines[2].split(",")[:780])
    msg = check(tmp_path, test_text="\n".join(lines) + "\n")
    assert msg == f"{tmp_path / 'test.csv'}: row 2 (line 3) has 780 fields, the header has 784"


def test_short_last_row_of_the_train_file_is_named_not_read_as_missing_values(tmp_path):
    lines = kaggle_frame(201).to_csv(index=False).splitlines()
    lines[201] = ",".join(lines[201].split(",")[:300])
    msg = check(tmp_path, train_text="\n".join(lines) + "\n")
    assert msg == f"{tmp_path / 'train.csv'}: row 201 (line 202) has 300 fields, the header has 785"


def test_empty_fields_in_full_length_rows_are_missing_values(tmp_path):
    frame = kaggle_frame(20).astype({"pixel5": float, "pixel783": float})
    frame.loc[3, "pixel5"] = None                 # "...,,..." inside the row
    frame.loc[[6, 9], "pixel783"] = None          # the row ends with "," but has all 785 fields
    msg = check(tmp_path, train=frame)
    assert "column pixel5: 1 value missing (rows 4)" in msg
    assert "column pixel783: 2 values missing (rows 7, 10)" in msg
    assert "fields, the header has" not in msg


def test_long_row_is_a_reader_error_with_row_number(tmp_path):
    lines = kaggle_frame(4).to_csv(index=False).splitlines()
    lines[3] += ",7"
    msg = check(tmp_path, train_text="\n".join(lines) + "\n")
    assert "train.csv: row 3 (line 4) has 786 fields, the header has 785" in msg


def test_wrong_and_missing_columns(tmp_path):
    msg = check(tmp_path, train=kaggle_frame(5).drop(columns=["pixel783"]))
    assert "expected 785 columns label..pixel783, found 784; missing columns: pixel783" in msg
    msg = check(tmp_path, test=kaggle_frame(5))  # a train-shaped file given as test
    assert "test.csv: failed validation" in msg and "unexpected columns: label" in msg


def test_columns_out_of_order(tmp_path):
    frame = kaggle_frame(5)
    cols = list(frame.columns)
    cols[1], cols[2] = cols[2], cols[1]
    assert "columns out of order from position 2 (pixel1 where pixel0 belongs)" in check(tmp_path, train=frame[cols])


def test_missing_header(tmp_path):
    text = kaggle_frame(5).to_csv(index=False, header=False)
    assert "header missing: the first line holds numbers" in check(tmp_path, train_text=text)


def test_empty_file_and_header_only(tmp_path):
    assert "train.csv: empty file (no header, no rows)" in check(tmp_path, train_text="")
    header_only = kaggle_frame(0).to_csv(index=False)
    assert "no data rows (at least one is required)" in check(tmp_path, train_text=header_only)


def test_stage_exits_65_with_message_and_a_complete_report(tmp_path):
    """The real entry point in a scratch repo: exit 65 (EX_DATAERR), message on stderr, the input
    untouched, and the report the message points to written whole (no temporary folder left)."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    frame = kaggle_frame(10)
    frame.loc[0, "pixel0"] = 999
    write(raw / "train.csv", frame)
    write(raw / "test.csv", kaggle_frame(3, label=False))
    before = (raw / "train.csv").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "tasks.validate"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 65
    assert "error: data/raw/train.csv: failed validation" in proc.stderr
    assert "column pixel0: 1 value outside 0..255 (rows 1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (raw / "train.csv").read_bytes() == before
    report = tmp_path / "reports"
    assert "report: reports/validation/docs/index.html" in proc.stderr
    assert sorted(p.name for p in report.iterdir()) == ["validation"]      # no .validation.* left
    assert '"success": false' in (report / "validation" / "train.json").read_text()
    assert '"success": true' in (report / "validation" / "test.json").read_text()
    assert (report / "validation" / "docs" / "index.html").stat().st_size > 0
