"""The quick preset's augmentation, part by part: what each step costs per training image.

    python -m bench.augment [--rounds 5] [--batches 200]

Each part runs as one compiled TensorFlow function on batches of 128 digits shaped like the
training data (the degradations on the 40% of a batch they touch, every family on all of those
images, as in training), in float32 as in every training run, oneDNN set as the train stage sets it. Rows:
CPU milliseconds per 1,000 training images (the fastest round) and wall milliseconds per batch.
The training step itself costs about 750-950 CPU ms per 1,000 images (`python -m bench.onednn`),
so a row's share of it is its figure over that. Rows merge into bench/results/augment.json under
this machine.
"""
import argparse
import json
import math
import time

from bench import ROOT

RESULTS = ROOT / "bench/results/augment.json"
BATCH = 128


def parts(cfg):
    """{name: function of a float batch [128, 28, 28, 1] in 0..1}, each one compiled."""
    import keras
    import tensorflow as tf

    from digits.augment import LevelNormalize, RandomAffine, RandomDegrade
    a = cfg.augment
    affine = RandomAffine(a.rotation, a.zoom, a.shift, seed=0, elastic=a.elastic, dtype="float32")
    degrade = RandomDegrade(a.degrade, seed=1, dtype="float32")
    degrade.build((None, 28, 28, 1))
    levels = LevelNormalize(dtype="float32")
    k = int(math.ceil(a.degrade * BATCH))

    def family(name):
        def run(x):
            x = x[:k]
            degrade._draws, degrade._next = keras.random.uniform((k, degrade.DRAWS), seed=degrade.generator), 0
            m = tf.ones((k, 1, 1, 1))
            return degrade._outline(x, m) if name == "outline" else getattr(degrade, "_" + name)(x, k, m)
        return run

    fns = {"a call that does nothing (x + 0)": lambda x: x + 0.0,
           "affine (rotation, zoom, shift)": lambda x: affine(x, training=True),
           "degrade, all of it": lambda x: degrade(x, training=True)}
    fns |= {f"degrade: {name}": family(name) for name in ("outline", "marks", "blur", "photometric", "noise")}
    fns["level normalize"] = levels
    return {name: tf.function(fn, jit_compile=False) for name, fn in fns.items()}


def measure(fn, x, batches: int) -> tuple[float, float]:
    """(CPU ms per 1,000 images, wall ms per batch) over `batches` calls after a warm-up."""
    for _ in range(5):
        fn(x).numpy()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        out = fn(x)
    out.numpy()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return 1e6 * cpu / (batches * BATCH), 1e3 * wall / batches


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.augment", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    from tasks import device
    device.set_onednn()                   # as the train stage does, before TensorFlow is imported
    import numpy as np

    from bench import machine, table
    from digits import params
    cfg = params.load(ROOT / "params.yaml").train.presets["quick"]
    x = (np.random.default_rng(0).random((BATCH, 28, 28, 1)) ** 4).astype("float32")   # mostly dark, like digits
    fns = parts(cfg)
    runs = {name: [] for name in fns}
    for r in range(args.rounds):
        for name, fn in (fns.items() if r % 2 == 0 else reversed(fns.items())):
            runs[name].append(measure(fn, x, args.batches))
    best = {name: min(rs) for name, rs in runs.items()}
    rows = {name: {"cpu_ms_per_1000_images": round(cpu, 1), "wall_ms_per_batch": round(wall, 2)}
            for name, (cpu, wall) in best.items()}
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc[machine()] = {"date": time.strftime("%Y-%m-%d"), "command": f"python -m bench.augment --rounds "
                      f"{args.rounds} --batches {args.batches}", "onednn": device.onednn_line(), "parts": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    table(f"the quick preset's augmentation per part, batches of {BATCH} ({machine()})",
          ["part", "CPU ms / 1,000 images", "wall ms / batch"],
          [[name, f"{r['cpu_ms_per_1000_images']:.1f}", f"{r['wall_ms_per_batch']:.2f}"] for name, r in rows.items()])


if __name__ == "__main__":
    main()
