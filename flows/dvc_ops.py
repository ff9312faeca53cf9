"""The few DVC operations the flows need, as plain functions (no Prefect here, testable alone)."""
import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import networkx as nx
import yaml

from digits.cli import DATA_ERROR  # a stage's exit status for rejected input: never retried
from digits.io import atomic_path


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


_HELD_LOCKS: set[int] = set()   # descriptors of the clone locks this process holds (clone_lock)


def run(args: list, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), pass_fds=tuple(_HELD_LOCKS), **kwargs)


def popen(args: list, cwd, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start a command (with `env` added to this process's); it inherits the clone locks held
    here, so a stage that outlives this process (the flow run killed) keeps its clone locked
    until it exits."""
    return subprocess.Popen(args, cwd=cwd, env=_env() | (env or {}), pass_fds=tuple(_HELD_LOCKS), **kwargs)


TF_THREADS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")   # TensorFlow's thread pools, read at import


def thread_share(at_once: int, environ=os.environ) -> dict:
    """TensorFlow's thread pools for one of `at_once` trainings sharing this machine: its share
    of the cores (at least 1). Unset, each would use every core and they would contend for them.
    Thread counts the user set win."""
    n = str(max(1, (os.cpu_count() or 1) // max(1, at_once)))
    return {k: environ.get(k, n) for k in TF_THREADS}


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


CACHED = "is cached - skipping run"     # what `dvc repro` prints when its run cache restores a stage


def repro_stage(repo_dir: Path, stage: str, force: bool, log, outside_lock: int = 0) -> bool:
    """`dvc repro --single-item` one stage, streaming its output line by line to `log`. Returns
    False when DVC restored the outputs from its run cache instead of running the command (a
    stage already run with the same deps and params, in this clone or one sharing its cache).

    outside_lock: how many stages run at once (0: this one alone, under DVC). With a number, the
    stage's command runs without DVC, with its share of the cores (thread_share), then its
    outputs are recorded with `dvc commit` (a second `dvc repro` would wait for the first one's
    repository lock for the whole training): so several members train in one clone at once. Not
    for a stage with non-persistent outputs that a run must start without, which the train
    stages do not have."""
    env = None
    if outside_lock:
        cmd, env = ["sh", "-c", stage_command(repo_dir, stage)], thread_share(outside_lock)
    else:
        cmd = dvc_cmd("repro", "--single-item", *(["--force"] if force else []), stage)
    proc = popen(cmd, repo_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail, ran = [], True
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            log(line)
            tail = (tail + [line])[-30:]
            ran = ran and CACHED not in line
    if proc.wait() != 0:
        text = "\n".join(tail)
        bad = f"exited with {DATA_ERROR}" in text or (outside_lock and proc.returncode == DATA_ERROR)
        raise (BadData if bad else StageFailed)(f"stage {stage} failed:\n{text}")
    if outside_lock:
        dvc(repo_dir, "commit", "--force", stage)
    return ran


CLONE_LOCK = Path(".dvc/tmp/flow-run.lock")   # held by the one flow run working in a clone
JOURNAL = Path(".dvc/tmp/flow-journal")      # what the running flow must put back (git ignores .dvc/tmp)


class CloneBusy(RuntimeError):
    """Another flow run kept the clone longer than this run would wait."""


def holder(flow_run_name: str) -> str:
    """Who holds a clone's lock, as a waiting run's messages name it."""
    return (f"flow run {flow_run_name} (pid {os.getpid()} on {socket.gethostname()}, "
            f"since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC)")


def _ended(who: str) -> str:
    """What a waiting run adds when the lock names a process of this machine that has ended: the
    lock is then held by a command that process started (a stage outlives its killed flow run)."""
    m = re.search(r"\(pid (\d+) on (\S+),", who)
    if not m or m.group(2) != socket.gethostname():
        return ""
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return "; that process has ended, a command it started still holds the lock"
    except PermissionError:
        pass
    return ""


@contextlib.contextmanager
def clone_lock(repo_dir: Path, who: str, wait_seconds: float, logger):
    """Hold the clone's lock for the block: one flow run at a time in a clone, so no run reads
    params.yaml while another holds overrides in it. A run that finds the clone taken waits up to
    `wait_seconds`, then fails naming the holder (`who`, written into the lock file). The lock is
    an flock, released by the kernel however the holding process ends (SIGKILL, OOM), once the
    commands it started here (run, popen: they inherit it) have ended too.

    Holding the lock, the run first puts back what an interrupted run left in its journal
    (recover): no live run can own that journal."""
    repo = Path(repo_dir)
    if not (repo / ".dvc").is_dir():
        raise ValueError(f"{repo} is not a DVC repository (no .dvc folder)")
    path = repo / CLONE_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:                      # its own open file: the lock is per open, not per process
        deadline, told = time.monotonic() + wait_seconds, False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                held_by = path.read_text().strip() or "another process"
                held_by += _ended(held_by)
                if time.monotonic() >= deadline:
                    raise CloneBusy(f"{repo} is in use by {held_by}; gave up after waiting {wait_seconds:g} s "
                                    f"(clone_wait_seconds; lock file {path})") from None
                if not told:
                    logger.info("%s is in use by %s: waiting up to %g s for it", repo, held_by, wait_seconds)
                    told = True
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        f.truncate(0)
        f.write(who + "\n")
        f.flush()
        _HELD_LOCKS.add(f.fileno())
        try:
            recover(repo, logger)
            yield
        finally:
            _HELD_LOCKS.discard(f.fileno())
            f.truncate(0)
            f.flush()


def recover(repo_dir: Path, logger) -> list[str]:
    """Put back what an interrupted run's journal holds (params.yaml before its overrides, or the
    working tree before a remote training) and drop the journal. Call it holding the clone's lock."""
    repo, journal = Path(repo_dir), Path(repo_dir) / JOURNAL
    restored = []
    if (journal / "worktree").exists():
        restore_worktree(repo, (journal / "worktree").read_text().strip())
        restored.append("the working tree")
    if (journal / "params.yaml").exists():
        with atomic_path(repo / "params.yaml") as tmp:      # whole or not at all: a kill leaves the old one
            tmp.write_bytes((journal / "params.yaml").read_bytes())
        restored.append("params.yaml")
    if restored:
        logger.warning("restored %s of %s as it was before an interrupted run (journal %s)",
                       " and ".join(restored), repo, journal)
    shutil.rmtree(journal, ignore_errors=True)
    return restored


@contextlib.contextmanager
def overridden_params(repo_dir: Path, overrides: dict):
    """Apply {"train.presets.quick.epochs": 20, ...} to params.yaml for the duration of the block,
    as `dvc exp run -S` does (DVC's own YAML editor keeps comments), then put params.yaml back as
    it was, so a run's overrides never leak into the next run. The result is checked against the
    typed params first: an unknown key is an error naming it, before anything runs.

    Crash-safe under clone_lock: the original is journaled before the overrides are written and
    the journal dropped after it is back; a run killed in between leaves the journal, which the
    next run in the clone restores (recover) before anything else."""
    from dvc.utils.serialize import modify_yaml

    from digits import params
    if not overrides:
        yield
        return
    path = Path(repo_dir) / "params.yaml"
    journal = Path(repo_dir) / JOURNAL / "params.yaml"
    before = path.read_bytes()
    journal.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(journal) as tmp:
        tmp.write_bytes(before)
    try:
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
        with atomic_path(path) as tmp:
            tmp.write_bytes(before)
        journal.unlink()


def _git(repo: Path, *args, index: Path | None = None, stdin: bytes | None = None) -> bytes:
    env = os.environ | ({"GIT_INDEX_FILE": str(index)} if index else {})
    return subprocess.run(["git", *args], cwd=repo, env=env, input=stdin, capture_output=True,
                          check=True).stdout


@contextlib.contextmanager
def worktree_kept(repo_dir: Path):
    """Run the block, then put every file git sees back as it was before: changed or deleted
    files rewritten, files the block created removed (ignored files, such as DVC's cache and
    checkpoints, stay). So a worker's clone ends as it began and its next `git pull` applies.
    The state is a git tree written through a throwaway index (the clone's index, branches and
    stash are untouched), its id journaled: a run killed in the block is undone by the next."""
    repo = Path(repo_dir)
    journal = repo / JOURNAL
    tree = snapshot(repo)
    with atomic_path(journal / "worktree") as tmp:
        tmp.write_text(tree)
    try:
        yield
    finally:
        restore_worktree(repo, tree)
        (journal / "worktree").unlink()


def snapshot(repo: Path) -> str:
    """Every file git sees in `repo` (untracked ones too, ignored ones not), as a git tree's id."""
    index = repo / JOURNAL / "snapshot.index"
    index.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "add", "--all", index=index)
    tree = _git(repo, "write-tree", index=index).decode().strip()
    index.unlink()
    return tree


LAST_RUN = Path(".dvc/tmp/last-run")        # "<commit> <tree>": how the last restored run left the clone


def remember_run(repo_dir: Path) -> None:
    """Record the files git sees as this run leaves them, before the clone is restored: the next
    run puts them back (carry_over), so dvc.lock again describes the outputs that stayed."""
    repo = Path(repo_dir)
    with atomic_path(repo / LAST_RUN) as tmp:
        tmp.write_text(f"{_git(repo, 'rev-parse', 'HEAD').decode().strip()} {snapshot(repo)}\n")


def carry_over(repo_dir: Path) -> list[str]:
    """Put back the files the last restored run changed (its dvc.lock, metrics, plots, reports), but
    none that the commits since then changed: those commits win, and DVC re-runs what they affect.
    Without this, the restored dvc.lock would not describe the git-ignored outputs the last run left
    (models, data), and DVC would run or restore every stage again. Returns the files put back."""
    repo = Path(repo_dir)
    if not (repo / LAST_RUN).exists():
        return []
    base, tree = (repo / LAST_RUN).read_text().split()
    if subprocess.run(["git", "cat-file", "-e", f"{tree}^{{tree}}"], cwd=repo, capture_output=True).returncode:
        return []                                               # pruned: start as the commit has it
    by_run = set(_git(repo, "diff", "--name-only", "-z", base, tree).decode().split("\0")) - {""}
    upstream = set(_git(repo, "diff", "--name-only", "-z", base, "HEAD").decode().split("\0")) - {""}
    carried = sorted(by_run - upstream)
    if not carried:
        return []
    index = repo / JOURNAL / "carry.index"
    index.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "read-tree", tree, index=index)
    present = set(_git(repo, "ls-files", "-z", "--", *carried, index=index).decode().split("\0")) - {""}
    if present:
        _git(repo, "checkout-index", "--force", "-z", "--stdin", index=index, stdin="\0".join(sorted(present)).encode())
    for rel in set(carried) - present:                          # files the last run removed
        (repo / rel).unlink(missing_ok=True)
    index.unlink()
    return carried


def restore_worktree(repo: Path, tree: str) -> None:
    """Make the files git sees in `repo` those of `tree` (see worktree_kept)."""
    index = repo / JOURNAL / "restore.index"
    _git(repo, "read-tree", tree, index=index)
    changed = _git(repo, "diff", "--name-only", "-z", index=index)     # modified or deleted since
    if changed:
        _git(repo, "checkout-index", "--force", "-z", "--stdin", index=index, stdin=changed)
    for _ in range(5):          # a removed .gitignore bares the files it hid: another pass takes them
        created = [p for p in _git(repo, "ls-files", "-z", "--others", "--exclude-standard",
                                   index=index).decode().split("\0") if p]
        if not created:
            break
        for rel in created:
            (repo / rel).unlink()
            for parent in (repo / rel).parents:     # and the folders it leaves empty
                if parent == repo or any(parent.iterdir()):
                    break
                parent.rmdir()
    index.unlink()


def save_experiment(repo_dir: Path, name: str, log, commit: str | None = None) -> None:
    """Record the workspace as the DVC experiment `name` (params, dvc.lock, metrics, plots), then
    share it: outputs to the default DVC remote and the experiment to the git remote, where set.
    Its message names the flow run and the commit it ran (`commit`)."""
    # `exp save` leaves out git-tracked outputs that git does not know yet (the first run's metrics)
    untracked = [arg for path in git_tracked_outputs(repo_dir) if (Path(repo_dir) / path).exists()
                 for arg in ("-I", path)]
    message = f"Prefect flow run {name}" + (f" at {commit}" if commit else "")
    dvc(repo_dir, "exp", "save", "--force", "-n", name, "-m", message, *untracked)
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
    """`dvc metrics diff --md` of the workspace against the last commit: '' when nothing changed,
    and when the command fails a line saying so, with its exit status and DVC's last words."""
    proc = run(dvc_cmd("metrics", "diff", "--md"), repo_dir, capture_output=True, text=True)
    if proc.returncode == 0:
        return proc.stdout.strip()
    why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
    return f"(`dvc metrics diff` failed with exit status {proc.returncode}: {' '.join(why) or 'no message'})"


def experiment_commit(repo_dir: Path, name: str) -> str:
    """The git commit DVC saved the experiment `name` as (refs/exps/.../<name>)."""
    refs = run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], repo_dir,
               capture_output=True, text=True, check=True).stdout.splitlines()
    found = [sha for sha, ref in (line.split(" ", 1) for line in refs) if ref.rsplit("/", 1)[-1] == name]
    if not found:
        raise StageFailed(f"no DVC experiment named {name} in {repo_dir}")
    return found[0]
