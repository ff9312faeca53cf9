"""A running server follows promotions: under a steady stream of requests, a newly promoted version
takes over without a restart and without a failed request."""
import json
import shutil
import threading
import time

import httpx
import numpy as np
import pytest

from conftest import ROOT
from digits import paths
from digits.io import sha256, write_json
from model_fixture import start_server

pytestmark = pytest.mark.integration


def promoted(repo, version: str, model) -> None:
    """serving/<version>/ with `model`, and production.json naming it (as digits.registry writes it)."""
    folder = repo / paths.SERVING_DIR / version
    folder.mkdir(parents=True)
    shutil.copy(model, folder / "quick-42.keras")
    write_json(repo / paths.PRODUCTION, {"version": version, "commit": "0" * 40, "tta": [],
                                         "files": {"quick-42": f"serving/{version}/quick-42.keras"},
                                         "sha256": {"quick-42": sha256(folder / "quick-42.keras")}})


def test_a_promotion_takes_over_a_running_server_without_a_failed_request(tmp_path, digit_model, mnist):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    promoted(repo, "v1.0.0", digit_model)
    proc, url = start_server(None, f"sqlite:///{tmp_path / 'feedback.db'}", cwd=repo, args=["--poll-seconds", "0.2"])
    pixels = {"pixels": np.asarray(mnist[2][0]).astype(int).tolist()}
    answers, stop = [], threading.Event()

    def stream():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/predict", json=pixels)
                answers.append((r.status_code, r.json().get("version"), r.json().get("digit")))

    try:
        assert httpx.get(f"{url}/health").json()["version"] == "v1.0.0"
        streams = [threading.Thread(target=stream) for _ in range(2)]
        for t in streams:
            t.start()
        time.sleep(1.5)
        before = len(answers)
        promoted(repo, "v1.1.0", digit_model)
        t0 = time.perf_counter()
        while httpx.get(f"{url}/health").json()["version"] != "v1.1.0":
            assert time.perf_counter() - t0 < 60, "the server did not switch within 60 s"
            time.sleep(0.05)
        after = len(answers)
        time.sleep(1.5)
        stop.set()
        for t in streams:
            t.join(30)
    finally:
        proc.terminate()
        proc.wait(20)
    assert before > 0 and len(answers) > after
    assert {status for status, _, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    versions = [v for _, v, _ in answers]
    assert set(versions) == {"v1.0.0", "v1.1.0"}
    assert versions[-5:] == ["v1.1.0"] * 5                       # answers from the new version afterwards
    assert json.loads((repo / paths.PRODUCTION).read_text())["version"] == "v1.1.0"
    assert len({d for _, _, d in answers}) == 1                 # the same model file: the same answer
