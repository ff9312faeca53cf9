"""Members one after the other or side by side: the wall time of N members of a preset, each
trained in a process of its own as the flow's train stages are, first one after the other with
TensorFlow's default threads (what `dvc repro` does), then all at once, each with its share of
the cores (flows.dvc_ops.thread_share: what the flow's train_concurrency sets).

    python -m bench.side_by_side                        # two lite members, seeds 1 and 2
    python -m bench.side_by_side --preset quick --seeds 42,1

Members train into a temporary folder (nothing reused, nothing kept; the split must exist:
`dvc repro split`). Rows merge into bench/results/side_by_side.json by (machine, preset, seeds,
mode).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT, machine, merge_rows, table

RESULTS = ROOT / "bench/results/side_by_side.json"


def key(row: dict) -> tuple:
    """Rows of one machine, preset, seeds and mode replace each other in the results file."""
    return row["machine"], row["preset"], tuple(row["seeds"]), row["mode"]


def worker(preset: str, seed: int, folder: str) -> None:
    """Train one member into `folder` (Keras' per-epoch lines on stdout); its figures go to
    `folder`/result.json."""
    from tasks import device
    device.set_onednn()
    import pandas as pd

    from bench.ensemble import train_member
    from digits import params, paths
    p = params.load(ROOT / "params.yaml")
    tr, va = pd.read_parquet(ROOT / paths.SPLIT_TRAIN), pd.read_parquet(ROOT / paths.SPLIT_VAL)
    m = train_member(p, preset, seed, tr, va, Path(folder))
    (Path(folder) / "result.json").write_text(json.dumps({
        "train_seconds": round(m["train_seconds"], 1), "cpu_seconds": round(m["train_cpu_seconds"], 1),
        "val_accuracy": round(m["val_accuracy"], 4)}))


def start(preset: str, seed: int, folder: Path, env: dict) -> tuple:
    cmd = [sys.executable, "-m", "bench.side_by_side", "--worker", preset, str(seed), str(folder)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env), folder


def result(started: tuple) -> dict:
    proc, folder = started
    if proc.wait() != 0:
        raise RuntimeError(f"the member training into {folder} exited with {proc.returncode}")
    return json.loads((folder / "result.json").read_text())


def main() -> None:
    from flows.dvc_ops import TF_THREADS, thread_share
    ap = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--seeds", default="1,2", help="one member per seed (default %(default)s)")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.worker[2])
    seeds = [int(s) for s in args.seeds.split(",")]
    base = {k: v for k, v in os.environ.items() if k not in TF_THREADS} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    share = thread_share(len(seeds), environ={})
    rows = []
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        for mode, env in (("one after the other", base), ("side by side", base | share)):
            t0 = time.perf_counter()
            if mode == "side by side":
                procs = [start(args.preset, s, Path(tmp) / f"side-{s}", env) for s in seeds]
                members = [result(p) for p in procs]
            else:
                members = [result(start(args.preset, s, Path(tmp) / f"seq-{s}", env)) for s in seeds]
            wall = time.perf_counter() - t0
            rows.append({"machine": machine(), "preset": args.preset, "seeds": seeds, "mode": mode,
                         "threads": share[TF_THREADS[0]] if mode == "side by side" else "default",
                         "wall_seconds": round(wall, 1), "members": members, "date": time.strftime("%Y-%m-%d")})
            print(f"{mode}: {wall:.0f} s", flush=True)
    merge_rows(RESULTS, rows, key)
    first = rows[0]["wall_seconds"]
    table(f"{len(seeds)} {args.preset} members, seeds {args.seeds} ({machine()})",
          ["mode", "threads each", "wall s", "members' train s", "members' CPU s", "val acc", "vs one after the other"],
          [[r["mode"], r["threads"], f"{r['wall_seconds']:,.0f}", ", ".join(f"{m['train_seconds']:.0f}" for m in r["members"]),
            ", ".join(f"{m['cpu_seconds']:.0f}" for m in r["members"]),
            ", ".join(f"{m['val_accuracy']:.2%}" for m in r["members"]), f"{first / r['wall_seconds']:.2f}x"]
           for r in rows])
    print(f"written: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
