"""Learning-rate schedules of the presets, by the name in `train.presets.*.optimizer.schedule`.

- cosine: linear warm-up from 1% of the peak rate, then cosine decay to 0 (Keras' CosineDecay);
- onecycle: Smith's one-cycle with fastai's defaults (cosine rise from peak/25 over the warm-up,
  cosine fall to peak/250,000); the momentum half of the cycle is left out, as Adam's bias
  correction assumes a constant beta_1;
- plateau: a constant rate that ReduceLROnPlateau (tasks/train.py) halves when validation stalls.

OneCycle is registered with Keras, so a checkpoint (a .keras file with its optimizer) loads and
resumes mid-cycle; digits/model.py imports this module before loading any model.
"""
import math

import keras
from keras import ops

from digits.params import Optimizer


@keras.saving.register_keras_serializable(package="digits")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak, total_steps, warmup_steps, div=25.0, final_div=1e4):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.div, self.final_div = float(div), float(final_div)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start, end = self.peak / self.div, self.peak / (self.div * self.final_div)
        rise = ops.minimum(step / max(1, self.warmup_steps), 1.0)
        fall = ops.clip((step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), 0.0, 1.0)
        rising = start + (self.peak - start) * (1.0 - ops.cos(math.pi * rise)) / 2.0
        falling = end + (self.peak - end) * (1.0 + ops.cos(math.pi * fall)) / 2.0
        return ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "div": self.div, "final_div": self.final_div}


def learning_rate(o: Optimizer, epochs: int, steps_per_epoch: int):
    """The optimizer's `learning_rate` argument: a float (plateau) or a schedule over steps."""
    total, warmup = epochs * steps_per_epoch, int(o.warmup_epochs * steps_per_epoch)
    if o.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=o.learning_rate / 100, warmup_target=o.learning_rate,
            warmup_steps=warmup, decay_steps=max(1, total - warmup))
    if o.schedule == "onecycle":
        return OneCycle(o.learning_rate, total, warmup)
    return o.learning_rate              # plateau: params admit no other schedule
