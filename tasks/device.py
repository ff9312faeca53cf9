"""Device and distribution strategy: GPU(s) when present, the CPU otherwise, one log line either way.

The choice is a table, not an if-chain: with several GPUs MirroredStrategy, mixed_float16 and XLA;
with one GPU the default strategy, mixed_float16 and XLA; on the CPU float32 without XLA (XLA made
the batch-norm CNN slower, 1,096 -> 863 images/s, on a 2-core AMD EPYC virtual machine). Every plan
runs 16 training steps per call into the compiled graph (Keras' steps_per_execution): on that
machine it cost 5-10% fewer CPU seconds per image than one step per call, as Python's per-step
overhead goes. To re-measure on another machine, change the "cpu" plan below and compare the
images/s and CPU seconds that `make bench` prints. On the CPU, TensorFlow's oneDNN kernels are
switched on or off per CPU kind by what measured faster (set_onednn, before TensorFlow is imported).
"""
import os
import sys
from dataclasses import dataclass

from digits.params import ParamsError

# TensorFlow turns its oneDNN kernels on by default only where the CPU has one of these
# (tensorflow/core/util/port.cc); elsewhere (AVX2-only CPUs) it trains on Eigen's kernels.
ONEDNN_BY_DEFAULT = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"}
# Which setting trained the quick preset faster, per CPU kind, measured by `python -m bench.onednn`
# (bench/results/onednn.json, docs/benchmarks.md); a kind not here keeps TensorFlow's default.
# avx512: on, 1.71x the images/s of off (2-core Xeon with AVX-512/AMX). avx2: on, 1.36x, measured on
# that Xeon with oneDNN limited to AVX2 instructions (ONEDNN_MAX_CPU_ISA=AVX2; TensorFlow's Eigen
# kernels are one build for every x86 CPU): re-run the benchmark on an AVX2-only CPU to confirm.
ONEDNN_FASTER = {"avx512": True, "avx2": True}
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


@dataclass(frozen=True)
class Plan:
    device: str            # "cpu", "gpu" or "gpus"
    strategy: str          # "default" or "mirrored"
    precision: str         # Keras dtype policy
    jit_compile: bool      # XLA
    steps_per_execution: int = 16

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


def plan_for(n_gpus: int) -> Plan:
    return PLANS["cpu" if n_gpus == 0 else "gpu" if n_gpus == 1 else "gpus"]


def count_gpus() -> int:
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU"))


def activate(plan: Plan):
    """Set the precision policy and return the strategy whose scope the model is built in."""
    import keras
    import tensorflow as tf
    keras.mixed_precision.set_dtype_policy(plan.precision)
    return tf.distribute.MirroredStrategy() if plan.strategy == "mirrored" else tf.distribute.get_strategy()
