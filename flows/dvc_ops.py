"""The few DVC operations the flows need, as plain functions (no Prefect here, testable alone)."""
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import networkx as nx
import yaml

from tasks.cli import DATA_ERROR  # a stage's exit status for rejected input: never retried


class StageFailed(RuntimeError):
    """A stage's command failed; the message holds the end of its output."""


class BadData(StageFailed):
    """A stage rejected its input (validation): retrying cannot help."""


def dvc_cmd(*args) -> list:
    """A DVC command line; it waits for the repository lock rather than failing when concurrent
    members of one flow run take it (their `dvc commit`, `dvc pull`) at the same moment."""
    return [sys.executable, "-m", "dvc", "--wait-for-lock", *args]


def _env() -> dict:
    """This interpreter's bin/ first on PATH: stage commands say `python`, and a worker started
    as .venv/bin/prefect need not have the virtual environment on its PATH."""
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(args: list, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), **kwargs)


def popen(args: list, cwd, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=_env(), **kwargs)


def dvc(repo_dir: Path, *args) -> str:
    """Run one DVC command in `repo_dir`; its stdout, or StageFailed with all its output."""
    proc = run(dvc_cmd(*args), repo_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageFailed(f"dvc {' '.join(args)} failed in {repo_dir}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


_API = threading.Lock()      # DVC's Python API is not thread-safe; members call it side by side


def stage_order(repo_dir: Path) -> list[str]:
    """The pipeline's stages in an order DVC would run them (dependencies first)."""
    from dvc.repo import Repo
    with _API, Repo(str(repo_dir)) as repo:
        graph = repo.index.graph                     # edges point from a stage to its dependencies
        order = reversed(list(nx.lexicographical_topological_sort(graph, key=lambda s: s.name)))
        return [s.name for s in order if not s.is_data_source]


def git_tracked_outputs(repo_dir: Path) -> list[str]:
    """Every output (metrics, plots, reports) the pipeline keeps in git rather than DVC's cache."""
    from dvc.repo import Repo
    with _API, Repo(str(repo_dir)) as repo:
        return sorted({str(Path(o.fs_path).relative_to(Path(repo.root_dir)))
                       for stage in repo.index.stages for o in stage.outs if not o.use_cache})


def is_stale(repo_dir: Path, stage: str) -> bool:
    """True if DVC would run `stage` now (its own deps, params or outs changed)."""
    out = run(dvc_cmd("status", stage, "--json"), repo_dir, capture_output=True, text=True, check=True).stdout
    return bool(yaml.safe_load(out or "{}"))


def stage_command(repo_dir: Path, stage: str) -> str:
    """The shell command of `stage` as dvc.yaml resolves it (foreach stages included)."""
    from dvc.repo import Repo
    with _API, Repo(str(repo_dir)) as repo:
        # an address relative to the cwd would find the cwd's dvc.yaml, not this repository's
        return repo.stage.collect(f"{Path(repo.root_dir) / 'dvc.yaml'}:{stage}")[0].cmd


def repro_stage(repo_dir: Path, stage: str, force: bool, log, outside_lock: bool = False) -> None:
    """`dvc repro --single-item` one stage, streaming its output line by line to `log`.

    outside_lock: run the stage's command without DVC, then record its outputs with `dvc commit`
    (a second `dvc repro` would wait for the first one's repository lock for the whole training):
    so several members train in one clone at once. Not for a stage with non-persistent outputs
    that a run must start without, which the train stages do not have."""
    if outside_lock:
        cmd = ["sh", "-c", stage_command(repo_dir, stage)]
    else:
        cmd = dvc_cmd("repro", "--single-item", *(["--force"] if force else []), stage)
    proc = popen(cmd, repo_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            log(line)
            tail = (tail + [line])[-30:]
    if proc.wait() != 0:
        text = "\n".join(tail)
        bad = f"exited with {DATA_ERROR}" in text or (outside_lock and proc.returncode == DATA_ERROR)
        raise (BadData if bad else StageFailed)(f"stage {stage} failed:\n{text}")
    if outside_lock:
        dvc(repo_dir, "commit", "--force", stage)


@contextlib.contextmanager
def overridden_params(repo_dir: Path, overrides: dict):
    """Apply {"train.presets.quick.epochs": 20, ...} to params.yaml for the duration of the block,
    as `dvc exp run -S` does (DVC's own YAML editor keeps comments), then put params.yaml back as
    it was, so a run's overrides never leak into the next run. The result is checked against the
    typed params first: an unknown key is an error naming it, before anything runs."""
    from dvc.utils.serialize import modify_yaml
    from tasks import params
    path = Path(repo_dir) / "params.yaml"
    before = path.read_text()
    try:
        if overrides:
            with modify_yaml(str(path)) as data:
                for dotted, value in overrides.items():
                    node = data
                    *parents, last = dotted.split(".")
                    for key in parents:
                        node = node.setdefault(key, {})
                    node[last] = value
            params.load(path)
        yield
    finally:
        path.write_text(before)


def save_experiment(repo_dir: Path, name: str, log) -> None:
    """Record the workspace as the DVC experiment `name` (params, dvc.lock, metrics, plots), then
    share it: outputs to the default DVC remote and the experiment to the git remote, where set."""
    # `exp save` leaves out git-tracked outputs that git does not know yet (the first run's metrics)
    untracked = [arg for path in git_tracked_outputs(repo_dir) if (Path(repo_dir) / path).exists()
                 for arg in ("-I", path)]
    dvc(repo_dir, "exp", "save", "--force", "-n", name, "-m", f"Prefect flow run {name}", *untracked)
    log(f"saved as DVC experiment {name}")
    if dvc(repo_dir, "remote", "list").strip():
        dvc(repo_dir, "push")
        log("outputs pushed to the DVC remote")
    git_remotes = run(["git", "remote"], repo_dir, capture_output=True, text=True).stdout.split()
    if git_remotes:
        remote = "origin" if "origin" in git_remotes else git_remotes[0]
        dvc(repo_dir, "exp", "push", "--no-cache", remote, name)
        log(f"experiment {name} pushed to git remote {remote}")


def metrics_diff_md(repo_dir: Path) -> str:
    """`dvc metrics diff --md` of the workspace against the last commit ('' if none)."""
    proc = run(dvc_cmd("metrics", "diff", "--md"), repo_dir, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""
