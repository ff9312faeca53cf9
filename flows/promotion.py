"""The flow's last steps: the gate decides (tasks/promote.py), the registry publishes
(digits/registry.py), and the decision becomes the run's `digits-promotion` artifact.

The decision runs in its own process, like a stage (it loads TensorFlow and both models); the
publication is git tags and a file, done here. Every decision is kept under serving/decisions/.
"""
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from digits import paths, registry
from digits.io import write_json
from flows import dvc_ops, git_ops


@task(name="gate")
def gate(repo_dir: str) -> dict:
    """The challenger (this clone's ensemble) against the production version on the gate rows."""
    repo = Path(repo_dir)
    out = repo / ".dvc/tmp/promotion.json"
    proc = dvc_ops.run([sys.executable, "-m", "tasks.promote", "--out", str(out)], repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise dvc_ops.StageFailed(f"the gate failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    decision = json.loads(out.read_text())
    out.unlink()
    get_run_logger().info("gate: %s", decision["reason"])
    return decision


@task(name="publish")
def publish(repo_dir: str, decision: dict, commit: str, run_name: str) -> dict | None:
    """Register and assign the challenger when the gate promotes it (pushing the tags where the
    clone has a git remote); keep the decision under serving/decisions/ either way."""
    repo = Path(repo_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    write_json(repo / paths.SERVING_DIR / "decisions" / f"{stamp}-{run_name}.json", decision | {"commit": commit})
    if not decision["promote"]:
        return None
    ch = decision["challenger"]
    figures = {"gate": {k: ch[k] for k in ("accuracy", "errors")} | {"sha256": decision["gate"]["sha256"]},
               "robustness": ch.get("robustness")}
    record = registry.promote(repo, commit, {n: repo / f for n, f in ch["files"].items()}, ch["tta"], figures,
                              message=f"flow run {run_name}: {decision['reason']}")
    remote = git_ops.remote_of(repo)
    if remote:
        tags = git_ops.git(repo, "tag", "--points-at", commit).split()
        git_ops.git(repo, "push", "--quiet", remote, *[f"refs/tags/{t}" for t in tags if t.startswith(registry.ARTIFACT)])
    get_run_logger().info("promoted %s (commit %s) to production", record["version"], commit[:12])
    return record


def side_by_side(repo: Path, decision: dict) -> str:
    """`dvc metrics diff` of the champion's commit against this workspace, or why there is none."""
    champion = decision.get("champion") or {}
    if not champion.get("commit"):
        return "(no champion: nothing to compare with)"
    try:
        return dvc_ops.dvc(repo, "metrics", "diff", champion["commit"], "--md").strip() or "(no difference)"
    except dvc_ops.StageFailed as e:
        return f"(`dvc metrics diff {champion['commit'][:12]}` failed: {str(e).splitlines()[-1]})"


def publish_decision(repo: Path, decision: dict, record: dict | None, commit: str) -> None:
    """The `digits-promotion` artifact: the decision, its checks, and the two models side by side."""
    champion = decision.get("champion") or {}
    outcome = (f"**Promoted** as `{registry.ARTIFACT}@{record['version']}` (commit `{commit[:12]}`)" if record
               else f"**Not promoted**: production stays `{champion.get('version', 'none')}`")
    lines = ["# Promotion", "", outcome, "", f"Verdict: {decision['verdict']}. {decision['reason']}.", ""]
    if decision.get("checks"):
        checks = pd.DataFrame([{k: v for k, v in c.items() if k != "check"} | {"check": c["check"]}
                               for c in decision["checks"]]).set_index("check")
        lines += ["## Checks", "", checks.to_markdown(), ""]
    if decision.get("mcnemar"):
        m = decision["mcnemar"]
        lines += [f"McNemar's exact test: only the champion right on {m['champion_only_right']} gate rows, only the "
                  f"challenger on {m['challenger_only_right']}; p = {m['p_value']:.3g}.", ""]
    lines += [f"Gate: {decision['gate']['rows']} rows of `{decision['gate']['file']}` "
              f"(sha256 {decision['gate']['sha256'][:12]}).", "",
              "## `dvc metrics diff` champion -> challenger", "", side_by_side(repo, decision)]
    create_markdown_artifact(key="digits-promotion", markdown="\n".join(lines), description="Champion and challenger")
