"""The CNN and its augmentation, in Keras 3's backend-neutral API (keras.layers / keras.ops).

Nothing here imports TensorFlow, so the same code can be measured with KERAS_BACKEND=jax on a GPU
machine that has no TensorFlow. The model takes uint8 images and scales them itself:
the data stays uint8 in memory and every caller (train, evaluate, predict) feeds the same thing.
"""
import keras
from keras import layers

from digits import schedules  # noqa: F401  (registers the one-cycle schedule a checkpoint may carry)
from digits.augment import LevelNormalize, RandomAffine, RandomDegrade
from digits.params import Arch, Augment


def build(arch: Arch, augment: Augment, seed: int) -> keras.Model:
    """uint8 [n, 28, 28, 1] -> class probabilities [n, 10].

    Training-only augmentation (geometry, then degradations), then the level normalization that
    every caller gets: evaluate, predict, the robustness stage, the CLI and the API.
    """
    # The image layers compute in float32 under any precision policy: the first conv casts.
    stack = [keras.Input((28, 28, 1), dtype="uint8", name="image"),
             layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale"),
             RandomAffine(augment.rotation, augment.zoom, augment.shift, seed=seed, elastic=augment.elastic,
                          dtype="float32", name="augment"),
             RandomDegrade(augment.degrade, seed=seed + 1, dtype="float32", name="degrade"),
             LevelNormalize(dtype="float32", name="levels")]
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
    """Load a saved model; importing this module registers the custom layers."""
    return keras.models.load_model(path)
