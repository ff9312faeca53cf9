"""oneDNN, worker threads and precision: the quick preset's training step in each setting, on this
machine, for the tables in tasks/device.py (ONEDNN_FASTER, BF16_FASTER).

    python -m bench.onednn [--rounds 3] [--steps 96] [--augment full|affine|none]

Settings: oneDNN off or on (TensorFlow reads TF_ENABLE_ONEDNN_OPTS when it is imported, so each
run is a process of its own), TensorFlow's busiest worker threads left to the scheduler or pinned
one per CPU (tasks.device.spread_workers; the train stage's DIGITS_PIN_WORKERS=1), and, on a CPU with bf16
hardware (AMX or AVX512_BF16), Keras's mixed_bfloat16 policy. Each row: images/s, CPU seconds per
1,000 images and cores busy (CPU seconds over wall seconds); rounds alternate the order. A process
trains either with both cores working or, in spells that span processes, with them taking turns at a
fixed 1,195 images/s (599 with oneDNN off) whatever the setting, and about the same CPU seconds per image
in both (docs/benchmarks.md): so images/s and cores busy are the fastest round's, CPU seconds per
1,000 images the median round's, and that work decides which setting is faster (`decide`).
`--augment affine` or `none` drops the degradations or all augmentation, to price them.
Rows merge into bench/results/onednn.json under this machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench import ROOT

RESULTS = ROOT / "bench/results/onednn.json"
# setting: (oneDNN on, threads pinned, precision)
SETTINGS = {"off": (False, False, "float32"), "on": (True, False, "float32"),
            "off, threads pinned": (False, True, "float32"), "on, threads pinned": (True, True, "float32"),
            "on, threads pinned, mixed_bfloat16": (True, True, "mixed_bfloat16")}
AUGMENT = {"full": {}, "affine": {"degrade": 0.0}, "none": {"rotation": 0, "zoom": 0, "shift": 0, "degrade": 0.0}}


def worker(steps: int, setting: str, augment: str) -> None:
    """Train the quick preset's model for `steps` batches of random digits in one setting; print
    images/s, CPU s per 1,000 images, cores busy and whether oneDNN was on."""
    import dataclasses

    import keras
    import numpy as np
    from tensorflow.python.util import _pywrap_util_port

    from digits import model, params
    from tasks import device, train
    cfg = params.load(ROOT / "params.yaml").train.presets["quick"]
    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, **AUGMENT[augment]))
    _, pinned, precision = SETTINGS[setting]
    keras.mixed_precision.set_dtype_policy(precision)
    rng = np.random.default_rng(0)
    n = steps * cfg.batch_size
    x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, n)]
    keras.utils.set_random_seed(0)
    net = model.build(cfg.arch, cfg.augment, seed=0)
    net.compile(optimizer=train.make_optimizer(cfg, steps), loss="categorical_crossentropy",
                metrics=["accuracy"], steps_per_execution=16)
    net.fit(x[:16 * cfg.batch_size], y[:16 * cfg.batch_size], batch_size=cfg.batch_size, verbose=0)  # traces
    if pinned:
        device.spread_workers()
    t0, c0 = time.perf_counter(), time.process_time()
    net.fit(x, y, batch_size=cfg.batch_size, epochs=1, verbose=0)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"images_per_second": n / seconds, "cpu_seconds_per_1000": 1000 * cpu / n,
                      "cores_busy": cpu / seconds, "onednn": bool(_pywrap_util_port.IsMklEnabled())}))


def measure(setting: str, steps: int, augment: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
    env |= {"TF_ENABLE_ONEDNN_OPTS": "1" if SETTINGS[setting][0] else "0", "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "bench.onednn", "--worker", "--steps", str(steps),
                          "--setting", setting, "--augment", augment], cwd=ROOT,
                         env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["onednn"] == SETTINGS[setting][0], f"{setting}: TensorFlow reports oneDNN {result['onednn']}"
    return result


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """One row per setting from its rounds (measure's dicts): images/s and cores busy of the fastest
    round, CPU seconds per 1,000 images of the median round, and every round of both."""
    rows = {}
    for setting, rounds in runs.items():
        best = max(rounds, key=lambda r: r["images_per_second"])
        cpu = [r["cpu_seconds_per_1000"] for r in rounds]
        rows[setting] = {"images_per_second": round(best["images_per_second"], 1),
                         "cores_busy": round(best["cores_busy"], 2),
                         "cpu_seconds_per_1000_images": round(statistics.median(cpu), 3),
                         "all_rounds_images_per_second": [round(r["images_per_second"], 1) for r in rounds],
                         "all_rounds_cpu_seconds_per_1000_images": [round(c, 3) for c in cpu]}
    return rows


def decide(rows: dict[str, dict], cpu_kind: str, bf16_kind: str) -> dict[str, bool]:
    """Which setting is faster, by the work per image (CPU seconds per 1,000 images, median round),
    which a slow spell leaves as it is: oneDNN on against off, unpinned as the train stage runs,
    and mixed_bfloat16 against float32 where the CPU has bf16 hardware."""
    cpu = lambda s: rows[s]["cpu_seconds_per_1000_images"]
    faster = {f"oneDNN, {cpu_kind}": cpu("on") < cpu("off")}
    if "on, threads pinned, mixed_bfloat16" in rows:
        faster[f"mixed_bfloat16, {bf16_kind}"] = cpu("on, threads pinned, mixed_bfloat16") < cpu("on, threads pinned")
    return faster


def main() -> None:
    from bench import machine, table
    from tasks import device
    from tasks import machine as machine_mod
    ap = argparse.ArgumentParser(prog="python -m bench.onednn", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=96, help="batches of 128 images timed per round")
    ap.add_argument("--augment", choices=AUGMENT, default="full", help="the quick preset's augmentation, "
                    "without its degradations (affine) or none")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.steps, args.setting, args.augment)
    flags = machine_mod.cpu_flags()
    settings = [s for s in SETTINGS if "bfloat16" not in s or device.bf16_kind(flags) != "none"]
    runs = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in (settings if r % 2 == 0 else settings[::-1]):
            runs[s].append(measure(s, args.steps, args.augment))
            print(f"round {r + 1}: {s}: {runs[s][-1]['images_per_second']:.0f} images/s", flush=True)
    rows = summarize(runs)
    faster = decide(rows, device.cpu_kind(flags), device.bf16_kind(flags))
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = machine() + ("" if args.augment == "full" else f", augment {args.augment}")
    # the full quick recipe's accuracy in mixed_bfloat16 (recorded by hand from a `make repro`) stays
    kept = {k: v for k, v in doc.get(key, {}).items() if k.startswith("quick recipe")}
    doc[key] = {"date": time.strftime("%Y-%m-%d"), "command": f"python -m bench.onednn --rounds {args.rounds} "
                f"--steps {args.steps} --augment {args.augment}", "settings": rows, "faster": faster} | kept
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    base = rows["off"]["cpu_seconds_per_1000_images"]
    table(f"quick preset training step, augmentation {args.augment} ({machine()})",
          ["setting", "images/s (best round)", "cores busy (best round)", "CPU s / 1,000 images (median)",
           "CPU vs off", "rounds: images/s"],
          [[s, f"{r['images_per_second']:.0f}", f"{r['cores_busy']:.2f}", f"{r['cpu_seconds_per_1000_images']:.3f}",
            f"{r['cpu_seconds_per_1000_images'] / base:.2f}x", ", ".join(f"{v:.0f}" for v in r["all_rounds_images_per_second"])]
           for s, r in rows.items()])


if __name__ == "__main__":
    main()
