"""The few DVC operations the flows need, as plain functions (no Prefect here, testable alone)."""
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import yaml

from tasks.cli import DATA_ERROR  # a stage's exit status for rejected input: never retried


class StageFailed(RuntimeError):
    """A stage's command failed; the message holds the end of its output."""


class BadData(StageFailed):
    """A stage rejected its input (validation): retrying cannot help."""


def dvc_cmd(*args) -> list:
    return [sys.executable, "-m", "dvc", *args]


def _env() -> dict:
    """This interpreter's bin/ first on PATH: stage commands say `python`, and a worker started
    as .venv/bin/prefect need not have the virtual environment on its PATH."""
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(args: list, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), **kwargs)


def popen(args: list, cwd, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=_env(), **kwargs)


def stage_order(repo_dir: Path) -> list[str]:
    """The pipeline's stages in an order DVC would run them (dependencies first)."""
    from dvc.repo import Repo
    with Repo(str(repo_dir)) as repo:
        graph = repo.index.graph                     # edges point from a stage to its dependencies
        order = reversed(list(nx.lexicographical_topological_sort(graph, key=lambda s: s.name)))
        return [s.name for s in order if not s.is_data_source]


def is_stale(repo_dir: Path, stage: str) -> bool:
    """True if DVC would run `stage` now (its own deps, params or outs changed)."""
    out = run(dvc_cmd("status", stage, "--json"), repo_dir, capture_output=True, text=True, check=True).stdout
    return bool(yaml.safe_load(out or "{}"))


def repro_stage(repo_dir: Path, stage: str, force: bool, log) -> None:
    """`dvc repro --single-item` one stage, streaming its output line by line to `log`."""
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
        error = BadData if f"exited with {DATA_ERROR}" in text else StageFailed
        raise error(f"stage {stage} failed:\n{text}")


def set_params(repo_dir: Path, overrides: dict) -> None:
    """Apply {"train.presets.quick.epochs": 20, ...} to params.yaml as `dvc exp run -S` does
    (DVC's own YAML editor keeps comments), then check the result against the typed params: an
    unknown key is an error naming it, and params.yaml is left as it was."""
    from dvc.utils.serialize import modify_yaml
    from tasks import params
    if not overrides:
        return
    path = Path(repo_dir) / "params.yaml"
    before = path.read_text()
    with modify_yaml(str(path)) as data:
        for dotted, value in overrides.items():
            node = data
            *parents, last = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
    try:
        params.load(path)
    except params.ParamsError:
        path.write_text(before)
        raise


def metrics_diff_md(repo_dir: Path) -> str:
    """`dvc metrics diff --md` of the workspace against the last commit ('' if none)."""
    proc = run(dvc_cmd("metrics", "diff", "--md"), repo_dir, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""
