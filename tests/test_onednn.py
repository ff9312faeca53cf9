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


def test_the_shipped_table_turns_onednn_on_where_the_benchmark_measured_it_faster():
    """tasks/device.py's ONEDNN_FASTER, not a table of the test's own: on for AVX-512 (faster on
    every machine in bench/results/onednn.json) and for AVX2 (faster on the Xeon limited to AVX2)."""
    measured = {}                                    # kind -> {machine: oneDNN faster?}
    for machine, result in json.loads((ROOT / "bench/results/onednn.json").read_text()).items():
        for kind, faster in result["oneDNN faster"].items():
            measured.setdefault(kind.split()[0], {})[machine] = faster
    assert device.ONEDNN_FASTER == {"avx512": True, "avx2": True}
    assert set(measured["avx512"].values()) == {True}
    # the AVX2 entry follows the Xeon's measurement (the Zen 4 EPYC's AVX2-limited run was slower)
    assert [faster for machine, faster in measured["avx2"].items() if "Xeon" in machine] == [True]
    assert device.onednn_choice(ZEN4) == (True, "measured faster on AVX-512")
    assert device.onednn_choice(SKYLAKE) == (True, "measured faster on AVX-512")   # TensorFlow alone: off
    assert device.onednn_choice(AVX2) == (True, "measured faster on AVX2")         # TensorFlow alone: off
    assert device.onednn_choice({"sse4_2"}) == (False, "TensorFlow's default on other (not measured)")


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
    for pref, on in (("off", False), ("on", True)):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run([sys.executable, "-c", code.format(pref=pref)], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        assert out == f"{on} | device: CPU; strategy: default; precision: float32; XLA: off; steps per call: 16; " \
                      f"oneDNN: {'on' if on else 'off'} ($DIGITS_ONEDNN={pref})"
