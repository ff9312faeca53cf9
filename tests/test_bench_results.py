"""The benchmarks' bookkeeping: where a member trains per oneDNN setting, how result rows merge."""
import json
import sys

import pytest

from bench import training
from bench.ensemble import WORK
from digits.params import ParamsError
from tasks import device


def row(preset="quick", seed=42, machine="m1", onednn="on", val=0.995, test=0.996, seconds=300.0, **more):
    return {"preset": preset, "seed": seed, "machine": machine, "onednn": onednn,
            "val_accuracy": val, "test_accuracy": test, "train_seconds": seconds} | more


def test_work_folder_is_the_ensemble_benchmarks_unless_onednn_is_set():
    folder = lambda preset, seed, env: training.work_folder(preset, seed, device.onednn_request(env))
    assert folder("quick", 42, {}) == WORK / "quick-42"
    assert folder("quick", 42, {"DIGITS_ONEDNN": "auto"}) == WORK / "quick-42"
    assert folder("quick", 1, {"DIGITS_ONEDNN": "off"}) == WORK / "quick-1-onednn-off"
    assert folder("long", 2, {"DIGITS_ONEDNN": "on"}) == WORK / "long-2-onednn-on"
    # TensorFlow's own variable wins, as in tasks.device.set_onednn
    assert folder("quick", 42, {"TF_ENABLE_ONEDNN_OPTS": "0", "DIGITS_ONEDNN": "on"}) == WORK / "quick-42-onednn-off"
    with pytest.raises(ParamsError, match="DIGITS_ONEDNN"):
        device.onednn_request({"DIGITS_ONEDNN": "yes"})


@pytest.mark.parametrize("flags, choice", [
    ({"avx2", "fma"}, "0"),                  # AVX2: not measured with the grid: TensorFlow's default, off
    ({"avx2", "avx512f"}, "1"),              # AVX-512: on, measured faster
    ({"sse4_2"}, "0"),                       # not measured: TensorFlow's default, off without VNNI/AMX
])
def test_the_default_setting_still_shares_the_folder_after_set_onednn_wrote_its_choice(monkeypatch, flags, choice):
    from tasks import machine
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)   # as in the benchmark before its imports
    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    env = {}
    requested = training.settle_onednn(env)
    assert requested is None and env["TF_ENABLE_ONEDNN_OPTS"] == choice   # auto: set_onednn's choice for the CPU
    assert training.work_folder("quick", 42, requested) == WORK / "quick-42"
    assert training.work_folder("quick", 42, requested, "all") == WORK / "quick-42-all"
    env = {"DIGITS_ONEDNN": "off"}
    assert training.work_folder("quick", 42, training.settle_onednn(env)) == WORK / "quick-42-onednn-off"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_merge_replaces_a_row_of_the_same_preset_seed_machine_and_onednn(tmp_path):
    path = tmp_path / "training.json"
    training.merge([row(seed=42, val=0.990), row(seed=1), row(machine="m2")], path)
    merged = training.merge([row(seed=42, val=0.997), row(onednn="off")], path)
    assert len(merged) == 4
    assert json.loads(path.read_text())["rows"] == merged
    by = {(r["machine"], r["onednn"], r["seed"]): r["val_accuracy"] for r in merged}
    assert by == {("m1", "on", 42): 0.997, ("m1", "on", 1): 0.995, ("m2", "on", 42): 0.995, ("m1", "off", 42): 0.995}
    # a row trained on all the data sits beside the split's; a row written before `data` existed is the split's
    merged = training.merge([row(seed=42, val=None, data="all"), row(seed=1, val=0.9, data="split")], path)
    by = {(r["seed"], r.get("data", "split")): r["val_accuracy"] for r in merged if r["machine"] == "m1"}
    assert by == {(42, "split"): 0.997, (42, "all"): None, (1, "split"): 0.9}


def test_summary_means_over_seeds_per_machine_setting_and_preset():
    rows = [row(seed=42, val=0.995, test=0.996, seconds=300), row(seed=1, val=0.996, test=0.9966, seconds=320),
            row(seed=2, val=0.994, test=0.9958, seconds=310), row(machine="m2"), row(preset="long")]
    (only,) = training.summary(rows)
    assert (only["machine"], only["preset"], only["seeds"]) == ("m1", "quick", [42, 1, 2])
    assert only["val_accuracy"] == 0.995 and only["test_accuracy"] == 0.99613 and only["train_seconds"] == 310.0
    assert only["data"] == "split" and only["test_accuracy_last"] is None     # not every row has it


def test_summary_keeps_all_data_rows_apart_and_has_no_validation_for_them():
    rows = [row(seed=s, val=None, test=t, data="all", test_accuracy_last=t) for s, t in ((42, 0.996), (1, 0.997))]
    rows += [row(seed=s, test=0.995, test_accuracy_last=t) for s, t in ((42, 0.995), (1, 0.996))]
    by = {s["data"]: s for s in training.summary(rows)}
    assert by["all"]["val_accuracy"] is None and by["all"]["test_accuracy_last"] == 0.9965
    assert by["split"]["val_accuracy"] == 0.995 and by["split"]["test_accuracy_last"] == 0.9955


def test_ensemble_rows_keep_their_machine_and_replace_only_their_own(tmp_path):
    from bench import ensemble
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({"machine": "old box", "rows": [{"members": 5, "preset": "quick", "tta": False, "v": 1}]}))
    merged = ensemble.merge([{"members": 5, "preset": "quick", "tta": False, "machine": "new box", "v": 2}], path)
    assert [(r["machine"], r["v"]) for r in merged] == [("new box", 2), ("old box", 1)]
    merged = ensemble.merge([{"members": 5, "preset": "quick", "tta": False, "machine": "new box", "v": 3}], path)
    assert [(r["machine"], r["v"]) for r in merged] == [("new box", 3), ("old box", 1)]
    assert json.loads(path.read_text()) == {"rows": merged}


def test_side_by_side_rows_replace_those_of_the_same_machine_preset_seeds_and_mode(tmp_path):
    from bench import merge_rows, side_by_side
    path = tmp_path / "side_by_side.json"
    r = lambda mode, wall, seeds=(1, 2), machine="m1": {"machine": machine, "preset": "lite", "seeds": list(seeds),
                                                        "mode": mode, "wall_seconds": wall}
    merge_rows(path, [r("one after the other", 660), r("side by side", 346), r("side by side", 400, machine="m2")],
               side_by_side.key)
    merged = merge_rows(path, [r("side by side", 350), r("side by side", 500, seeds=(1, 2, 3))], side_by_side.key)
    walls = {(x["machine"], tuple(x["seeds"]), x["mode"]): x["wall_seconds"] for x in merged}
    assert walls == {("m1", (1, 2), "one after the other"): 660, ("m1", (1, 2), "side by side"): 350,
                     ("m2", (1, 2), "side by side"): 400, ("m1", (1, 2, 3), "side by side"): 500}
    assert json.loads(path.read_text())["rows"] == merged
