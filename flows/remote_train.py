"""One train@<member> stage on another worker (the `gpu` pool), with data and model moving
through the DVC remote.

The caller (the pipeline flow on a `cpu` worker) pushes the split data to the DVC remote and sends
its dvc.lock and params.yaml; this flow, in the GPU worker's own clone of the same commit, pulls
the split, runs `dvc repro --single-item train@<member>`, pushes the model and returns the new lock
entry and the small git-tracked outputs. The caller then pulls the model. No shared disk is
needed. The caller starts one such flow run per member, all at once; each worker (started with
`--limit 1`, its own clone) takes one at a time, so the pool's workers train side by side.
"""
import json
import subprocess
import threading
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import dvc_ops
from flows.dvc_ops import dvc
from tasks import paths

STAGE = "train"                              # the foreach stage; its members are train@<member>
RESULT_KEY = "digits-train-result"           # the result travels as an artifact on the Prefect server,
                                             # so the workers need share nothing but server and remote


def git_head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


_CALLER = threading.Lock()                   # members finish concurrently: one lock merge at a time


def member_name(stage: str) -> str:
    return stage.split("@", 1)[1]


def tracked_files(repo: Path, stage: str) -> dict:
    """{relative path: text} of every file of a train@<member> stage's git-tracked outputs."""
    out = paths.member(member_name(stage))
    found = [f for p in (out.metrics, out.details, out.dvclive) for f in ([repo / p] if (repo / p).is_file() else (repo / p).rglob("*"))]
    return {str(f.relative_to(repo)): f.read_text() for f in found if f.is_file()}


def lock_entry(repo: Path, stage: str) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]


def merge_lock_entry(repo: Path, stage: str, entry: dict) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"][stage] = entry
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


@flow(name="digits-train-remote", flow_run_name="{stage}", log_prints=True)
def train_remote(rev: str, lock: str, params: str, stage: str, repo_dir: str = ".") -> dict:
    """Train one member on this worker from the caller's lock and params; return the lock entry
    and files."""
    repo = Path(repo_dir).resolve()
    log = get_run_logger()
    if git_head(repo) != rev:
        raise dvc_ops.StageFailed(f"worker checkout {repo} is at {git_head(repo)}, the caller at {rev}: "
                                  "update the worker's clone (git pull) first")
    own_params = (repo / "params.yaml").read_text()
    try:   # the caller's params for this run only: the worker's own scheduled runs keep theirs
        (repo / "params.yaml").write_text(params)
        (repo / "dvc.lock").write_text(lock)
        dvc(repo, "pull", "split")
        dvc_ops.repro_stage(repo, stage, force=False, log=log.info)
        dvc(repo, "push", stage)
        result = {"lock": lock_entry(repo, stage), "files": tracked_files(repo, stage)}
    finally:
        (repo / "params.yaml").write_text(own_params)
    create_markdown_artifact(key=RESULT_KEY, description="dvc.lock entry and metrics of the remote train stage",
                             markdown=f"```json\n{json.dumps(result, indent=1)}\n```")
    return result


def read_result(flow_run_id) -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[RESULT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    if not found:
        raise dvc_ops.StageFailed(f"remote train run {flow_run_id} left no {RESULT_KEY} artifact")
    text = found[0].data
    return json.loads(text[text.index("{"): text.rindex("}") + 1])


def dispatch(repo: Path, deployment: str, stage: str, log) -> None:
    """Caller side: push the split, run the train deployment for one member, take its results back."""
    from prefect.deployments import run_deployment
    with _CALLER:
        dvc(repo, "push", "split")
        lock = (repo / "dvc.lock").read_text()
    run = run_deployment(deployment, parameters={
        "rev": git_head(repo), "lock": lock, "params": (repo / "params.yaml").read_text(), "stage": stage},
        timeout=None)
    if not run.state.is_completed():
        raise dvc_ops.StageFailed(f"{deployment} ({stage}) ended {run.state.name}: {run.state.message}")
    result = read_result(run.id)
    with _CALLER:
        merge_lock_entry(repo, stage, result["lock"])
        for rel, text in result["files"].items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        dvc(repo, "pull", stage)
    log(f"{stage} ran on {deployment}; model pulled from the DVC remote")
