"""oneDNN on or off: images/s of the quick preset's training step with TensorFlow's oneDNN kernels
on and off, on this machine, for the oneDNN table in tasks/device.py (ONEDNN_FASTER).

    python -m bench.onednn [--rounds 3] [--steps 96]

Each setting trains in a process of its own (TensorFlow reads TF_ENABLE_ONEDNN_OPTS when it is
imported); rounds alternate the order and the fastest round of each setting counts. On a CPU with
AVX-512, a third setting runs oneDNN limited to AVX2 instructions (ONEDNN_MAX_CPU_ISA=AVX2): oneDNN
picks its kernels by instruction set at run time, and TensorFlow's Eigen kernels are the same build
on every x86 CPU, so that pair is this machine's stand-in for an AVX2-only CPU; it is labelled so,
and the table keeps it apart from a real AVX2 machine's row. Rows merge into
bench/results/onednn.json under this machine's description.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from bench import ROOT

RESULTS = ROOT / "bench/results/onednn.json"
SETTINGS = {"off": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
            "on, AVX2 instructions only": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def worker(steps: int) -> None:
    """Train the quick preset's model for `steps` batches of random digits; print images/s, CPU s
    per 1,000 images and whether oneDNN was on."""
    import keras
    import numpy as np
    from tensorflow.python.util import _pywrap_util_port

    from digits import model, params
    from tasks import train
    cfg = params.load(ROOT / "params.yaml").train.presets["quick"]
    rng = np.random.default_rng(0)
    n = steps * cfg.batch_size
    x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, n)]
    keras.utils.set_random_seed(0)
    net = model.build(cfg.arch, cfg.augment, seed=0)
    net.compile(optimizer=train.make_optimizer(cfg, steps), loss="categorical_crossentropy",
                metrics=["accuracy"], steps_per_execution=16)
    net.fit(x[:16 * cfg.batch_size], y[:16 * cfg.batch_size], batch_size=cfg.batch_size, verbose=0)  # traces
    t0, c0 = time.perf_counter(), time.process_time()
    net.fit(x, y, batch_size=cfg.batch_size, epochs=1, verbose=0)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"images_per_second": n / seconds, "cpu_seconds_per_1000": 1000 * cpu / n,
                      "onednn": bool(_pywrap_util_port.IsMklEnabled())}))


def measure(setting: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
    env |= SETTINGS[setting] | {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "bench.onednn", "--worker", "--steps", str(steps)], cwd=ROOT,
                         env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["onednn"] == (setting != "off"), f"{setting}: TensorFlow reports oneDNN {result['onednn']}"
    return result


def main() -> None:
    from bench import machine, table
    from tasks import device
    from tasks import machine as machine_mod
    ap = argparse.ArgumentParser(prog="python -m bench.onednn", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=96, help="batches of 128 images timed per round")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.steps)
    flags = machine_mod.cpu_flags()
    settings = [s for s in SETTINGS if "AVX2" not in s or "avx512f" in flags]
    runs = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in (settings if r % 2 == 0 else settings[::-1]):
            runs[s].append(measure(s, args.steps))
            print(f"round {r + 1}: {s}: {runs[s][-1]['images_per_second']:.0f} images/s", flush=True)
    best = {s: max(rs, key=lambda r: r["images_per_second"]) for s, rs in runs.items()}
    rows = {s: {"images_per_second": round(b["images_per_second"], 1),
                "cpu_seconds_per_1000_images": round(b["cpu_seconds_per_1000"], 2),
                "all_rounds_images_per_second": [round(r["images_per_second"], 1) for r in runs[s]]}
            for s, b in best.items()}
    kind = device.cpu_kind(flags)
    faster = {kind: best["on"]["images_per_second"] > best["off"]["images_per_second"]}
    if "on, AVX2 instructions only" in best:
        faster["avx2 (oneDNN limited to AVX2 on this CPU)"] = (
            best["on, AVX2 instructions only"]["images_per_second"] > best["off"]["images_per_second"])
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc[machine()] = {"date": time.strftime("%Y-%m-%d"), "command": f"python -m bench.onednn --rounds {args.rounds} "
                      f"--steps {args.steps}", "settings": rows, "oneDNN faster": faster}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    base = best["off"]["images_per_second"]
    table(f"oneDNN, quick preset training step ({machine()})",
          ["setting", "images/s (best round)", "CPU s / 1,000 images", "vs off", "rounds"],
          [[s, f"{b['images_per_second']:.0f}", f"{b['cpu_seconds_per_1000']:.2f}",
            f"{b['images_per_second'] / base:.2f}x", ", ".join(f"{r['images_per_second']:.0f}" for r in runs[s])]
           for s, b in best.items()])


if __name__ == "__main__":
    main()
