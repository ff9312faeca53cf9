"""Bringing a worker's clone to the head of its deployed branch, fast-forward only (no Prefect here).

A scheduled run starts here: new commits of the branch reach the schedule without anyone pulling
on the worker. A clone that holds local changes, is on another branch, or has commits of its own
that the branch does not have is refused before anything is touched, with a message naming the
files or commits; the run then fails at once (nothing to retry).
"""
import subprocess
from pathlib import Path

LISTED = 20         # files or commits named in a refusal before "... and N more"


class CloneRefused(RuntimeError):
    """The clone cannot be brought forward without losing or mixing someone's work."""


def git(repo: Path, *args, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def head_or_none(repo: Path) -> str | None:
    """The commit checked out, or None in a repository (or folder) with none yet."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _listed(lines: list[str]) -> str:
    more = f"\n  ... and {len(lines) - LISTED} more" if len(lines) > LISTED else ""
    return "\n  " + "\n  ".join(lines[:LISTED]) + more


def remote_of(repo: Path) -> str | None:
    remotes = git(repo, "remote").split()
    return "origin" if "origin" in remotes else (remotes[0] if remotes else None)


def fast_forward(repo: Path, branch: str) -> dict:
    """Fetch `branch` from the clone's remote and fast-forward to it. Returns {before, commit,
    commits} (commits: one line each, oldest first; empty when already there). Raises
    CloneRefused, touching nothing, if the clone has local changes, is on another branch or has
    diverged; RuntimeError if there is no remote or the fetch fails."""
    repo = Path(repo)
    remote = remote_of(repo)
    if remote is None:
        raise RuntimeError(f"{repo} has no git remote to fetch {branch} from (git remote add origin URL)")
    current = git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    if current != branch:
        raise CloneRefused(f"{repo} is on {current!r}, not the deployed branch {branch!r}: "
                           f"`git -C {repo} switch {branch}` first")
    dirty = [line for line in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines() if line]
    if dirty:
        raise CloneRefused(f"{repo} has local changes; commit, stash or remove them before a scheduled run "
                           f"brings it to {remote}/{branch}:{_listed(dirty)}")
    git(repo, "fetch", "--quiet", remote, branch)
    target = git(repo, "rev-parse", "FETCH_HEAD").strip()
    before = head(repo)
    if before == target:
        return {"before": before, "commit": before, "commits": []}
    if subprocess.run(["git", "merge-base", "--is-ancestor", before, target], cwd=repo).returncode != 0:
        local = git(repo, "log", "--oneline", "--no-decorate", f"{target}..{before}").splitlines()
        raise CloneRefused(f"{repo} cannot fast-forward to {remote}/{branch} ({target[:12]}): its branch has "
                           f"commits that {remote}/{branch} does not have:{_listed(local)}")
    git(repo, "merge", "--ff-only", "--quiet", target)
    commits = git(repo, "log", "--oneline", "--no-decorate", "--reverse", f"{before}..{target}").splitlines()
    return {"before": before, "commit": target, "commits": commits}
