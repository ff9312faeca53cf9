"""The oneDNN switch: CPU flags and a preference in, TF_ENABLE_ONEDNN_OPTS out (before TensorFlow
is imported), and the line the device description shows."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from digits.params import ParamsError
from tasks import device

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
ZEN4 = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
SKYLAKE = AVX2 | {"avx512f"}                       # AVX-512 without VNNI/BF16: TensorFlow leaves oneDNN off


@pytest.mark.parametrize("flags, faster, expected", [
    (ZEN4, {"avx512": True}, (True, "measured faster on AVX-512")),
    (ZEN4, {"avx512": False}, (False, "measured faster on AVX-512")),
    (SKYLAKE, {"avx512": True}, (True, "measured faster on AVX-512")),
    (AVX2, {"avx2": False}, (False, "measured faster on AVX2")),
    (AVX2, {}, (False, "TensorFlow's default on avx2 (not measured)")),
    (ZEN4, {}, (True, "TensorFlow's default on avx512 (not measured)")),
    (SKYLAKE, {}, (False, "TensorFlow's default on avx512 (not measured)")),
    ({"sse4_2"}, {"avx2": True}, (False, "TensorFlow's default on other (not measured)")),
])
def test_auto_takes_the_measured_faster_setting_of_the_cpu_kind(flags, faster, expected):
    assert device.onednn_choice(flags, "auto", faster) == expected


def test_the_shipped_tables_follow_the_benchmark_rows_of_real_machines():
    """tasks/device.py's ONEDNN_FASTER and BF16_FASTER, not tables of the test's own: oneDNN on for
    AVX-512 (faster on every machine in bench/results/onednn.json), AVX2 left to TensorFlow (no
    AVX2-only machine there), float32 everywhere (mixed_bfloat16 was faster on AMX but less accurate)."""
    results = json.loads((ROOT / "bench/results/onednn.json").read_text())
    measured = {}                                    # kind -> {machine: faster?}
    for machine, result in results.items():
        for kind, faster in (result.get("faster") or {f"oneDNN, {k}": v for k, v in result["oneDNN faster"].items()
                                                     if "limited" not in k}).items():
            measured.setdefault(kind, {})[machine] = faster
    assert device.ONEDNN_FASTER == {"avx512": True} and set(measured["oneDNN, avx512"].values()) == {True}
    assert "oneDNN, avx2" not in measured
    # bf16: faster on the AMX machine, but the quick recipe lost validation accuracy there
    amx = [r for r in results.values() if (r.get("faster") or {}).get("mixed_bfloat16, amx")]
    recipe = amx[0]["quick recipe, mixed_bfloat16"]
    assert recipe["val_accuracy"] < recipe["float32_three_seed_spread"]["val_accuracy"][0]
    assert recipe["keeps_accuracy"] is False and device.BF16_FASTER == {}
    assert device.onednn_choice(ZEN4) == (True, "measured faster on AVX-512")
    assert device.onednn_choice(SKYLAKE) == (True, "measured faster on AVX-512")   # TensorFlow alone: off
    assert device.onednn_choice(AVX2) == (False, "TensorFlow's default on avx2 (not measured)")
    assert device.onednn_choice({"sse4_2"}) == (False, "TensorFlow's default on other (not measured)")
    assert device.cpu_precision(ZEN4 | {"amx_bf16", "amx_tile"}) == "float32"
    assert device.cpu_precision(ZEN4 | {"amx_bf16"}, faster={"amx": True}) == "mixed_bfloat16"
    assert device.cpu_precision(ZEN4) == "float32"                                 # avx512_bf16 alone: not measured
    assert device.cpu_precision(AVX2) == "float32"


def test_a_configured_precision_wins_and_a_wrong_one_names_the_variable():
    assert device.cpu_precision(AVX2, "mixed_bfloat16") == "mixed_bfloat16"
    assert device.cpu_precision(AVX2 | {"amx_bf16"}, "float32") == "float32"
    assert device.plan_for(0, AVX2 | {"amx_bf16"}, {}).precision == "float32"
    assert device.plan_for(0, AVX2, {"DIGITS_PRECISION": "mixed_bfloat16"}).precision == "mixed_bfloat16"
    assert device.plan_for(1, AVX2, {"DIGITS_PRECISION": "float32"}).precision == "mixed_float16"  # GPUs: their own
    assert device.plan_for(0, AVX2, {}).spread_threads is False
    assert device.plan_for(0, AVX2, {"DIGITS_PIN_WORKERS": "1"}).spread_threads is True
    with pytest.raises(ParamsError, match=r"\$DIGITS_PIN_WORKERS: 'yes' is not 0 or 1"):
        device.plan_for(0, AVX2, {"DIGITS_PIN_WORKERS": "yes"})
    with pytest.raises(ParamsError, match="DIGITS_PRECISION.*'half'"):
        device.cpu_precision(AVX2, "half")


def test_spread_plan_pins_the_busiest_workers_one_per_cpu_never_the_caller():
    ticks = {10: 900, 11: 500, 12: 480, 13: 60, 14: 0}
    assert device.spread_plan(ticks, main=10, cpus=[0, 1]) == {11: 0, 12: 1}
    assert device.spread_plan(ticks, main=11, cpus=[2, 5, 7]) == {10: 2, 12: 5, 13: 7}
    assert device.spread_plan({10: 5, 14: 0}, main=10, cpus=[0, 1]) == {}     # idle threads stay free


def test_thread_ticks_reads_this_process_threads():
    import os
    import threading
    ticks = device.thread_ticks()
    assert threading.get_native_id() in ticks and os.getpid() in ticks
    assert all(isinstance(v, int) and v >= 0 for v in ticks.values())


def test_a_configured_preference_wins_and_a_wrong_one_names_the_variable():
    assert device.onednn_choice(ZEN4, "off", {"avx512": True}) == (False, "$DIGITS_ONEDNN=off")
    assert device.onednn_choice(AVX2, "on", {"avx2": False}) == (True, "$DIGITS_ONEDNN=on")
    with pytest.raises(ParamsError, match=r"\$DIGITS_ONEDNN: 'yes' is not auto, on or off"):
        device.onednn_choice(AVX2, "yes")


def test_set_onednn_writes_the_switch_unless_the_user_set_it(monkeypatch):
    monkeypatch.setattr(device, "ONEDNN_FASTER", {"avx2": False})
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)   # as in a stage before its imports
    env = {}
    assert device.set_onednn(AVX2, env) == "oneDNN: off (measured faster on AVX2)"
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    env = {"DIGITS_ONEDNN": "on"}
    assert device.set_onednn(AVX2, env) == "oneDNN: on ($DIGITS_ONEDNN=on)" and env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    env = {"TF_ENABLE_ONEDNN_OPTS": "0", "DIGITS_ONEDNN": "on"}
    assert device.set_onednn(ZEN4, env) == "oneDNN: off (TF_ENABLE_ONEDNN_OPTS set)"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"


@pytest.mark.integration                  # two fresh processes importing TensorFlow
def test_the_switch_reaches_tensorflow_and_the_device_line():
    """In a fresh process, as the train stage does it: set_onednn, then TensorFlow."""
    code = ("import os; from tasks import device; os.environ['DIGITS_ONEDNN'] = '{pref}'; line = device.set_onednn(); "
            "from tensorflow.python.util import _pywrap_util_port as p; "
            "print(p.IsMklEnabled(), '|', device.plan_for(0).describe(0, device.onednn_line()))")
    for pref, on, precision in (("off", False, "float32"), ("on", True, "mixed_bfloat16")):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
               "DIGITS_PRECISION": precision}
        out = subprocess.run([sys.executable, "-c", code.format(pref=pref)], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        assert out == f"{on} | device: CPU; strategy: default; precision: {precision}; XLA: off; steps per call: 16; " \
                      f"oneDNN: {'on' if on else 'off'} ($DIGITS_ONEDNN={pref})"


def test_the_benchmark_decides_by_work_per_image_which_a_slow_spell_leaves_alone():
    """bf16's two rounds both fell in a slow spell (1,195 images/s, one core busy) while float32 ran
    fast once: the fastest round would call float32 faster, the work per image says bf16."""
    from bench.onednn import decide, summarize
    run = lambda ips, cpu: {"images_per_second": ips, "cpu_seconds_per_1000": cpu, "cores_busy": ips * cpu / 1000}
    rows = summarize({"off": [run(599, 1.64), run(1089, 1.72)],
                      "on": [run(1682, 1.081), run(1196, 1.05), run(1194, 1.09)],
                      "on, threads pinned": [run(1712, 1.071), run(1195, 1.07)],
                      "on, threads pinned, mixed_bfloat16": [run(1196, 0.899), run(1194, 0.90)]})
    assert rows["on"]["images_per_second"] == 1682 and rows["on"]["cores_busy"] == 1.82
    assert rows["on"]["cpu_seconds_per_1000_images"] == 1.081                        # the median round
    assert rows["off"]["cpu_seconds_per_1000_images"] == 1.68
    assert rows["on"]["all_rounds_cpu_seconds_per_1000_images"] == [1.081, 1.05, 1.09]
    assert decide(rows, "avx512", "amx") == {"oneDNN, avx512": True, "mixed_bfloat16, amx": True}
    del rows["on, threads pinned, mixed_bfloat16"]
    rows["on"]["cpu_seconds_per_1000_images"] = 1.7
    assert decide(rows, "avx2", "none") == {"oneDNN, avx2": False}
