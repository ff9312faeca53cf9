"""Training-time augmentation layers, in Keras 3's backend-neutral API (keras.ops, keras.random).

Both layers are part of the saved model, act only when `training=True` and draw from their own
seeded `SeedGenerator`. They work on float images in 0..1, [n, 28, 28, 1].

- RandomAffine: rotation, zoom and shift composed into one warp per image, plus an optional
  elastic distortion (a smooth random displacement field) in the same resampling.
- RandomDegrade: what real pictures do to a digit, each family drawn per image:
  photometric (background lift, contrast, gamma, a linear gradient and a smooth uneven field),
  blur (Gaussian, random width), noise (Gaussian and salt-and-pepper), marks (a thin straight,
  dashed or wavy line; inverted bars at the left/right border; an erased patch) and outlines
  (only the rim of the strokes). Nothing here calls tasks/corruptions.py: the robustness suite
  stays a held-out test (docs/robustness.md lists which augmentation resembles which corruption).

RandomDegrade's `strength` (a non-trainable weight, 1 or 0) lets the last epochs train on
undegraded images (tasks/train.py switches it), without rebuilding or retracing the model.
"""
import math

import keras
import numpy as np
from keras import layers, ops

SIDE = 28
BLUR_SIGMAS = (1.0, 2.2)          # blur width is drawn in 0..2.2 px and blended between these


def _blur_matrix(sigma: float) -> np.ndarray:
    """[28, 28] B with B @ column = the column blurred by a normalized Gaussian of `sigma` px,
    zeros beyond the frame (a "same" convolution with 2 * ceil(3 sigma) + 1 taps)."""
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    offset = np.arange(SIDE)[None, :] - np.arange(SIDE)[:, None] + radius        # j - i + radius
    return np.where(np.abs(offset - radius) <= radius, (taps / taps.sum())[np.clip(offset, 0, 2 * radius)],
                    0.0).astype("float32")


def _gaussian_blurs(x, sigmas):
    """[n, 28, 28, 1] blurred by each of `sigmas`: a list of [n, 28, 28, 1]. Separable, as matrix
    products on both sides (B x B^T), one product per side for all sigmas together."""
    b = ops.convert_to_tensor(np.stack([_blur_matrix(s) for s in sigmas]))        # [s, 28, 28]
    rows = ops.einsum("sij,njk->nsik", b, x[..., 0])                               # along each column
    both = ops.einsum("nsik,slk->nsil", rows, b)                                   # along each row
    return [both[:, i, :, :, None] for i in range(len(sigmas))]


def _grid():
    """Row and column coordinates [1, 28, 28, 1]."""
    r = ops.reshape(ops.cast(ops.arange(SIDE), "float32"), (1, SIDE, 1, 1))
    c = ops.reshape(ops.cast(ops.arange(SIDE), "float32"), (1, 1, SIDE, 1))
    return r + 0.0 * c, c + 0.0 * r


def _bilinear(images, rows, cols):
    """images [n, 28, 28, 1] sampled at per-pixel coordinates [n, 28, 28, 1]; 0 outside.

    (ops.image.map_coordinates needs a static batch size on TensorFlow: this takes any.) The
    images get a 1 px border of zeros, so every corner of a clipped coordinate lies inside."""
    n, side = ops.shape(images)[0], SIDE + 2
    flat = ops.reshape(ops.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0))), (-1,))
    rows, cols = ops.clip(rows + 1.0, 0.0, side - 1.001), ops.clip(cols + 1.0, 0.0, side - 1.001)
    r0, c0 = ops.floor(rows), ops.floor(cols)
    fr, fc = rows - r0, cols - c0
    base = ops.reshape(ops.arange(n, dtype="int32") * (side * side), (-1, 1, 1, 1))
    index = base + ops.cast(r0, "int32") * side + ops.cast(c0, "int32")
    top = (1 - fc) * ops.take(flat, index) + fc * ops.take(flat, index + 1)
    bottom = (1 - fc) * ops.take(flat, index + side) + fc * ops.take(flat, index + side + 1)
    return (1 - fr) * top + fr * bottom


@keras.saving.register_keras_serializable(package="digits")
class RandomAffine(layers.Layer):
    """Rotation, zoom, shift (and elastic distortion) as ONE resampling per image, in training only.

    Keras' RandomRotation + RandomZoom + RandomTranslation would resample each image three times;
    one composed transform is a third of the work and blurs less. `elastic` is the largest
    displacement in pixels of a smooth random field (5 x 5 control points, bilinear); 0 = none.
    """

    def __init__(self, rotation=0.0, zoom=0.0, shift=0.0, seed=None, elastic=0.0, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.shift, self.seed, self.elastic = rotation, zoom, shift, seed, elastic
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
        # Each output pixel (x, y) samples the input at R(angle) / scale @ (output - centre - shift) + centre.
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        ox, oy = cx + tx, cy + ty
        if not self.elastic:
            transform = ops.stack([cos, -sin, cx - cos * ox + sin * oy,
                                   sin, cos, cy - sin * ox - cos * oy,
                                   ops.zeros_like(cos), ops.zeros_like(cos)], axis=1)
            return ops.image.affine_transform(images, transform, interpolation="bilinear",
                                              fill_mode="constant", fill_value=0.0)
        col = lambda v: ops.reshape(v, (-1, 1, 1, 1))
        rows, cols = _grid()
        dx, dy = cols - col(ox), rows - col(oy)
        src_c = col(cos) * dx - col(sin) * dy + cx
        src_r = col(sin) * dx + col(cos) * dy + cy
        field = keras.random.uniform((n, 5, 5, 2), -1.0, 1.0, seed=self.generator)
        field = ops.image.resize(field, (h, w), interpolation="bilinear") * self.elastic
        src_r, src_c = src_r + field[..., :1], src_c + field[..., 1:]
        return _bilinear(images, src_r, src_c)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"rotation": self.rotation, "zoom": self.zoom, "shift": self.shift,
                                       "seed": self.seed, "elastic": self.elastic}


@keras.saving.register_keras_serializable(package="digits")
class RandomDegrade(layers.Layer):
    """Photometric changes, blur, noise, marks and outlines on a `rate` share of each batch.

    A degraded image gets each family with the odds in FAMILIES (drawn independently); the
    result is quantized to 256 levels, as the uint8 images met at inference are.
    """

    FAMILIES = {"photometric": 0.6, "blur": 0.35, "noise": 0.35, "marks": 0.35, "outline": 0.1}
    DRAWS = 48                    # per-image random numbers drawn at once (about 40 are used)

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.strength = self.add_weight(shape=(), initializer="ones", trainable=False, name="strength")

    def _u(self, n, shape=(), lo=0.0, hi=1.0):
        """Uniform draws in [lo, hi): one per image (a column of the batch's one draw of
        DRAWS columns: fewer random ops per step), or a fresh array of `shape` per image."""
        if shape:
            return keras.random.uniform((n, *shape), lo, hi, seed=self.generator)
        column, self._next = self._draws[:, self._next], self._next + 1
        return lo + (hi - lo) * column

    def _mask(self, n, p):
        """[n, 1, 1, 1] 0/1: images that get a family of odds p."""
        return ops.reshape(ops.cast(self._u(n) < p, "float32"), (-1, 1, 1, 1))

    def call(self, images, training=False):
        if not training or not self.rate:
            return images
        # The batch arrives shuffled, so its first `rate` share is a random share of the images:
        # only those are degraded (a static slice, not a mask over the whole batch: less work).
        n = ops.shape(images)[0]
        k = (int(math.ceil(self.rate * n)) if isinstance(n, int)
             else ops.cast(ops.ceil(self.rate * ops.cast(n, "float32")), "int32"))
        x = images[:k]
        self._draws, self._next = keras.random.uniform((k, self.DRAWS), seed=self.generator), 0
        odds = self.FAMILIES
        x = self._outline(x, self._mask(k, odds["outline"]))
        x = self._marks(x, k, self._mask(k, odds["marks"]))
        x = self._blur(x, k, self._mask(k, odds["blur"]))
        x = self._photometric(x, k, self._mask(k, odds["photometric"]))
        x = self._noise(x, k, self._mask(k, odds["noise"]))
        x = images[:k] + self.strength * (x - images[:k])
        return ops.round(ops.clip(ops.concatenate([x, images[k:]], axis=0), 0.0, 1.0) * 255.0) / 255.0

    def _outline(self, x, m):
        """Only the pixels just outside the strokes: hollow digits."""
        grown = ops.max_pool(x, 3, strides=1, padding="same")
        rim = ops.cast(grown - x > 0.35, "float32")
        return x + m * (rim - x)

    def _marks(self, x, n, m):
        rows, cols = _grid()
        col = lambda v: ops.reshape(v, (-1, 1, 1, 1))
        # a line across the image: straight, dashed or wavy, horizontal-ish or vertical-ish
        upright = col(ops.cast(self._u(n) < 0.3, "float32"))
        along, across = upright * rows + (1 - upright) * cols, upright * cols + (1 - upright) * rows
        slope = col(self._u(n, (), -0.5, 0.5))
        wave = col(self._u(n, (), 0.0, 2.5) * ops.cast(self._u(n) < 0.4, "float32"))
        period = col(self._u(n, (), 4.0, 10.0))
        centre = col(self._u(n, (), 0.0, SIDE - 1.0))
        path = centre + slope * (along - 13.5) + wave * ops.sin(2 * math.pi * along / period)
        width = col(self._u(n, (), 0.5, 1.5))
        line = ops.clip(width + 0.5 - ops.abs(across - path), 0.0, 1.0)
        dashed = col(ops.cast(self._u(n) < 0.3, "float32"))
        gaps = ops.cast(ops.floor(along / col(self._u(n, (), 2.0, 4.0))) % 2 == 0, "float32")
        line = line * (1 - dashed + dashed * gaps) * col(self._u(n, (), 0.5, 1.0))
        kind = self._u(n)                                      # line 60%, bars 20%, erased patch 20%
        x = x + m * col(ops.cast(kind < 0.6, "float32")) * line
        # inverted bars at the left and right borders
        left, right = col(self._u(n, (), 3.0, 9.0)), col(self._u(n, (), 3.0, 9.0))
        bars = ops.cast((cols < ops.floor(left)) | (cols >= SIDE - ops.floor(right)), "float32")
        bars = bars * m * col(ops.cast((kind >= 0.6) & (kind < 0.8), "float32"))
        x = ops.clip(x, 0.0, 1.0)
        x = x + bars * (1.0 - 2.0 * x)
        # an erased patch, filled with a flat grey
        r0, c0 = col(self._u(n, (), 0.0, SIDE - 4.0)), col(self._u(n, (), 0.0, SIDE - 4.0))
        size_r, size_c = col(self._u(n, (), 3.0, 8.0)), col(self._u(n, (), 3.0, 8.0))
        patch = ops.cast((rows >= r0) & (rows < r0 + size_r) & (cols >= c0) & (cols < c0 + size_c), "float32")
        patch = patch * m * col(ops.cast(kind >= 0.8, "float32"))
        return x + patch * (col(self._u(n, (), 0.0, 0.5)) - x)

    def _blur(self, x, n, m):
        s = ops.reshape(self._u(n, (), 0.0, BLUR_SIGMAS[1]), (-1, 1, 1, 1))
        one, two = _gaussian_blurs(x, BLUR_SIGMAS)
        t = ops.clip(s - 1.0, 0.0, BLUR_SIGMAS[1] - 1.0) / (BLUR_SIGMAS[1] - 1.0)
        blurred = ops.where(s < 1.0, x + s * (one - x), one + t * (two - one))
        return x + m * (blurred - x)

    def _photometric(self, x, n, m):
        col = lambda v: ops.reshape(v, (-1, 1, 1, 1))
        rows, cols = _grid()
        gamma = ops.exp(col(self._u(n, (), -0.7, 0.7)))
        ink = ops.power(ops.clip(x, 0.0, 1.0) + 1e-6, gamma)
        # uneven light: a linear ramp in a random direction and a smooth random field (two scales)
        angle = col(self._u(n, (), 0.0, 2 * math.pi))
        ramp = (ops.cos(angle) * (rows - 13.5) + ops.sin(angle) * (cols - 13.5)) / SIDE + 0.5
        coarse = ops.image.resize(self._u(n, (3, 3, 1)), (SIDE, SIDE), interpolation="bilinear")
        fine = ops.image.resize(self._u(n, (6, 6, 1)), (SIDE, SIDE), interpolation="bilinear")
        field = coarse + 0.5 * fine
        lo, hi = ops.min(field, axis=(1, 2, 3), keepdims=True), ops.max(field, axis=(1, 2, 3), keepdims=True)
        field = (field - lo) / ops.maximum(hi - lo, 1e-6)
        on = lambda p: col(ops.cast(self._u(n) < p, "float32"))
        light = ink + on(0.4) * col(self._u(n, (), 0.0, 1.0)) * ramp + on(0.5) * col(self._u(n, (), 0.0, 1.6)) * field
        light = light / ops.maximum(ops.max(light, axis=(1, 2, 3), keepdims=True), 1.0)
        contrast = col(self._u(n, (), 0.1, 1.0))
        lift = col(self._u(n)) * (1.0 - contrast)
        return x + m * (lift + contrast * light - x)

    def _noise(self, x, n, m):
        col = lambda v: ops.reshape(v, (-1, 1, 1, 1))
        on = lambda p: col(ops.cast(self._u(n) < p, "float32"))
        sigma = on(0.6) * col(self._u(n, (), 0.0, 0.25))
        noisy = x + sigma * keras.random.normal(ops.shape(x), seed=self.generator)
        amount = on(0.6) * col(self._u(n, (), 0.0, 0.2))
        r = keras.random.uniform(ops.shape(x), seed=self.generator)
        noisy = ops.where(r < amount / 2, 0.0, ops.where(r > 1 - amount / 2, 1.0, noisy))
        return x + m * (noisy - x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="digits")
class LevelNormalize(layers.Layer):
    """Each image's levels stretched to 0..1 (darkest pixel 0, brightest 1), in training and at
    inference: a uniform brightness shift or contrast change does not reach the network. A
    uniform image becomes all 0."""

    def call(self, images):
        lo = ops.min(images, axis=(1, 2, 3), keepdims=True)
        hi = ops.max(images, axis=(1, 2, 3), keepdims=True)
        return (images - lo) / ops.maximum(hi - lo, 1.0 / 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape
