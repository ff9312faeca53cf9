"""The model registry: promoted versions as git tags in GTO's naming, and the copy users get.

A promoted model is registered as a version tag `digits@vX.Y.Z` on the commit that trained it (a
flow run's DVC experiment, or any commit) and assigned to the production stage with a tag
`digits#prod#N`, as DVC's model registry (GTO) does it: `git tag` lists them, `gto show` draws the
table, `dvc artifacts get . digits --stage prod` fetches the production model. Beside the tags,
serving/ keeps a copy of each promoted version's model files and serving/production.json names the
one users get; the CLI, the API and the drawing page read it (digits/recognize.py), and a running
API switches to a newly promoted version without a restart.

    python -m digits.registry show                   # versions, the production one first
    python -m digits.registry rollback v1.0.0        # production back to an earlier version
"""
import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from digits import paths
from digits.io import atomic_path, sha256, write_json

ARTIFACT = "digits"         # the model's name in dvc.yaml's artifacts: section
STAGE = "prod"


class RegistryError(RuntimeError):
    """A version that does not exist, or a registry operation that cannot be done."""


def production(root: Path = Path(".")) -> dict | None:
    """serving/production.json of the repository at `root`: {version, files, tta, commit, ...}, or
    None when nothing was promoted there."""
    f = Path(root) / paths.PRODUCTION
    return json.loads(f.read_text()) if f.exists() else None


def production_files(record: dict, root: Path = Path(".")) -> dict:
    """{member: model file} of a production record, as paths under `root`."""
    return {name: Path(root) / rel for name, rel in record["files"].items()}


def _versions(root: Path) -> list:
    """Registered versions, newest first, as GTO reads the tags."""
    from gto import api
    from gto.exceptions import ArtifactNotFound
    try:
        return [v for v in api.show(str(root), ARTIFACT, table=False) if v.get("version")]
    except ArtifactNotFound:            # no version registered yet
        return []


def versions(root: Path = Path(".")) -> list[dict]:
    """[{version, commit, created_at, production}] from the git tags, newest first; production is
    the version serving/production.json names (GTO's own stage lookup can disagree after a rollback
    within its tag-time resolution, so the served record decides)."""
    current = (production(root) or {}).get("version")
    return [{"version": v["version"], "commit": v.get("commit_hexsha"), "created_at": str(v.get("created_at")),
             "production": v["version"] == current} for v in _versions(Path(root))]


def _next_version(root: Path) -> str:
    """v1.0.0 for the first promoted model, then the next minor version."""
    import semver
    known = [semver.Version.parse(v["version"].lstrip("v")) for v in _versions(root)]
    if not known:
        return "v1.0.0"
    return "v" + str(max(known).bump_minor())


def _assign(root: Path, version: str, message: str) -> None:
    """A new `digits#prod#N` tag for `version`. GTO orders assignments by their tags' time in
    whole seconds: a second assignment within the same second would tie, so wait for the next."""
    from gto import api
    last = [t for t in _git(root, "tag", "-l", f"{ARTIFACT}#{STAGE}#*", "--format=%(taggerdate:unix)").split() if t]
    if last:
        time.sleep(max(0.0, max(map(int, last)) + 1.05 - time.time()))
    api.assign(str(root), ARTIFACT, STAGE, version=version, message=message, force=True)


def _git(root: Path, *args) -> str:
    import subprocess
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _publish(root: Path, version: str, commit: str, files: dict, extra: dict) -> dict:
    """Point serving/production.json at `version` (whole or not at all)."""
    record = {"version": version, "commit": commit, "files": {k: str(v) for k, v in files.items()},
              "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")} | extra
    write_json(Path(root) / paths.PRODUCTION, record)
    return record


def promote(root: Path, commit: str, files: dict, tta=(), figures: dict | None = None, message: str = "") -> dict:
    """Register the model `files` ({member: model file}) trained at `commit` as the next version,
    assign it to production, keep a copy under serving/<version>/ and make it the one users get.
    `figures` (gate and robustness figures) travel with the record, for the next comparison."""
    from gto import api
    root = Path(root)
    version = _next_version(root)
    target = root / paths.SERVING_DIR / version
    with atomic_path(target, directory=True) as tmp:
        for name, f in files.items():
            shutil.copy2(f, tmp / Path(f).name)
    copied = {name: (paths.SERVING_DIR / version / Path(f).name) for name, f in files.items()}
    api.register(str(root), ARTIFACT, commit, version=version, message=message or f"promoted {version}")
    _assign(root, version, message or f"{version} to production")
    sums = {name: sha256(root / f) for name, f in copied.items()}
    record = _publish(root, version, commit, copied, {"tta": list(tta), "sha256": sums, "figures": figures or {}})
    keep_record(root, record)
    return record


def rollback(root: Path, version: str) -> dict:
    """Make an earlier promoted `version` the production one again (a new stage tag, so the
    history keeps both); its copy under serving/ must exist."""
    root = Path(root)
    known = {v["version"]: v for v in versions(root)}
    if version not in known:
        raise RegistryError(f"no version {version} of {ARTIFACT} in {root} (known: {', '.join(known) or 'none'})")
    kept = root / paths.SERVING_DIR / version / "record.json"
    if not kept.exists():
        raise RegistryError(f"{version} has no copy under {root / paths.SERVING_DIR / version}: fetch it with "
                            f"`dvc artifacts get . {ARTIFACT} --rev {version}` first")
    record = json.loads(kept.read_text())
    _assign(root, version, f"rollback to {version}")
    return _publish(root, version, record["commit"], record["files"],
                    {k: record[k] for k in ("tta", "sha256", "figures")} | {"rollback": True})


def keep_record(root: Path, record: dict) -> None:
    """serving/<version>/record.json: what rollback needs to make it production again."""
    write_json(Path(root) / paths.SERVING_DIR / record["version"] / "record.json", record)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m digits.registry", description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: here)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="the promoted versions, newest first; * marks production")
    back = sub.add_parser("rollback", help="make an earlier version the production one")
    back.add_argument("version")
    args = ap.parse_args(argv)
    try:
        if args.command == "show":
            current = (production(args.repo) or {}).get("version")
            for v in versions(args.repo):
                mark = "*" if v["production"] else " "
                print(f"{mark} {v['version']}  {(v['commit'] or '')[:12]}  {v['created_at']}")
            if current is None:
                print("nothing promoted: users get the workspace's models")
        else:
            record = rollback(args.repo, args.version)
            print(f"{ARTIFACT} {record['version']} is in production again ({paths.PRODUCTION})")
    except RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
