"""Prefect flow: the DVC pipeline, one Prefect task per stage, in DVC's order.

DVC decides what is stale (`dvc status`) and runs each stage (`dvc repro --single-item`); Prefect
adds retries, run history, artifacts, schedules and workers. Unchanged stages end in a Completed
state named "Skipped". A stage that rejects its data (exit status 65) fails at once, unretried.
A run that changed anything is saved as a DVC experiment named after the flow run.

    python -m flows.pipeline                                  # all stages, local server or ephemeral
    python -m flows.pipeline --set train.presets.quick.epochs=3 --stages ingest validate
"""
import argparse
import json
import time
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Completed

from flows import dvc_ops, remote_train
from tasks import paths


def _retry_unless_bad_data(task, task_run, state) -> bool:
    try:
        state.result()
    except dvc_ops.BadData:
        return False
    except Exception:
        return True
    return True


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=10, retry_jitter_factor=0.5,
      retry_condition_fn=_retry_unless_bad_data)
def run_stage(repo_dir: str, stage: str, force: bool = False, train_deployment: str | None = None):
    """Run one DVC stage if DVC finds it stale (or force); report it as Skipped otherwise.
    With `train_deployment`, the train stage runs there (a GPU worker) instead of here."""
    log = get_run_logger()
    if not force and not dvc_ops.is_stale(Path(repo_dir), stage):
        log.info("stage %s is up to date: skipped", stage)
        return Completed(name="Skipped", message=f"{stage}: up to date")
    t0 = time.perf_counter()
    if stage == remote_train.STAGE and train_deployment:
        remote_train.dispatch(Path(repo_dir), train_deployment, log.info)
    else:
        dvc_ops.repro_stage(Path(repo_dir), stage, force, log.info)
    return {"stage": stage, "seconds": round(time.perf_counter() - t0, 1)}


def _load(repo: Path, path: Path):
    f = repo / path
    return json.loads(f.read_text()) if f.exists() else None


def publish_artifacts(repo: Path, statuses: dict, experiment: str | None) -> None:
    """Prefect artifacts: the run's metrics as a table and a markdown summary."""
    train, ev, score = (_load(repo, p) or {} for p in (paths.TRAIN_METRICS, paths.EVALUATE_METRICS, paths.SCORE_METRICS))
    row = {"experiment": experiment, "validation_accuracy": ev.get("accuracy"),
           "test_accuracy": score.get("test_accuracy"), "train_seconds": train.get("train_seconds"),
           "device": train.get("device"), "machine": train.get("machine"), "preset": train.get("preset")}
    create_table_artifact(key="digits-metrics", table=[row], description="Metrics of this pipeline run")
    lines = ["# Digit recognizer run", ""]
    if experiment:
        lines += [f"Saved as DVC experiment `{experiment}`: `dvc exp show` lists it, "
                  f"`dvc metrics diff {experiment} <other>` compares it.", ""]
    else:
        lines += ["Nothing changed: no experiment saved.", ""]
    lines += ["| stage | state |", "|---|---|"]
    lines += [f"| {s} | {st} |" for s, st in statuses.items()]
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
def pipeline(stages: list[str] | None = None, force: bool = False, params: dict | None = None,
             retries: int = 2, retry_delay_seconds: float = 10, retry_jitter_factor: float = 0.5,
             train_on: Literal["local", "gpu"] = "local",
             train_deployment: str = "digits-train-remote/train-gpu", repo_dir: str = ".",
             save_experiment: bool = True) -> dict:
    """Run the DVC pipeline stage by stage; returns {stage: "Completed" | "Skipped"}.

    `params` overrides hold for this run only: params.yaml is as before afterwards. A run that
    changed anything is saved as a DVC experiment named after the flow run (and pushed to the
    remotes that are set), so `dvc exp show` lists scheduled runs and `dvc metrics diff` compares
    them. train_on="gpu" sends the train stage to `train_deployment` (a worker of the `gpu`
    pool); the split and the model travel through the DVC remote (`dvc remote add -d ...`)."""
    repo = Path(repo_dir).resolve()
    log = get_run_logger()
    with dvc_ops.overridden_params(repo, params or {}):
        order = dvc_ops.stage_order(repo)
        unknown = set(stages or []) - set(order)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; the pipeline has {order}")
        chosen = [s for s in order if not stages or s in stages]
        runner = run_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds,
                                        retry_jitter_factor=retry_jitter_factor)
        statuses = {}
        for stage in chosen:
            state = runner(str(repo), stage, force, train_deployment if train_on == "gpu" else None,
                           return_state=True)
            statuses[stage] = state.name
            if state.is_failed():
                state.result()                  # raises the stage's own error: the flow fails with it
        experiment = None
        if save_experiment and (params or any(st != "Skipped" for st in statuses.values())):
            experiment = current_flow_run.name
            dvc_ops.save_experiment(repo, experiment, log.info)
        publish_artifacts(repo, statuses, experiment)
    return statuses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description="Run the DVC pipeline under Prefect.")
    ap.add_argument("--stages", nargs="*", help="stages to run (default: all, in DVC's order)")
    ap.add_argument("--force", action="store_true", help="run stages even if DVC finds them up to date")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="param override for this run only, as `dvc exp run -S` takes it, "
                         "e.g. train.presets.quick.epochs=3")
    ap.add_argument("--train-on", choices=["local", "gpu"], default="local",
                    help="gpu: run the train stage on the `gpu` work pool through the DVC remote")
    args = ap.parse_args(argv)
    import yaml
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(pipeline(stages=args.stages, force=args.force, params=overrides, train_on=args.train_on))


if __name__ == "__main__":
    main()
