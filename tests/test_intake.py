"""The intake stage: good, bad and duplicate batches, the same outputs every run, the inbox
untouched, and intake rows in the training rows only."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, kaggle_frame
from digits import paths
from digits.cli import DataError
from digits.io import LABEL, PIXELS
from tasks import convert, intake, split, train

INBOX = Path("data/inbox")                 # params.yaml intake.inbox


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A scratch repository root: params.yaml and an inbox holding only its README."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    (tmp_path / INBOX).mkdir(parents=True)
    shutil.copy(ROOT / INBOX / "README.md", tmp_path / INBOX)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def good(n=12, seed=1) -> pd.DataFrame:
    return kaggle_frame(n, seed=seed)


def bad() -> pd.DataFrame:
    frame = kaggle_frame(8, seed=2)
    frame.loc[2, "pixel10"] = 256
    return frame


def drop(name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(INBOX / name, index=False)


def manifest() -> list[dict]:
    return json.loads(paths.INTAKE_MANIFEST.read_text())["batches"]


def outputs() -> dict:
    """Every file the stage wrote, with its bytes."""
    files = [f for d in (paths.INTAKE_DIR, paths.INTAKE_REPORTS) for f in d.rglob("*") if f.is_file()]
    return {str(f): f.read_bytes() for f in [*files, paths.INTAKE_METRICS]}


def inbox_state() -> dict:
    return {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in INBOX.iterdir()}


def test_a_bad_batch_is_set_aside_with_its_report_and_the_good_one_joins(workspace, capsys):
    drop("a-good.csv", good())
    drop("b-bad.csv", bad())
    intake.main()
    out = capsys.readouterr().out
    assert "data/inbox/a-good.csv: taken (12 rows)" in out
    assert "data/inbox/b-bad.csv: rejected: column pixel10: 1 value outside 0..255 (rows 3)" in out

    rows = pd.read_parquet(paths.INTAKE_TRAIN)
    pd.testing.assert_frame_equal(rows, good().astype(np.uint8))
    assert manifest() == [
        {"file": "a-good.csv", "sha256": intake.sha256(INBOX / "a-good.csv"), "rows": 12, "status": "taken",
         "reason": None, "report": "reports/intake/a-good.json"},
        {"file": "b-bad.csv", "sha256": intake.sha256(INBOX / "b-bad.csv"), "rows": 8, "status": "rejected",
         "reason": "column pixel10: 1 value outside 0..255 (rows 3)", "report": "reports/intake/b-bad.json"}]
    rejected = paths.INTAKE_REJECTED
    assert sorted(p.name for p in rejected.iterdir()) == ["b-bad.csv", "b-bad.json"]
    assert (rejected / "b-bad.csv").read_bytes() == (INBOX / "b-bad.csv").read_bytes()
    report = (paths.INTAKE_REPORTS / "b-bad.json").read_text()
    assert (rejected / "b-bad.json").read_text() == report
    assert json.loads(report)["column-profile"]["success"] is False
    assert json.loads(report)["table"]["success"] is True
    assert json.loads((paths.INTAKE_REPORTS / "a-good.json").read_text())["column-profile"]["success"] is True
    assert json.loads(paths.INTAKE_METRICS.read_text()) == {"batches": 2, "taken": 1, "rejected": 1,
                                                            "duplicates": 0, "rows": 12}
    assert "| b-bad.csv | rejected | 8 | column pixel10" in (paths.INTAKE_REPORTS / "summary.md").read_text()


def test_the_intake_file_has_the_split_training_files_columns_dtypes_and_metadata(workspace, tmp_path):
    drop("a.csv", good())
    intake.main()
    good().to_csv(tmp_path / "train.csv", index=False)   # the way the split's own file is made
    table = convert.csv_to_parquet(tmp_path / "train.csv", tmp_path / "all.parquet", [LABEL, *PIXELS])
    split.write_parquet(table.take([0, 1]), tmp_path / "split.parquet")
    assert pq.read_schema(paths.INTAKE_TRAIN).equals(pq.read_schema(tmp_path / "split.parquet"), check_metadata=True)


def test_reader_errors_reject_the_batch_with_the_validators_message(workspace, capsys):
    lines = good(3).to_csv(index=False).splitlines()
    lines[2] = ",".join(lines[2].split(",")[:300])
    (INBOX / "short.csv").write_text("\n".join(lines) + "\n")
    (INBOX / "empty.csv").write_text("")
    drop("wrong.csv", good().drop(columns=["pixel783"]))
    intake.main()
    out = capsys.readouterr().out
    assert "data/inbox/short.csv: rejected: row 2 (line 3) has 300 fields, the header has 785" in out
    by_file = {b["file"]: b for b in manifest()}
    assert by_file["empty.csv"]["reason"] == "empty file (no header, no rows)"
    assert by_file["wrong.csv"]["reason"] == "expected 785 columns label..pixel783, found 784; missing columns: pixel783"
    assert {b["status"] for b in by_file.values()} == {"rejected"} and by_file["short.csv"]["rows"] is None
    assert json.loads((paths.INTAKE_REJECTED / "short.json").read_text())["reader"]["success"] is False
    assert len(pd.read_parquet(paths.INTAKE_TRAIN)) == 0


def test_running_again_takes_nothing_twice_and_a_copy_is_a_duplicate(workspace, capsys):
    drop("a-good.csv", good())
    drop("b-bad.csv", bad())
    drop("c-more.csv", good(5, seed=9))
    intake.main()
    first = outputs()
    intake.main()
    assert outputs() == first                                    # the same files, byte for byte

    shutil.copy(INBOX / "a-good.csv", INBOX / "d-again.csv")     # the same content under another name
    shutil.copy(INBOX / "b-bad.csv", INBOX / "e-bad-again.csv")
    capsys.readouterr()
    intake.main()
    out = capsys.readouterr().out
    assert "data/inbox/d-again.csv: duplicate of a-good.csv" in out
    assert "data/inbox/e-bad-again.csv: duplicate of b-bad.csv" in out
    assert [(b["file"], b["status"], b["reason"]) for b in manifest()[3:]] == [
        ("d-again.csv", "duplicate", "duplicate of a-good.csv"), ("e-bad-again.csv", "duplicate", "duplicate of b-bad.csv")]
    pd.testing.assert_frame_equal(pd.read_parquet(paths.INTAKE_TRAIN),
                                  pd.concat([good(), good(5, seed=9)], ignore_index=True).astype(np.uint8))
    assert paths.INTAKE_TRAIN.read_bytes() == first[str(paths.INTAKE_TRAIN)]
    assert not (paths.INTAKE_REPORTS / "d-again.json").exists()
    assert json.loads(paths.INTAKE_METRICS.read_text()) == {"batches": 5, "taken": 2, "rejected": 1,
                                                            "duplicates": 2, "rows": 17}


def test_the_inbox_files_are_never_modified_moved_or_deleted(workspace):
    drop("a-good.csv", good())
    drop("b-bad.csv", bad())
    shutil.copy(INBOX / "a-good.csv", INBOX / "c-copy.csv")
    past = 1_600_000_000_000_000_000
    for f in INBOX.iterdir():
        os.utime(f, ns=(past, past))
    before = inbox_state()
    intake.main()
    intake.main()
    assert inbox_state() == before


def test_an_empty_inbox_gives_an_empty_training_file_with_the_columns(workspace, capsys):
    intake.main()
    rows = pd.read_parquet(paths.INTAKE_TRAIN)
    assert rows.shape == (0, 785) and list(rows.columns) == [LABEL, *PIXELS]
    assert set(rows.dtypes) == {np.dtype("uint8")}
    assert manifest() == [] and not paths.INTAKE_REJECTED.exists()
    assert json.loads(paths.INTAKE_METRICS.read_text()) == {"batches": 0, "taken": 0, "rejected": 0,
                                                            "duplicates": 0, "rows": 0}
    assert sorted(p.name for p in paths.INTAKE_REPORTS.iterdir()) == ["summary.md"]   # git keeps the folder
    assert "batches 0, taken 0 (0 rows)" in capsys.readouterr().out


def test_a_missing_inbox_is_an_error_naming_it_and_writes_nothing(workspace):
    shutil.rmtree(INBOX)
    with pytest.raises(DataError, match="^data/inbox: the intake inbox .* does not exist$"):
        intake.main()
    proc = subprocess.run([sys.executable, "-m", "tasks.intake"], cwd=workspace, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 65 and "Traceback" not in proc.stderr
    assert "error: data/inbox: the intake inbox (params.yaml intake.inbox) does not exist" in proc.stderr
    assert sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*")) == ["data", "params.yaml"]


def test_intake_rows_train_the_member_and_never_reach_the_validation_split(workspace, monkeypatch):
    """The split stage reads no intake; train@<member> trains on split train + intake, validates on
    the split's validation rows only, and its checkpoint fingerprint changes with the intake."""
    (workspace / "data/raw").mkdir(parents=True)
    kaggle_frame(100, seed=3).to_csv(workspace / "data/raw/train.csv", index=False)
    convert.csv_to_parquet(workspace / "data/raw/train.csv", paths.TRAIN_PARQUET, [LABEL, *PIXELS])
    split.main()
    val_before = paths.SPLIT_VAL.read_bytes()
    intake.main()
    seen, empty_run = {}, {}

    def fake_train(cfg, seed, train_frame, val_frame, fp, ckpt_dir, live_dir):
        seen.update(train=train_frame, val=val_frame, fp=fp)

        class Model:
            def save(self, path):
                path.write_bytes(b"model")
        metrics = {"val_accuracy": 0.5, "best_epoch": 1, "epochs": 1, "train_seconds": 1.0,
                   "train_cpu_seconds": 1.5, "images_per_second": 1.0, "device": "cpu"}
        return Model(), metrics, {"epoch": 0}

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(train.device, "set_onednn", lambda: None)
    train.main(["quick-42"])
    empty_run.update(seen)
    assert json.loads(paths.member("quick-42").details.read_text())["intake_images"] == 0

    drop("a.csv", good(7, seed=11))
    intake.main()
    split.main()                                          # the split is the same with intake rows present
    assert paths.SPLIT_VAL.read_bytes() == val_before
    train.main(["quick-42"])
    split_train, val = pd.read_parquet(paths.SPLIT_TRAIN), pd.read_parquet(paths.SPLIT_VAL)
    pd.testing.assert_frame_equal(seen["train"], pd.concat([split_train, good(7, seed=11).astype(np.uint8)],
                                                           ignore_index=True))
    pd.testing.assert_frame_equal(seen["val"], val)
    intake_rows = {r.tobytes() for r in good(7, seed=11).astype(np.uint8).to_numpy()}
    assert not intake_rows & {r.tobytes() for r in seen["val"].to_numpy()}
    assert seen["fp"] != empty_run["fp"]
    assert json.loads(paths.member("quick-42").details.read_text())["intake_images"] == 7
