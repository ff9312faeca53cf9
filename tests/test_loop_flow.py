"""Nights in one worker clone: the flow fast-forwards to the deployed branch, trains, gates,
promotes through the registry and leaves the clone as the branch has it."""
import json
import shutil

import pytest

from conftest import ROOT, TINY, make_repo, set_params, sh, write_sample

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL
        yield PREFECT_API_URL.value()


def origin_and_worker(tmp_path, mnist):
    """An origin repository with the tiny params committed, and a worker's clone of it with the
    sample CSVs (git-ignored, as Kaggle's files are)."""
    origin = make_repo(tmp_path / "origin")
    set_params(origin, **TINY, **{"robustness.images": 40, "robustness.recognizer_images": 20})
    shutil.copy(ROOT / ".gitignore", origin / ".gitignore")
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-qm", "project")
    sh(tmp_path, "git", "clone", "-q", str(origin), "worker")
    worker = tmp_path / "worker"
    for repo in (origin, worker):
        sh(repo, "git", "config", "user.email", "ci@example.com")
        sh(repo, "git", "config", "user.name", "ci")
    write_sample(worker / "data/kaggle", mnist, n_train=500, n_test=60)
    return origin, worker


def head(repo) -> str:
    return sh(repo, "git", "rev-parse", "HEAD").stdout.strip()


def promotion_artifact(state) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return {a.key: a.data for a in arts}


def test_two_nights_in_one_clone_fast_forward_promote_and_leave_it_clean(tmp_path, mnist, prefect_api):
    from flows.pipeline import pipeline
    from tasks import registry
    origin, worker = origin_and_worker(tmp_path, mnist)

    first = pipeline(repo_dir=str(worker), update_branch="main", promote=True, retry_delay_seconds=0,
                     return_state=True)
    assert first.is_completed(), first.message
    assert set(first.result().values()) == {"Completed"}
    record = registry.production(worker)
    assert record["version"] == "v1.0.0"
    assert sh(worker, "git", "status", "--porcelain").stdout == ""           # results in the experiment
    assert "digits@v1.0.0" in sh(origin, "git", "tag", "-l").stdout.split()   # tags pushed to the remote
    message = sh(worker, "git", "log", "-1", "--format=%s", record["commit"]).stdout
    assert head(origin) in message                                            # the run names its commit
    arts = promotion_artifact(first)
    assert "**Promoted** as `digits@v1.0.0`" in arts["digits-promotion"]
    assert f"Ran at commit `{head(origin)}`" in arts["digits-summary"]

    # a merged change on the branch: the next night brings it in and retrains
    set_params(origin, **{"train.presets.quick.epochs": 2})
    sh(origin, "git", "commit", "-qam", "two epochs")
    second = pipeline(repo_dir=str(worker), update_branch="main", promote=True, retry_delay_seconds=0,
                      return_state=True)
    assert second.is_completed(), second.message
    statuses = second.result()
    assert statuses["train@quick-42"] == "Completed"
    assert head(worker) == head(origin)
    assert sh(worker, "git", "status", "--porcelain").stdout == ""
    decision = json.loads(sorted((worker / "serving/decisions").iterdir())[-1].read_text())
    assert decision["champion"]["version"] == "v1.0.0" and decision["gate"]["rows"] == 50
    assert decision["verdict"] in ("regression", "improvement", "no significant difference (noise)")
    after = registry.production(worker)["version"]
    assert after == ("v1.1.0" if decision["promote"] else "v1.0.0")
    assert ("**Promoted**" if decision["promote"] else "**Not promoted**") in promotion_artifact(second)["digits-promotion"]

    # a clone with local changes is refused at once, naming the file, and left as it is
    (worker / "params.yaml").write_text((worker / "params.yaml").read_text() + "\n# edited on the worker\n")
    refused = pipeline(repo_dir=str(worker), update_branch="main", promote=True, return_state=True)
    assert refused.is_failed() and "M params.yaml" in str(refused.message) + repr(refused.result(raise_on_failure=False))
    assert (worker / "params.yaml").read_text().endswith("# edited on the worker\n")
