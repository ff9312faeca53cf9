"""One train@<member> stage on another worker (the `gpu` pool), with data and model moving
through the DVC remote.

The caller (the pipeline flow on a `cpu` worker) pushes the training data (the split and the
intake's accepted rows) to the DVC remote and sends
its dvc.lock and params.yaml; this flow, in the GPU worker's own clone of the same commit, pulls
them, runs `dvc repro --single-item train@<member>`, pushes the model and returns the new lock
entry and the small git-tracked outputs. The caller then pulls the model. No shared disk is
needed. The caller starts one such flow run per member, all at once; each worker (started with
`--limit 1`, its own clone) takes one at a time, so the pool's workers train side by side.

The worker's clone ends as it began, on success or failure: every file git sees is put back
(its own params.yaml and dvc.lock, the member's metrics), so its next `git pull` applies. The
caller waits for each member at most its deadline; a run still unfinished then is cancelled and
the member fails (and is retried by the caller's task, with twice the deadline).
"""
import json
import subprocess
import threading
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_flow_run

from digits import paths
from flows import dvc_ops
from flows.dvc_ops import dvc

STAGE = "train"                              # the foreach stage; its members are train@<member>
RESULT_KEY = "digits-train-result"           # the result travels as an artifact on the Prefect server,
                                             # so the workers need share nothing but server and remote
DATA_STAGES = ("split", "intake")            # the outputs a member trains on


def git_head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


_CALLER = threading.Lock()                   # members finish concurrently: one lock merge at a time


def member_name(stage: str) -> str:
    return stage.split("@", 1)[1]


def tracked_files(repo: Path, stage: str) -> dict:
    """{relative path: text} of every file of a train@<member> stage's git-tracked outputs."""
    out = paths.member(member_name(stage))
    found = [f for p in (out.metrics, out.details, out.dvclive)
             for f in ([repo / p] if (repo / p).is_file() else (repo / p).rglob("*"))]
    return {str(f.relative_to(repo)): f.read_text() for f in found if f.is_file()}


def lock_entry(repo: Path, stage: str) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]


def merge_lock_entry(repo: Path, stage: str, entry: dict) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"][stage] = entry
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


@flow(name="digits-train-remote", flow_run_name="{stage}", log_prints=True)
def train_remote(rev: str, lock: str, params: str, stage: str, repo_dir: str = ".",
                 clone_wait_seconds: float = 3600) -> dict:
    """Train one member on this worker from the caller's lock and params; return the lock entry
    and files. Holds the clone's lock (as the pipeline does) and leaves the clone as it was."""
    repo = Path(repo_dir).resolve()
    log = get_run_logger()
    with dvc_ops.clone_lock(repo, dvc_ops.holder(current_flow_run.name), clone_wait_seconds, log):
        if git_head(repo) != rev:
            raise dvc_ops.StageFailed(f"worker checkout {repo} is at {git_head(repo)}, the caller at {rev}: "
                                      "update the worker's clone (git pull) first")
        # the caller's params and lock for this run only: the worker's own runs keep theirs
        with dvc_ops.worktree_kept(repo):
            (repo / "params.yaml").write_text(params)
            (repo / "dvc.lock").write_text(lock)
            dvc(repo, "pull", *DATA_STAGES)
            dvc_ops.repro_stage(repo, stage, force=False, log=log.info)
            dvc(repo, "push", stage)
            result = {"lock": lock_entry(repo, stage), "files": tracked_files(repo, stage)}
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


def cancel(flow_run_id):
    """Ask for a flow run's end: its worker stops a running one; one no worker took ends at once.
    Returns the run's state afterwards."""
    from prefect import get_client
    from prefect.states import Cancelling
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(message="past its member_timeout_seconds"))
        return client.read_flow_run(flow_run_id).state


def deadline(timeout_seconds: float | None, attempt: int) -> float | None:
    """The wait for a member's flow run on its `attempt` (1, 2, ...): `timeout_seconds` on the
    first, doubled on each retry, so a deadline too tight for a slow worker fails one attempt, not
    every one."""
    return None if timeout_seconds is None else timeout_seconds * 2 ** max(0, attempt - 1)


def run_member(deployment: str, stage: str, parameters: dict, timeout_seconds: float | None, attempt: int = 1):
    """Run the train deployment for one member and wait for its flow run (its wait for a free
    worker included) at most deadline(timeout_seconds, attempt). A run still unfinished then (its
    worker may have died: such a run never ends) is cancelled, and the member fails with
    StageFailed naming it, the run and the deadline; a run that fails or crashes fails the member
    too."""
    from prefect.deployments import run_deployment
    wait = deadline(timeout_seconds, attempt)
    run = run_deployment(deployment, parameters=parameters, timeout=wait)
    state = run.state
    if not state.is_final():
        state = cancel(run.id)
        if not state.is_completed():       # it may have finished in the meantime
            raise dvc_ops.StageFailed(
                f"{stage}: flow run {run.name} of {deployment} did not finish within {wait:g} s (attempt {attempt}; "
                f"member_timeout_seconds={timeout_seconds:g} s, doubled on each retry; it was {run.state.name}); "
                "cancelled it")
    if not state.is_completed():
        raise dvc_ops.StageFailed(f"{stage}: flow run {run.name} of {deployment} ended {state.name}: {state.message}")
    return run


def dispatch(repo: Path, deployment: str, stage: str, log, timeout_seconds: float | None = None,
             attempt: int = 1) -> None:
    """Caller side: push the training data, run the train deployment for one member (within its
    deadline for this attempt, see run_member), take its results back."""
    with _CALLER:
        dvc(repo, "push", *DATA_STAGES)
        lock = (repo / "dvc.lock").read_text()
    run = run_member(deployment, stage, {"rev": git_head(repo), "lock": lock, "stage": stage,
                                         "params": (repo / "params.yaml").read_text()}, timeout_seconds, attempt)
    result = read_result(run.id)
    with _CALLER:
        merge_lock_entry(repo, stage, result["lock"])
        for rel, text in result["files"].items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        dvc(repo, "pull", stage)
    log(f"{stage} ran on {deployment}; model pulled from the DVC remote")
