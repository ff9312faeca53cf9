"""Each rule of the validator: the intended message, a non-zero exit, nothing written downstream."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, kaggle_frame
from digits.cli import DataError
from tasks import validate


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
    failures = [line[4:] for line in check(tmp_path, train=frame).splitlines() if line.startswith("  - ")]
    assert failures == [f"column pixel{i}: 1 value outside 0..255 (rows 1)" for i in range(12)] + [
        "... and 8 more columns with values outside 0..255"]
    # several defects: labels first, then columns in order; the rest counted per defect
    frame = kaggle_frame(20).astype({f"pixel{i}": float for i in range(100, 103)})
    frame.loc[2, "label"] = 11
    frame.loc[0, [f"pixel{i}" for i in range(12)]] = -5
    frame.loc[1, [f"pixel{i}" for i in range(100, 103)]] = 0.5
    failures = [line[4:] for line in check(tmp_path, train=frame).splitlines() if line.startswith("  - ")]
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


# Streaming: the file is read in batches; counts and row numbers must be those of the whole file.

def test_streamed_profile_equals_the_whole_file_profile(tmp_path):
    frame = kaggle_frame(23).astype({"label": object, "pixel3": object, "pixel4": float, "pixel5": float})
    frame.loc[1, "pixel10"] = 256                         # first batch
    frame.loc[[5, 6], ["pixel3", "pixel4"]] = [["abc", 1.5], ["7", 2.0]]   # second batch of 5
    frame.loc[6, "pixel5"] = None
    frame.loc[[7, 9, 12, 15, 18, 21], "pixel20"] = -1     # more rows than quoted, over four batches
    frame.loc[22, ["label", "pixel10"]] = [12, 300]       # the last row, alone in the last batch
    frame.loc[5, "label"] = "x"
    path = write(tmp_path / "train.csv", frame)
    whole = validate.scan(path, validate.TRAIN, batch_rows=1000)
    prof = whole.profile.set_index("column")
    assert (whole.rows, whole.columns) == (23, list(frame.columns))
    assert prof.loc["pixel10", ["out_of_range", "out_of_range_rows"]].tolist() == [2, [2, 23]]
    assert prof.loc["pixel20", ["out_of_range", "out_of_range_rows"]].tolist() == [6, [8, 10, 13, 16, 19]]
    assert prof.loc["pixel3", ["not_numeric", "not_numeric_rows"]].tolist() == [1, [6]]
    assert prof.loc["pixel4", ["not_integer", "not_integer_rows"]].tolist() == [1, [6]]
    assert prof.loc["pixel5", ["missing", "missing_rows"]].tolist() == [1, [7]]
    assert prof.loc["label", ["not_numeric", "out_of_range", "out_of_range_rows"]].tolist() == [1, 1, [23]]
    assert prof.drop(["pixel3", "pixel4", "pixel5", "pixel10", "pixel20", "label"])[list(validate.DEFECTS)].eq(0).all().all()
    for batch_rows in (1, 5, 11, 22):
        streamed = validate.scan(path, validate.TRAIN, batch_rows=batch_rows)
        pd.testing.assert_frame_equal(streamed.profile, whole.profile)
        assert streamed.rows == 23 and streamed.columns == whole.columns


def test_messages_are_the_same_whatever_the_batch_size(tmp_path, monkeypatch):
    frame = kaggle_frame(20).astype({"label": float, "pixel4": float})
    frame.loc[[4, 17], "label"] = [np.nan, 10]
    frame.loc[[1, 13, 19], "pixel10"] = [256, -1, 999]
    frame.loc[0, [f"pixel{i}" for i in range(100, 115)]] = 300
    frame.loc[[6, 18], "pixel4"] = [0.5, 2.5]
    whole = check(tmp_path, train=frame)
    monkeypatch.setattr(validate, "BATCH_ROWS", 3)
    assert check(tmp_path, train=frame) == whole
    failures = [line[4:] for line in whole.splitlines() if line.startswith("  - ")]
    assert failures[:4] == ["column label: 1 value missing (rows 5)",
                            "column label: 1 value outside the integers 0..9 (rows 18)",
                            "column pixel4: 2 values non-integer (rows 7, 19)",
                            "column pixel10: 3 values outside 0..255 (rows 2, 14, 20)"]
    assert failures[12:] == ["... and 7 more columns with values outside 0..255"]


def field_error(path, batch_rows):
    with pytest.raises(DataError) as err:
        validate.scan(path, validate.TRAIN, batch_rows=batch_rows)
    return str(err.value)


def test_short_and_long_rows_in_a_later_batch_keep_their_global_row_numbers(tmp_path):
    lines = kaggle_frame(12).to_csv(index=False).splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ","        # row 2 ends with an empty field: not short
    short, long_ = list(lines), list(lines)
    short[8] = ",".join(short[8].split(",")[:300])      # row 8, in the third batch of 3
    long_[11] += ",7"                                  # row 11, in the last batch
    (tmp_path / "short.csv").write_text("\n".join(short) + "\n")
    (tmp_path / "long.csv").write_text("\n".join(long_) + "\n")
    for batch_rows in (3, 1000):
        assert field_error(tmp_path / "short.csv", batch_rows) == \
            f"{tmp_path / 'short.csv'}: row 8 (line 9) has 300 fields, the header has 785"
        assert field_error(tmp_path / "long.csv", batch_rows) == \
            f"{tmp_path / 'long.csv'}: row 11 (line 12) has 786 fields, the header has 785"
    # both: the long row wins wherever it is, as when the file was read whole
    short[11] += ",7"
    (tmp_path / "both.csv").write_text("\n".join(short) + "\n")
    assert field_error(tmp_path / "both.csv", 3) == field_error(tmp_path / "both.csv", 1000) == \
        f"{tmp_path / 'both.csv'}: row 11 (line 12) has 786 fields, the header has 785"
