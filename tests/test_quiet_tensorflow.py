"""Every stage imports the `tasks` package first, which quiets TensorFlow's C++ start-up log
unless the user chose a level."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SHOW = "import os, tasks; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"


@pytest.mark.parametrize("given, expected", [(None, "2"), ("0", "0"), ("3", "3")])
def test_the_package_defaults_the_tensorflow_log_level_and_the_users_setting_wins(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {"PYTHONPATH": str(ROOT)}
    if given is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = given
    out = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == expected
