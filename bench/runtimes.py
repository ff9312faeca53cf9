"""The recognizer's runtimes side by side: python -m bench.runtimes [--images 28000] [--requests 300]

  predict  images/s of each runtime (keras, onnx, litert) on `--images` test images (test.parquet,
           repeated to that count: Kaggle's test.csv has 28,000), the model users get with its
           test-time views; each runtime in its own fresh process, its load time beside it
  server   `python -m digits.server` per runtime, one after another on this machine: seconds from
           the command's start to its first answer to POST /predict, the process's resident memory
           after that answer, then p50/p95 of `--requests` sequential uploads of one drawing. keras
           runs in this environment; onnx in .venv-serve (`make setup-serve`: no TensorFlow) when it
           exists, else here (marked); targets for onnx: at most 200 MB and 2 s
Every row names the machine and goes to bench/results/runtimes.json. Needs the model and its
exports (`dvc repro export`).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import ROOT, free_port, machine, merge_rows, table
from bench.serve import percentiles
from probes.render import drawn_digit

RESULTS = ROOT / "bench" / "results" / "runtimes.json"
RUNTIMES = ("keras", "onnx", "litert")
LIGHT = ROOT / ".venv-serve" / "bin" / "python"

# Run in a fresh interpreter per runtime: load the model users get, then time predicting the images.
PREDICT = """
import json, sys, time
import numpy as np, pandas as pd
t0 = time.perf_counter()
from digits import recognize
from digits.io import to_images
runtime, n = sys.argv[1], int(sys.argv[2])
predictor = recognize.load_predictor(runtime=runtime)
loaded = time.perf_counter() - t0
x = to_images(pd.read_parquet("data/parquet/test.parquet"))[0]
x = np.resize(x, (n, *x.shape[1:]))
t0 = time.perf_counter()
answers = np.concatenate([predictor(x[i:i + 256]).argmax(axis=1) for i in range(0, n, 256)])
print(json.dumps({"load_seconds": loaded, "seconds": time.perf_counter() - t0,
                  "answers": np.bincount(answers, minlength=10).tolist()}))
"""


def bench_predict(n: int) -> list:
    rows, counts = [], {}
    for runtime in RUNTIMES:
        out = subprocess.run([sys.executable, "-c", PREDICT, runtime, str(n)], cwd=ROOT, capture_output=True,
                             text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
        if out.returncode:
            raise SystemExit(f"{runtime}: {out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        counts[runtime] = r["answers"]
        rows.append({"part": "predict", "runtime": runtime, "images": n, "images_per_second": round(n / r["seconds"], 1),
                     "load_seconds": round(r["load_seconds"], 2)})
    same = len({json.dumps(c) for c in counts.values()}) == 1
    table(f"Predicting {n:,} test images with the model users get ({machine()})",
          ["runtime", "images/s", "load s"], [[r["runtime"], f"{r['images_per_second']:,.0f}", r["load_seconds"]]
                                             for r in rows])
    print(f"answers per digit identical across runtimes: {same}")
    return rows


def serve_once(runtime: str, requests: int) -> dict:
    import httpx
    import psutil
    python = LIGHT if runtime != "keras" and LIGHT.exists() else Path(sys.executable)
    port, image = free_port(), drawn_digit()
    env = os.environ | {"DIGITS_FEEDBACK_DB": "sqlite:///:memory:"}
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"} if python == LIGHT else env | {"PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(python), "-m", "digits.server", "--port", str(port), "--runtime", runtime,
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{runtime}: the server exited {proc.returncode}")
                try:
                    if client.post("/predict", files={"file": ("d.png", image, "image/png")}).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            first = time.perf_counter() - t0
            rss = psutil.Process(proc.pid).memory_info().rss
            seconds = []
            for _ in range(requests):
                t1 = time.perf_counter()
                assert client.post("/predict", files={"file": ("d.png", image, "image/png")}).status_code == 200
                seconds.append(time.perf_counter() - t1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    p50, p95 = percentiles(seconds)
    environment = "light" if python == LIGHT else "full" if runtime == "keras" else "full (no .venv-serve)"
    return {"part": "server", "runtime": runtime, "environment": environment,
            "first_answer_seconds": round(first, 2), "rss_mb": round(rss / 1e6), "p50_ms": float(p50),
            "p95_ms": float(p95), "requests": requests}


def bench_server(requests: int) -> list:
    rows = [serve_once(runtime, requests) for runtime in RUNTIMES]
    table(f"python -m digits.server per runtime, {requests} sequential uploads of one drawing ({machine()})",
          ["runtime", "environment", "start to first answer s", "RSS MB", "p50 ms", "p95 ms"],
          [[r["runtime"], r["environment"], r["first_answer_seconds"], r["rss_mb"], r["p50_ms"], r["p95_ms"]]
           for r in rows])
    print("targets for onnx without TensorFlow: at most 200 MB after the first answer, at most 2 s to it")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="predict,server", help="comma-separated parts: predict, server")
    ap.add_argument("--images", type=int, default=28_000)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args(argv)
    parts, rows = args.only.split(","), []
    if "predict" in parts:
        rows += bench_predict(args.images)
    if "server" in parts:
        rows += bench_server(args.requests)
    stamp = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    merge_rows(RESULTS, [r | stamp for r in rows], key=lambda r: (r["machine"], r["part"], r["runtime"]))


if __name__ == "__main__":
    main()
