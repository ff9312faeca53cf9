"""The loop's demonstration, as documented, on a small sample: a real Prefect server and process
worker, the nightly deployment run four times in one worker clone (the first run and three nights)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, sh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("loop") / "demo"
    out = work.parent / "nights.json"
    proc = subprocess.run([sys.executable, "-m", "flows.loop_demo", "--dir", str(work), "--base-rows", "2000",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    nights = json.loads(out.read_text()) if out.exists() else None
    return proc, nights, work


def test_every_night_goes_as_described(demo):
    proc, nights, work = demo
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}\n{(work / 'worker.log').read_text()[-4000:]}"
    assert [n["production"] for n in nights] == ["v1.0.0", "v1.1.0", "v1.1.0", "v1.1.0"]
    assert [n["state"] for n in nights] == ["Completed"] * 4
    assert all(n["clean"] for n in nights)                 # each night leaves the clone as main has it


def test_the_first_night_promotes_and_a_good_batch_with_a_correction_is_taken_and_promoted(demo):
    _, nights, work = demo
    first, good = nights[0], nights[1]
    assert first["decision"]["verdict"] == "first model"
    assert good["commit"] == sh(work / "origin", "git", "rev-parse", "HEAD").stdout.strip()   # fast-forwarded
    taken = {b["file"]: (b["status"], b["rows"]) for b in good["intake"]["batches"]}
    [correction] = [f for f in taken if f.startswith("feedback-")]
    assert taken["batch-1-good.csv"] == ("taken", 200) and taken[correction] == ("taken", 1)
    assert good["stages"]["train@quick-42"][0] == "Completed" and good["decision"]["promote"]
    tags = sh(work / "worker", "git", "tag", "-l").stdout.split()
    assert {"digits@v1.0.0", "digits@v1.1.0", "digits#prod#1", "digits#prod#2"} <= set(tags)
    assert set(tags) <= set(sh(work / "origin", "git", "tag", "-l").stdout.split())   # pushed


def test_flipped_labels_are_a_regression_and_production_stays(demo):
    _, nights, _ = demo
    d = nights[2]["decision"]
    assert not d["promote"] and d["verdict"] == "regression" and d["champion"]["version"] == "v1.1.0"
    assert d["mcnemar"]["p_value"] < 1e-6 and d["challenger"]["errors"] > d["champion"]["errors"]


def test_a_defective_batch_is_set_aside_with_its_report_and_nothing_retrains(demo):
    _, nights, work = demo
    night = nights[3]
    [defect] = [b for b in night["intake"]["batches"] if b["file"] == "batch-3-defect.csv"]
    assert defect["status"] == "rejected" and "pixel400" in defect["reason"] and "outside 0..255" in defect["reason"]
    assert (work / "worker/data/intake/rejected/batch-3-defect.csv").exists()
    assert night["stages"]["train@quick-42"][0] in ("Cached", "Skipped")
    inbox = sorted(p.name for p in (work / "worker/data/inbox").glob("*.csv"))
    assert len(inbox) == 4 and "batch-3-defect.csv" in inbox      # every arrival still in the inbox


def test_dvc_artifacts_get_fetches_a_version_and_production_from_the_tags(demo, tmp_path):
    _, _, work = demo
    worker = work / "worker"
    for how, version in ((["--rev", "v1.0.0"], "v1.0.0"), (["--stage", "prod"], "v1.1.0")):
        out = tmp_path / f"{version}.keras"
        sh(worker, "dvc", "artifacts", "get", ".", "digits", *how, "-o", str(out))
        assert out.read_bytes() == (worker / f"serving/{version}/quick-42.keras").read_bytes()
