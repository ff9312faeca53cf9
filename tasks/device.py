"""Device and distribution strategy: GPU(s) when present, the CPU otherwise, one log line either way.

The choice is a table, not an if-chain: with several GPUs MirroredStrategy, mixed_float16 and XLA;
with one GPU the default strategy, mixed_float16 and XLA; on the CPU float32 without XLA (XLA made
the batch-norm CNN slower, 1,096 -> 863 images/s, on a 2-core AMD EPYC virtual machine). Every plan
runs 16 training steps per call into the compiled graph (Keras' steps_per_execution): on that
machine it cost 5-10% fewer CPU seconds per image than one step per call, as Python's per-step
overhead goes. To re-measure on another machine, change the "cpu" plan below and compare the
images/s and CPU seconds that `make bench` prints. On the CPU, TensorFlow's oneDNN kernels are
switched on or off per CPU kind by what measured faster (set_onednn, before TensorFlow is imported),
and Keras's precision chosen per bf16 hardware by speed and accuracy both (cpu_precision).
"""
import dataclasses
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from digits.params import ParamsError

# TensorFlow turns its oneDNN kernels on by default only where the CPU has one of these
# (tensorflow/core/util/port.cc); elsewhere (AVX2-only CPUs) it trains on Eigen's kernels.
ONEDNN_BY_DEFAULT = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"}
# Which setting trained the quick preset faster, per CPU kind, measured by `python -m bench.onednn`
# on real machines of that kind (bench/results/onednn.json, docs/benchmarks.md); a kind not here
# keeps TensorFlow's default. avx512: on (2-core Xeon with AMX, 0.64x the CPU seconds per image of off
# in run 3; Zen 4 EPYC, 1.37x the images/s). avx2: not measured with this benchmark (TensorFlow's default: off).
ONEDNN_FASTER = {"avx512": True}
ONEDNN_ENV = "DIGITS_ONEDNN"          # auto (the table above), on or off


def cpu_kind(flags: set) -> str:
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


def onednn_choice(flags: set, preference: str = "auto", faster: dict | None = None) -> tuple[bool, str]:
    """(oneDNN on?, why) for a CPU with these /proc/cpuinfo flags and a preference: "on" or "off"
    as configured, or "auto": the measured faster setting for this CPU kind, else TensorFlow's default."""
    if preference in ("on", "off"):
        return preference == "on", f"${ONEDNN_ENV}={preference}"
    if preference != "auto":
        raise ParamsError(f"${ONEDNN_ENV}: {preference!r} is not auto, on or off")
    kind, faster = cpu_kind(flags), ONEDNN_FASTER if faster is None else faster
    if kind in faster:
        return faster[kind], f"measured faster on {kind.upper().replace('AVX512', 'AVX-512')}"
    return bool(flags & ONEDNN_BY_DEFAULT), f"TensorFlow's default on {kind} (not measured)"


_onednn = ""                          # set_onednn's line, for the device description


def onednn_request(environ=os.environ) -> bool | None:
    """The setting the user asked for: TF_ENABLE_ONEDNN_OPTS when set (it wins), else
    $DIGITS_ONEDNN=on|off; None for auto. Read it before set_onednn, which writes its choice
    into TF_ENABLE_ONEDNN_OPTS."""
    if "TF_ENABLE_ONEDNN_OPTS" in environ:
        return environ["TF_ENABLE_ONEDNN_OPTS"] not in ("0", "false", "False")
    preference = environ.get(ONEDNN_ENV, "auto")
    return None if preference == "auto" else onednn_choice(set(), preference)[0]


def set_onednn(flags: set | None = None, environ=os.environ) -> str:
    """Set TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported, from $DIGITS_ONEDNN (default auto),
    unless the user set TF_ENABLE_ONEDNN_OPTS; return the line the device description shows."""
    global _onednn
    if "TF_ENABLE_ONEDNN_OPTS" in environ:
        on, why = onednn_request(environ), "TF_ENABLE_ONEDNN_OPTS set"
    else:
        if flags is None:
            from tasks import machine
            flags = machine.cpu_flags()
        on, why = onednn_choice(flags, environ.get(ONEDNN_ENV, "auto"))
        if "tensorflow" in sys.modules:
            raise RuntimeError("set_onednn() must run before TensorFlow is imported")
        environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if on else "0"
    _onednn = f"oneDNN: {'on' if on else 'off'} ({why})"
    return _onednn


def onednn_line() -> str:
    """set_onednn's line, or TensorFlow's own state where it did not run (a library caller)."""
    if _onednn:
        return _onednn
    from tensorflow.python.util import _pywrap_util_port
    return f"oneDNN: {'on' if _pywrap_util_port.IsMklEnabled() else 'off'} (TensorFlow's setting)"


# Keras's precision on the CPU, per bf16 hardware (bf16_kind): mixed_bfloat16 where it trains faster
# AND the full quick recipe keeps its accuracy (docs/benchmarks.md); a kind not here trains in float32.
# amx (2-core Xeon with AMX): 19-21% less CPU per image in `python -m bench.onednn`, but the quick member
# reached 99.40% validation (36 errors) against float32's three-seed spread of 99.45-99.52%: not the
# default. avx512_bf16 without AMX (Zen 4): not measured. DIGITS_PRECISION=mixed_bfloat16 opts in.
BF16_FASTER: dict[str, bool] = {}
PRECISION_ENV = "DIGITS_PRECISION"    # auto (the table above), float32 or mixed_bfloat16


def bf16_kind(flags: set) -> str:
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "none"


def cpu_precision(flags: set, preference: str = "auto", faster: dict | None = None) -> str:
    """The Keras dtype policy for training on a CPU with these flags: as configured, or for
    "auto" mixed_bfloat16 where BF16_FASTER says so for this CPU's bf16 hardware, else float32."""
    if preference in ("float32", "mixed_bfloat16"):
        return preference
    if preference != "auto":
        raise ParamsError(f"${PRECISION_ENV}: {preference!r} is not auto, float32 or mixed_bfloat16")
    faster = BF16_FASTER if faster is None else faster
    return "mixed_bfloat16" if faster.get(bf16_kind(flags)) else "float32"


def thread_ticks(pid: int | None = None) -> dict[int, int]:
    """CPU time (user + system, clock ticks) of each thread of a process, from /proc."""
    ticks = {}
    for stat in Path(f"/proc/{pid or os.getpid()}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:                   # the thread ended
            continue
        ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    return ticks


def spread_plan(ticks: dict[int, int], main: int, cpus: list[int]) -> dict[int, int]:
    """{thread: cpu}: the len(cpus) busiest threads other than `main`, one per CPU."""
    busiest = sorted((t for t in ticks if t != main), key=lambda t: (-ticks[t], t))[:len(cpus)]
    return {t: cpus[i] for i, t in enumerate(busiest) if ticks[t] > 0}


PIN_ENV = "DIGITS_PIN_WORKERS"       # 1: spread_workers() once training runs; 0 (the default): not


def spread_workers() -> str:
    """Pin TensorFlow's busiest worker threads (its intra-op pool, which runs the oneDNN kernels)
    one per CPU this process may use; call it after a few training steps. A training process on
    two cores runs either with both pool threads working together or, for minutes at a time, with
    them taking turns at half the speed; pinning was meant to keep them apart, and measured it
    does not decide which (docs/benchmarks.md), so it is opt-in ($DIGITS_PIN_WORKERS=1)."""
    if not hasattr(os, "sched_setaffinity"):
        return "threads: not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "threads: not pinned (one CPU)"
    plan = spread_plan(thread_ticks(), threading.get_native_id(), cpus)
    for thread, cpu in plan.items():
        try:
            os.sched_setaffinity(thread, {cpu})
        except OSError:                   # the thread ended meanwhile
            pass
    return f"threads: {len(plan)} busiest workers pinned one per CPU ({', '.join(map(str, cpus))})"


@dataclass(frozen=True)
class Plan:
    device: str            # "cpu", "gpu" or "gpus"
    strategy: str          # "default" or "mirrored"
    precision: str         # Keras dtype policy
    jit_compile: bool      # XLA
    steps_per_execution: int = 16
    spread_threads: bool = False  # spread_workers() once training runs

    def describe(self, n_gpus: int, onednn: str = "") -> str:
        where = "CPU" if n_gpus == 0 else f"{n_gpus} GPU" + ("s" if n_gpus > 1 else "")
        return (f"device: {where}; strategy: {self.strategy}; precision: {self.precision}; "
                f"XLA: {'on' if self.jit_compile else 'off'}; steps per call: {self.steps_per_execution}"
                + (f"; {onednn}" if onednn and n_gpus == 0 else ""))


PLANS = {
    "cpu": Plan("cpu", "default", "float32", False),
    "gpu": Plan("gpu", "default", "mixed_float16", True),
    "gpus": Plan("gpus", "mirrored", "mixed_float16", True),
}


def plan_for(n_gpus: int, flags: set | None = None, environ=os.environ) -> Plan:
    """The plan for this many GPUs; on the CPU its precision is cpu_precision's for these
    /proc/cpuinfo flags (default: this machine's) and $DIGITS_PRECISION (default auto), and its
    workers are pinned where $DIGITS_PIN_WORKERS is 1."""
    plan = PLANS["cpu" if n_gpus == 0 else "gpu" if n_gpus == 1 else "gpus"]
    if n_gpus:
        return plan
    if flags is None:
        from tasks import machine
        flags = machine.cpu_flags()
    pin = environ.get(PIN_ENV, "0")
    if pin not in ("0", "1"):
        raise ParamsError(f"${PIN_ENV}: {pin!r} is not 0 or 1")
    return dataclasses.replace(plan, precision=cpu_precision(flags, environ.get(PRECISION_ENV, "auto")),
                               spread_threads=pin == "1")


def count_gpus() -> int:
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU"))


def activate(plan: Plan):
    """Set the precision policy and return the strategy whose scope the model is built in."""
    import keras
    import tensorflow as tf
    keras.mixed_precision.set_dtype_policy(plan.precision)
    return tf.distribute.MirroredStrategy() if plan.strategy == "mirrored" else tf.distribute.get_strategy()
