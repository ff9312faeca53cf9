"""The server without TensorFlow: an environment made from requirements-serve.lock and the project's
wheel (as `make setup-serve` makes it) serves the exported models with ONNX Runtime, with the Keras
server's answers. The API's bad-input and hostile-burst tests run against it too (tests/test_app.py)."""
import subprocess

import httpx
import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.integration            # a server process in its own environment


@pytest.mark.parametrize("module", ["tensorflow", "keras", "tf2onnx"])
def test_the_light_environment_has_no_tensorflow(light_python, module):
    proc = subprocess.run([str(light_python), "-c", f"import {module}"], capture_output=True, text=True)
    assert proc.returncode == 1 and f"No module named '{module}'" in proc.stderr


def test_the_light_environment_runs_the_installed_package_not_the_repositorys(light_python, tmp_path):
    out = subprocess.run([str(light_python), "-c", "import digits; print(digits.__file__)"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in out and not out.startswith(str(ROOT))


def test_it_serves_the_onnx_export_with_the_keras_servers_answers(light_server, server_url, digit):
    data, label, _ = digit
    health = httpx.get(f"{light_server[1]}/health").json()
    assert [m.split("/")[-2:] for m in health["models"]] == [["small", "model.onnx"]] and health["tta"] == []
    upload = {"files": {"file": ("d.png", data, "image/png")}}
    light = httpx.post(f"{light_server[1]}/predict", **upload, timeout=30).json()
    keras = httpx.post(f"{server_url}/predict", **upload, timeout=30).json()
    assert light["digit"] == keras["digit"] == label
    assert np.abs(np.array(light["probabilities"]) - np.array(keras["probabilities"])).max() < 1e-5
    page = httpx.get(f"{light_server[1]}/")
    assert page.status_code == 200 and "<canvas" in page.text


def test_it_takes_feedback(light_server, digit):
    data, label, _ = digit
    r = httpx.post(f"{light_server[1]}/feedback", files={"file": ("d.png", data, "image/png")},
                   data={"label": str(label)}, timeout=30)
    assert r.status_code == 201 and r.json()["label"] == label and r.json()["predicted"] == label
