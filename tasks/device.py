"""Device and distribution strategy: GPU(s) when present, the CPU otherwise, one log line either way.

The choice is a table, not an if-chain: with several GPUs MirroredStrategy, mixed_float16 and XLA;
with one GPU the default strategy, mixed_float16 and XLA; on the CPU float32 without XLA (XLA made
the batch-norm CNN slower, 1,096 -> 863 images/s, on a 2-core AMD EPYC virtual machine). Every plan
runs 16 training steps per call into the compiled graph (Keras' steps_per_execution): on that
machine it cost 5-10% fewer CPU seconds per image than one step per call, as Python's per-step
overhead goes. To re-measure on another machine, change the "cpu" plan below and compare the
images/s and CPU seconds that `make bench` prints.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    device: str            # "cpu", "gpu" or "gpus"
    strategy: str          # "default" or "mirrored"
    precision: str         # Keras dtype policy
    jit_compile: bool      # XLA
    steps_per_execution: int = 16

    def describe(self, n_gpus: int) -> str:
        where = "CPU" if n_gpus == 0 else f"{n_gpus} GPU" + ("s" if n_gpus > 1 else "")
        return (f"device: {where}; strategy: {self.strategy}; precision: {self.precision}; "
                f"XLA: {'on' if self.jit_compile else 'off'}; steps per call: {self.steps_per_execution}")


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
