"""The CNN and its augmentation, in Keras 3's backend-neutral API (keras.layers / keras.ops).

Nothing here imports TensorFlow, so the same code can be measured with KERAS_BACKEND=jax on a GPU
machine that has no TensorFlow. The model takes uint8 images and scales them itself:
the data stays uint8 in memory and every caller (train, evaluate, predict) feeds the same thing.
"""
import math

import keras
from keras import layers, ops

from tasks import schedules  # noqa: F401  (registers the one-cycle schedule a checkpoint may carry)
from tasks.params import Arch, Augment


@keras.saving.register_keras_serializable(package="digits")
class RandomAffine(layers.Layer):
    """Rotation, zoom and shift composed into ONE affine warp per image, in training only.

    Keras' RandomRotation + RandomZoom + RandomTranslation would resample each image three times;
    one composed transform is a third of the work and blurs less.
    """

    def __init__(self, rotation=0.0, zoom=0.0, shift=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.shift, self.seed = rotation, zoom, shift, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        n = ops.shape(images)[0]
        h, w = images.shape[1], images.shape[2]
        uniform = lambda lo, hi: keras.random.uniform((n,), lo, hi, seed=self.generator)
        angle = uniform(-1.0, 1.0) * (self.rotation * math.pi / 180.0)
        scale = uniform(1.0 - self.zoom, 1.0 + self.zoom)
        tx, ty = uniform(-self.shift, self.shift) * w, uniform(-self.shift, self.shift) * h
        # affine_transform maps each output pixel (x, y) to the input pixel it samples from:
        # input = R(angle) / scale @ (output - centre - shift) + centre.
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        ox, oy = cx + tx, cy + ty
        transform = ops.stack([cos, -sin, cx - cos * ox + sin * oy,
                               sin, cos, cy - sin * ox - cos * oy,
                               ops.zeros_like(cos), ops.zeros_like(cos)], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear",
                                          fill_mode="constant", fill_value=0.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"rotation": self.rotation, "zoom": self.zoom,
                                       "shift": self.shift, "seed": self.seed}


def build(arch: Arch, augment: Augment, seed: int, weight_decay: float = 0.0) -> keras.Model:
    """uint8 [n, 28, 28, 1] -> class probabilities [n, 10]."""
    stack = [keras.Input((28, 28, 1), dtype="uint8", name="image"),
             layers.Rescaling(1.0 / 255.0, name="scale"),
             RandomAffine(augment.rotation, augment.zoom, augment.shift, seed=seed, name="augment")]
    for b, (width, kernel, convs) in enumerate(zip(arch.widths, arch.kernels, arch.convs), start=1):
        for c in range(1, convs + 1):
            stack.append(layers.Conv2D(width, kernel, padding=arch.padding, use_bias=not arch.batch_norm,
                                       name=f"conv{b}_{c}"))
            if arch.batch_norm:
                stack.append(layers.BatchNormalization(name=f"bn{b}_{c}"))
            stack.append(layers.ReLU(name=f"relu{b}_{c}"))
        stack += [layers.MaxPooling2D(2, name=f"pool{b}"), layers.Dropout(arch.block_dropout, name=f"drop{b}")]
    stack.append(layers.Flatten(name="flatten"))
    if arch.dense:
        stack += [layers.Dense(arch.dense, activation="relu", name="dense"),
                  layers.Dropout(arch.dense_dropout, name="drop_dense")]
    # float32 output keeps softmax and loss exact under mixed precision.
    stack.append(layers.Dense(10, activation="softmax", dtype="float32", name="probabilities"))
    return keras.Sequential(stack, name="digits_cnn")


def load(path) -> keras.Model:
    """Load a saved model; importing this module registers the custom augmentation layer."""
    return keras.models.load_model(path)
