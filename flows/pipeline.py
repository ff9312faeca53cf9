"""Prefect flow: the DVC pipeline, one Prefect task per stage, in DVC's order.

DVC decides what is stale (`dvc status`) and runs each stage (`dvc repro --single-item`); Prefect
adds retries, run history, artifacts, schedules and workers. Unchanged stages end in a Completed
state named "Skipped", one whose outputs DVC restored from its run cache in one named "Cached".
A stage that rejects its data (exit status 65) fails at once, unretried.
A run that changed anything is saved as a DVC experiment named after the flow run. A run holds
its clone's lock throughout: a second run in the same clone waits for it (clone_wait_seconds).

With `update_branch` (the nightly deployment) the run first fast-forwards its clone to that branch
of the clone's git remote, and at the end puts every file git sees back as at that commit: the
night's results live in its experiment (and, when promoted, in the registry's tags), so they never
block the next night's fast-forward. With `promote` the gate compares the new model with the
production one and the registry promotes it only if it passes (flows/promotion.py).

    python -m flows.pipeline                                  # all stages, local server or ephemeral
    python -m flows.pipeline --set train.presets.quick.epochs=3 --stages ingest validate
    python -m flows.pipeline --update-branch main --promote   # what the nightly deployment runs
"""
import argparse
import contextlib
import itertools
import json
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run as current_flow_run
from prefect.runtime import task_run
from prefect.states import Completed

from digits import paths, registry
from flows import dvc_ops, git_ops, promotion, remote_train


def _retry_unless(*permanent):
    """A retry condition: retry a failed task unless it failed with one of the `permanent` errors."""
    def retry(task, task_run, state) -> bool:
        try:
            state.result()
        except permanent:
            return False
        except Exception:
            return True
        return True
    return retry


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=10, retry_jitter_factor=0.5,
      retry_condition_fn=_retry_unless(dvc_ops.BadData))
def run_stage(repo_dir: str, stage: str, force: bool = False, train_deployment: str | None = None,
              outside_lock: int = 0, member_timeout_seconds: float | None = None):
    """Run one DVC stage if DVC finds it stale (or force); report it as Skipped otherwise.
    With `train_deployment`, a train@<member> stage runs there (a GPU worker) instead of here,
    within `member_timeout_seconds` (doubled on each retry); `outside_lock` (how many at once) runs it here beside other
    members, on its share of the cores (see dvc_ops.repro_stage)."""
    log = get_run_logger()
    if not force and not dvc_ops.is_stale(Path(repo_dir), stage):
        log.info("stage %s is up to date: skipped", stage)
        return Completed(name="Skipped", message=f"{stage}: up to date")
    t0 = time.perf_counter()
    if is_member(stage) and train_deployment:
        remote_train.dispatch(Path(repo_dir), train_deployment, stage, log.info, member_timeout_seconds,
                              attempt=task_run.get_run_count())
    else:
        ran = dvc_ops.repro_stage(Path(repo_dir), stage, force, log.info,
                                  outside_lock=outside_lock if is_member(stage) else 0)
        if not ran:
            return Completed(name="Cached", message=f"{stage}: restored from DVC's run cache, not run")
    return {"stage": stage, "seconds": round(time.perf_counter() - t0, 1)}


def is_member(stage: str) -> bool:
    return stage.startswith(remote_train.STAGE + "@")


def at_once(limit: int, members: int, deployment: str | None) -> int:
    """How many members train at a time: all of them on the work pool; here at most `limit` and
    never more than there are members (a lone member keeps every core, under `dvc repro`)."""
    return members if deployment else max(1, min(limit, members))


def train_members(runner, repo: str, members: list, force: bool, deployment: str | None, limit: int,
                  member_timeout_seconds: float | None = None) -> dict:
    """Run the train@<member> stages concurrently: all at once on the work pool (each its own
    flow run of the train deployment, each within member_timeout_seconds), at most `limit` at a
    time here. Returns {stage: state}; a failed member does not stop the others, whose models are
    kept."""
    limit = at_once(limit, len(members), deployment)
    waiting, running, states = iter(members), {}, {}
    submit = lambda stage: runner.submit(repo, stage, force, deployment, outside_lock=limit if limit > 1 else 0,
                                         member_timeout_seconds=member_timeout_seconds)
    for stage in itertools.islice(waiting, limit):
        running[submit(stage)] = stage
    while running:
        done = next(as_completed(list(running)))
        done.wait()                             # else .state may still be the API's stale Pending
        states[running.pop(done)] = done.state
        following = next(waiting, None)
        if following:
            running[submit(following)] = following
    return states


def _load(repo: Path, path: Path):
    f = repo / path
    return json.loads(f.read_text()) if f.exists() else None


@task(name="fast-forward", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_retry_unless(git_ops.CloneRefused))
def update_clone(repo_dir: str, branch: str) -> dict:
    """Bring the clone to the head of `branch` of its git remote, fast-forward only; a clone with
    local changes or commits of its own is refused at once (a fetch that fails is retried)."""
    moved = git_ops.fast_forward(Path(repo_dir), branch)
    log = get_run_logger()
    if moved["commits"]:
        log.info("fast-forwarded %s to %s (%d commits):\n%s", branch, moved["commit"][:12], len(moved["commits"]),
                 "\n".join(moved["commits"]))
    else:
        log.info("%s is at the head of %s (%s)", repo_dir, branch, moved["commit"][:12])
    return moved


def _intake_lines(repo: Path) -> list[str]:
    """The summary's lines on arriving batches (data/intake/batches.json), rejected ones named."""
    manifest = _load(repo, paths.INTAKE_MANIFEST)
    if not manifest:
        return []
    batches = manifest["batches"]
    taken = [b for b in batches if b.get("status") == "taken"]
    lines = ["", "## Arriving batches", "",
             f"{len(batches)} in the inbox: {len(taken)} taken ({sum(b.get('rows', 0) for b in taken):,} rows)."]
    for b in batches:
        if b.get("status") == "rejected":
            lines.append(f"- **rejected** `{b.get('file')}`: {b.get('reason')} (report `{b.get('report')}`)")
        elif b.get("status") == "duplicate":
            lines.append(f"- duplicate `{b.get('file')}`: {b.get('reason')}")
    return lines


def publish_artifacts(repo: Path, statuses: dict, experiment: str | None, commit: str | None = None) -> None:
    """Prefect artifacts: the run's metrics as a table and a markdown summary."""
    ev, score = (_load(repo, p) or {} for p in (paths.EVALUATE_DETAILS, paths.SCORE_METRICS))
    names = list(ev.get("ensemble", {}).get("members", {}))
    trained = [_load(repo, paths.member(n).metrics) or {} for n in names]
    row = {"experiment": experiment, "validation_accuracy": ev.get("accuracy"),
           "test_accuracy": score.get("test_accuracy"), "members": ", ".join(names),
           "train_seconds": round(sum(m.get("train_seconds", 0) for m in trained), 1),
           "device": trained[0].get("device") if trained else None,
           "machine": trained[0].get("machine") if trained else None, "commit": commit}
    create_table_artifact(key="digits-metrics", table=[row], description="Metrics of this pipeline run")
    lines = ["# Digit recognizer run", ""]
    if commit:
        lines += [f"Ran at commit `{commit}`.", ""]
    if experiment:
        lines += [f"Saved as DVC experiment `{experiment}`: `dvc exp show` lists it, "
                  f"`dvc metrics diff {experiment} <other>` compares it.", ""]
    else:
        lines += ["Nothing changed: no experiment saved.", ""]
    lines += ["| stage | state |", "|---|---|"]
    lines += [f"| {s} | {st} |" for s, st in statuses.items()]
    lines += _intake_lines(repo)
    confusion = repo / paths.EVAL_PLOTS / "confusion.csv"
    if confusion.exists():
        pairs = pd.read_csv(confusion)
        cm = pd.crosstab(pairs.actual, pairs.predicted)
        lines += ["", "## Confusion matrix (validation; rows true, columns predicted)", "",
                  cm.to_markdown()]
    if (repo / paths.SUBMISSION).exists():
        lines += ["", f"Submission: `{(repo / paths.SUBMISSION).resolve()}`"]
    diff = dvc_ops.metrics_diff_md(repo)
    lines += ["", "## `dvc metrics diff` against the last commit", "", diff or "(no change)"]
    create_markdown_artifact(key="digits-summary", markdown="\n".join(lines), description="Run summary")


@flow(name="digits-pipeline", log_prints=True)
def pipeline(stages: list[str] | None = None, force: bool = False, params: dict[str, Any] | None = None,
             retries: int = 2, retry_delay_seconds: float = 10, retry_jitter_factor: float = 0.5,
             train_on: Literal["local", "gpu"] = "local",
             train_deployment: str = "digits-train-remote/train-gpu", repo_dir: str = ".",
             save_experiment: bool = True, train_concurrency: int = 2,
             clone_wait_seconds: float = 3600, member_timeout_seconds: float = 10800,
             update_branch: str | None = None, promote: bool = False) -> dict:
    """Run the DVC pipeline stage by stage; returns {stage: "Completed" | "Cached" | "Skipped"}.

    `params` overrides hold for this run only: params.yaml is as before afterwards. A run that
    changed anything is saved as a DVC experiment named after the flow run (and pushed to the
    remotes that are set), so `dvc exp show` lists scheduled runs and `dvc metrics diff` compares
    them. Ensemble members train side by side: `train_concurrency` at a time in this clone, each
    on its share of the cores (default 2: on a 2-core machine two members with one core each
    finished in 1.45-1.9x less time than one after the other, docs/orchestration.md),
    or with train_on="gpu" each as its own run of `train_deployment` on the `gpu` pool's workers,
    all at once; the split and the models travel through the DVC remote (`dvc remote add -d`).
    A remote member not finished within `member_timeout_seconds` (its wait for a free worker
    included) is cancelled and fails, so it is retried like any failed stage.

    The run holds the clone's lock from start to end: a run that finds the clone in use waits
    up to `clone_wait_seconds`, then fails naming the run that holds it. Holding the lock, it
    first restores what a killed run left behind (params.yaml under its overrides).

    `update_branch`: first fast-forward the clone to this branch of its git remote (a clone with
    local changes or commits of its own fails the run at once), and at the end put the files git
    sees back as at that commit, the results kept in the run's experiment. `promote`: after the
    stages, the gate compares the ensemble with the production version (tasks/promote.py) and
    the registry promotes it when it passes; the decision is the `digits-promotion` artifact."""
    repo = Path(repo_dir).resolve()
    log = get_run_logger()
    with dvc_ops.clone_lock(repo, dvc_ops.holder(current_flow_run.name), clone_wait_seconds, log):
        commit = update_clone(str(repo), update_branch)["commit"] if update_branch else git_ops.head_or_none(repo)
        kept = dvc_ops.worktree_kept(repo) if update_branch else contextlib.nullcontext()
        with kept:
            if update_branch:
                carried = dvc_ops.carry_over(repo)
                if carried:
                    log.info("put back what the last run left (%d files: dvc.lock, metrics, ...)", len(carried))
            with dvc_ops.overridden_params(repo, params or {}):
                statuses = run_stages(repo, stages, force, retries, retry_delay_seconds, retry_jitter_factor,
                                      train_deployment if train_on == "gpu" else None, train_concurrency,
                                      member_timeout_seconds)
                changed = bool(params) or any(st not in ("Skipped", "Cached") for st in statuses.values())
                first = promote and registry.production(repo) is None
                experiment = None
                if save_experiment and (changed or first):
                    experiment = current_flow_run.name
                    dvc_ops.save_experiment(repo, experiment, log.info, commit)
                publish_artifacts(repo, statuses, experiment, commit)
                if promote and experiment:
                    decision = promotion.gate(str(repo))
                    trained_at = dvc_ops.experiment_commit(repo, experiment)
                    record = promotion.publish(str(repo), decision, trained_at, experiment)
                    promotion.publish_decision(repo, decision, record, trained_at)
                elif promote:
                    log.info("nothing changed since the production version's run: no decision to make")
            if update_branch:             # after the overrides are undone: they never carry over
                dvc_ops.remember_run(repo)
    return statuses


def run_stages(repo: Path, stages, force: bool, retries: int, retry_delay_seconds: float, retry_jitter_factor: float,
               deployment: str | None, train_concurrency: int, member_timeout_seconds: float) -> dict:
    """Every chosen stage in DVC's order, members side by side; {stage: state name}. A failed
    stage fails the flow with its own error."""
    order = dvc_ops.stage_order(repo)
    group = lambda s: s.split("@")[0]           # "train" names every train@<member>
    unknown = set(stages or []) - set(order) - {group(s) for s in order}
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; the pipeline has {order}")
    chosen = [s for s in order if not stages or s in stages or group(s) in stages]
    runner = run_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds,
                                    retry_jitter_factor=retry_jitter_factor)
    statuses = {}
    for stage in chosen:
        if stage in statuses:
            continue
        if is_member(stage):            # every member at once: they depend on the split alone
            states = train_members(runner, str(repo), [s for s in chosen if is_member(s)], force,
                                   deployment, train_concurrency, member_timeout_seconds)
        else:
            states = {stage: runner(str(repo), stage, force, deployment, return_state=True)}
        statuses |= {s: states[s].name for s in chosen if s in states}    # in DVC's order
        for st in states.values():
            if st.is_failed():
                st.result()                 # raises the stage's own error: the flow fails with it
    return statuses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description="Run the DVC pipeline under Prefect.")
    ap.add_argument("--stages", nargs="*", help="stages to run (default: all, in DVC's order)")
    ap.add_argument("--force", action="store_true", help="run stages even if DVC finds them up to date")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="param override for this run only, as `dvc exp run -S` takes it, "
                         "e.g. train.presets.quick.epochs=3")
    ap.add_argument("--train-on", choices=["local", "gpu"], default="local",
                    help="gpu: run each member's train stage on the `gpu` work pool through the DVC remote")
    ap.add_argument("--train-concurrency", type=int, default=2, metavar="N",
                    help="members trained at once in this clone, each on its share of the cores (default 2)")
    ap.add_argument("--clone-wait-seconds", type=float, default=3600, metavar="S",
                    help="how long to wait while another run uses this clone, then fail (default 3600)")
    ap.add_argument("--member-timeout-seconds", type=float, default=10800, metavar="S",
                    help="with --train-on gpu: deadline of each member's remote run (default 10800)")
    ap.add_argument("--update-branch", metavar="BRANCH",
                    help="first fast-forward the clone to this branch of its remote; restore the clone at the end")
    ap.add_argument("--promote", action="store_true",
                    help="promote the new model if it passes the gate against the production version")
    args = ap.parse_args(argv)
    import yaml
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(pipeline(stages=args.stages, force=args.force, params=overrides, train_on=args.train_on,
                   train_concurrency=args.train_concurrency, clone_wait_seconds=args.clone_wait_seconds,
                   member_timeout_seconds=args.member_timeout_seconds, update_branch=args.update_branch,
                   promote=args.promote))


if __name__ == "__main__":
    main()
