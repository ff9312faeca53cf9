"""Every stage imports the `tasks` package first, and the recognizer and server the `digits` package;
both quiet TensorFlow's C++ start-up log unless the user chose a level."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SHOW = "import os, {}; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"


@pytest.mark.parametrize("package", ["tasks", "digits"])
@pytest.mark.parametrize("given, expected", [(None, "2"), ("0", "0"), ("3", "3")])
def test_the_package_defaults_the_tensorflow_log_level_and_the_users_setting_wins(package, given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {"PYTHONPATH": str(ROOT)}
    if given is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = given
    out = subprocess.run([sys.executable, "-c", SHOW.format(package)], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("level, shown", [(None, False), ("0", True)])
def test_tensorflows_start_up_notices_are_held_back_unless_the_user_asks(level, shown):
    # oneDNN on: TensorFlow writes absl's pre-init warning and the oneDNN notice while it is imported,
    # before TF_CPP_MIN_LOG_LEVEL is read
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {
        "PYTHONPATH": str(ROOT), "TF_ENABLE_ONEDNN_OPTS": "1"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    out = subprocess.run([sys.executable, "-c", "import digits, tensorflow; print(tensorflow.__version__)"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip()
    assert ("oneDNN custom operations are on" in out.stderr) is shown, out.stderr
    assert ("absl::InitializeLog()" in out.stderr) is shown, out.stderr


def test_the_filter_keeps_every_other_line_written_to_the_file_descriptor(capfd):
    from digits.quiet import filtered_stderr
    with filtered_stderr(noise=("drop me",)):
        os.write(2, b"E0000 a real error\nI0000 drop me please\n")
        os.write(2, b"a last line")
    assert capfd.readouterr().err == "E0000 a real error\na last line"
