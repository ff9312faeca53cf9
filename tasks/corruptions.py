"""MNIST-C-style corruptions (Mu and Gilmer 2019) of uint8 digit images, in numpy and scipy.

Every corruption maps images [n, 28, 28] and a numpy Generator to new images of the same shape and
dtype, at the strength MNIST-C uses for it (its default severity; docs/robustness.md lists each
constant beside MNIST-C's). The random parameters (sign, angle, noise, line position, ...) are
drawn per image, and every image's output depends on that image alone, never on its neighbours
in the batch. `corrupt(images, name, seed)` is the entry point: the same seed gives the same
images, and each corruption its own random stream. Work is vectorized over the batch (glass_blur
loops over pixel positions, not images).
"""
import numpy as np
from scipy import ndimage, stats

from digits.io import SIDE

CENTRE = (SIDE - 1) / 2          # 13.5: geometric transforms keep the frame's centre fixed
SHOT_PHOTONS = 3                 # shot noise: Poisson with this many counts at full ink (MNIST-C severity 5)
IMPULSE_AMOUNT = 0.17            # salt-and-pepper: share of pixels set to black or white (MNIST-C 4)
BLUR_SIGMA = 2.0                 # gaussian blur, pixels (MNIST-C severity 2)
GLASS = (0.7, 1, 2)              # glass blur: blur sigma, largest pixel swap distance, passes (MNIST-C 1)
MOTION_SIGMA = 3.0               # motion blur: one-sided Gaussian trail along a random direction...
MOTION_ANGLE = 45.0              # ...within +-45 degrees of horizontal (MNIST-C severity 1)
SHEAR = 0.4                      # horizontal shear factor, random sign (MNIST-C 2)
SCALE = 0.7                      # shrink about the centre (MNIST-C 3)
ROTATE = 0.4                     # radians (22.9 degrees), random sign (MNIST-C 2)
TRANSLATE = 3                    # pixels on each axis, random sign (MNIST-C 3); less where the ink would leave
BRIGHTNESS = 0.5                 # added to every pixel (as 0..1); MNIST-C severity 5
CONTRAST = 0.1                   # distance from the image's mean level multiplied by this (MNIST-C 4)
STRIPE = 7                       # this many columns at each side are inverted (MNIST-C)
LINE = (0.5, 1.5)                # drawn lines: full ink within 0.5 px of the line, none beyond 1.5 px
DASH = 2                         # dotted line: dashes and gaps this many columns wide (MNIST-C)
ZIGZAG = (2.0, 2.0)              # zigzag: (half period, amplitude) in pixels (MNIST-C)
FOG = 1.5                        # fractal noise of this amplitude added, then levels rescaled (MNIST-C 1)
FOG_DECAY = 2.0                  # each finer octave of the fog is this much weaker
SPATTER = (0.65, 0.3, 1.0, 0.65, 1.5)   # mud: noise mean and spread, blur, threshold, edge blur (MNIST-C 4)
MUD = 63 / 255                   # the mud's grey level
CANNY = (1.0, 0.1, 0.2)          # smoothing sigma, low and high gradient thresholds (skimage's defaults)


def _float(images) -> np.ndarray:
    return np.asarray(images, dtype=np.float32) / 255.0


def _uint8(x) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _grid():
    """Row and column coordinates of every pixel, each [28, 28]."""
    return np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)


def _sample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of images x [n, 28, 28] at per-image coordinates [n, 28, 28]; 0 outside."""
    n = len(x)
    flat = np.concatenate([x.reshape(n, -1), np.zeros((n, 1), x.dtype)], axis=1)   # last = outside
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0).reshape(n, -1), (cols - c0).reshape(n, -1)
    out = np.zeros((n, SIDE * SIDE), np.float32)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = (r0 + dr).reshape(n, -1).astype(np.int64), (c0 + dc).reshape(n, -1).astype(np.int64)
        idx = np.where((r >= 0) & (r < SIDE) & (c >= 0) & (c < SIDE), r * SIDE + c, SIDE * SIDE)
        out += w * np.take_along_axis(flat, idx, axis=1)
    return out.reshape(x.shape)


def _affine(images, matrices: np.ndarray, shifts=None) -> np.ndarray:
    """Each image i resampled so that output pixel p shows input pixel M_i (p - centre) + centre - shift_i."""
    rr, cc = _grid() - CENTRE
    m = matrices[:, :, :, None, None]
    rows = m[:, 0, 0] * rr + m[:, 0, 1] * cc + CENTRE
    cols = m[:, 1, 0] * rr + m[:, 1, 1] * cc + CENTRE
    if shifts is not None:
        rows, cols = rows - shifts[:, 0, None, None], cols - shifts[:, 1, None, None]
    return _uint8(_sample(_float(images), rows, cols))


def _signs(rng, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=n)


def _strokes(segments: np.ndarray) -> np.ndarray:
    """Ink [n, 28, 28] of line segments [n, k, 2 (start, end), 2 (row, col)]: LINE's profile."""
    rr, cc = _grid()
    dist = np.full((len(segments), SIDE, SIDE), np.inf, np.float32)
    for k in range(segments.shape[1]):
        a, d = segments[:, k, 0, :, None, None], (segments[:, k, 1] - segments[:, k, 0])[:, :, None, None]
        t = ((rr - a[:, 0]) * d[:, 0] + (cc - a[:, 1]) * d[:, 1]) / np.maximum(d[:, 0] ** 2 + d[:, 1] ** 2, 1e-9)
        t = np.clip(t, 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(rr - a[:, 0] - t * d[:, 0], cc - a[:, 1] - t * d[:, 1]))
    core, reach = LINE
    return np.clip((reach - dist) / (reach - core), 0.0, 1.0).astype(np.float32)


def _add_ink(images, ink: np.ndarray) -> np.ndarray:
    return _uint8(_float(images) + ink)


def shot_noise(images, rng):
    """Photon noise: each pixel a Poisson count around its level (black stays black).

    Drawn by inverting the Poisson CDF at one uniform per pixel: numpy's own Poisson sampler
    consumes a number of draws that depends on the level, so one image's noise would depend on
    the images before it in the batch."""
    x = _float(images)
    return _uint8(stats.poisson.ppf(rng.random(x.shape), x * SHOT_PHOTONS) / SHOT_PHOTONS)


def impulse_noise(images, rng):
    """Salt and pepper: a random share of pixels set to white or black."""
    x = np.array(images, dtype=np.uint8)
    hit = rng.random(x.shape) < IMPULSE_AMOUNT
    x[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255)
    return x


def _blur(x: np.ndarray, sigma: float, mode: str = "constant") -> np.ndarray:
    """Gaussian blur of each image of x [n, 28, 28] (never across the batch axis)."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode=mode)


def gaussian_blur(images, rng):
    return _uint8(_blur(_float(images), BLUR_SIGMA))


def glass_blur(images, rng):
    """Blur, then local pixel swaps (each interior pixel, bottom-right to top-left, with odds 1/2
    trades places with a neighbour up to GLASS[1] px up/left), then blur again."""
    sigma, delta, passes = GLASS
    x = _uint8(_blur(_float(images), sigma, mode="nearest"))
    n, every = len(x), np.arange(len(x))
    for _ in range(passes):
        for h in range(SIDE - delta, delta, -1):
            for w in range(SIDE - delta, delta, -1):
                swap = every[rng.random(n) < 0.5]
                dy, dx = rng.integers(-delta, delta, (2, len(swap)))
                here, there = x[swap, h, w], x[swap, h + dy, w + dx]
                x[swap, h, w], x[swap, h + dy, w + dx] = there, here
    return _uint8(_blur(_float(x), sigma, mode="nearest"))


def motion_blur(images, rng):
    """A trail behind each pixel along a random direction, Gaussian weights over 3 sigma."""
    x = _float(images)
    angle = np.deg2rad(rng.uniform(-MOTION_ANGLE, MOTION_ANGLE, len(x)))[:, None, None]
    rr, cc = _grid()
    steps = np.arange(int(3 * MOTION_SIGMA) + 1)
    weights = np.exp(-steps ** 2 / (2 * MOTION_SIGMA ** 2))
    out = sum(w * _sample(x, rr - d * np.sin(angle), cc - d * np.cos(angle)) for d, w in zip(steps, weights))
    return _uint8(out / weights.sum())


def shear(images, rng):
    k = SHEAR * _signs(rng, len(images))
    m = np.zeros((len(images), 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, 1, 0] = k
    return _affine(images, m)


def scale(images, rng):
    return _affine(images, np.broadcast_to(np.eye(2) / SCALE, (len(images), 2, 2)))


def rotate(images, rng):
    a = ROTATE * _signs(rng, len(images))
    cos, sin = np.cos(a), np.sin(a)
    return _affine(images, np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2))


def translate(images, rng):
    """Shift by TRANSLATE px per axis in a random direction: reversed where the other way has more
    room for the ink, and shortened to the room there is."""
    x = np.asarray(images)
    n = len(x)
    shifts = np.zeros((n, 2))
    sign = _signs(rng, 2 * n).reshape(n, 2)
    for axis, across in ((0, 2), (1, 1)):
        inked = x.max(axis=across) > 0                             # [n, 28]: rows (columns) with ink
        back = np.where(inked.any(1), inked.argmax(1), 0)          # free lines before the ink...
        ahead = np.where(inked.any(1), inked[:, ::-1].argmax(1), 0)  # ...and after it
        room, other = np.where(sign[:, axis] > 0, ahead, back), np.where(sign[:, axis] > 0, back, ahead)
        flip = (room < TRANSLATE) & (other > room)
        shifts[:, axis] = np.where(flip, -1, 1) * sign[:, axis] * np.minimum(TRANSLATE, np.where(flip, other, room))
    return _affine(x, np.broadcast_to(np.eye(2), (n, 2, 2)), shifts)


def brightness(images, rng):
    return _uint8(_float(images) + BRIGHTNESS)


def contrast(images, rng):
    x = _float(images)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _uint8((x - mean) * CONTRAST + mean)


def stripe(images, rng):
    """The outer STRIPE columns on each side inverted."""
    x = np.array(images, dtype=np.uint8)
    x[:, :, :STRIPE] = 255 - x[:, :, :STRIPE]
    x[:, :, SIDE - STRIPE:] = 255 - x[:, :, SIDE - STRIPE:]
    return x


def dotted_line(images, rng):
    """A dashed line from the left edge to the right edge, between random rows."""
    rows = rng.uniform(0, SIDE - 1, (len(images), 2))
    line = np.stack([np.stack([rows[:, 0], np.zeros(len(rows))], -1),
                     np.stack([rows[:, 1], np.full(len(rows), SIDE - 1.0)], -1)], 1)[:, None]
    dashes = (np.arange(SIDE) // DASH) % 2 == 0
    return _add_ink(images, _strokes(line) * dashes)


def zigzag(images, rng):
    """A zigzag across the image (columns 2..25) along a gently sloping random line."""
    n = len(images)
    half, amplitude = ZIGZAG
    r0 = rng.uniform(0, SIDE - 1, n)
    slope = rng.uniform(-5, 5, n) / 23
    c = np.arange(2, 25.01, half)                                  # vertex columns
    offsets = amplitude * np.where(np.arange(len(c)) % 2, 1.0, -1.0)
    offsets[0] = 0.0
    r = r0[:, None] + slope[:, None] * (c - 2) + offsets
    pts = np.stack([r, np.broadcast_to(c, r.shape)], -1)           # [n, k, 2]
    return _add_ink(images, _strokes(np.stack([pts[:, :-1], pts[:, 1:]], 2)))


def _fractal(rng, n: int) -> np.ndarray:
    """Smooth random fields [n, 28, 28] in 0..1: octaves of upsampled noise, finer ones weaker."""
    field = np.zeros((n, SIDE, SIDE), np.float32)
    for octave, cells in enumerate((2, 4, 7, 14)):
        coarse = rng.uniform(-1, 1, (n, cells + 1, cells + 1)).astype(np.float32)
        field += ndimage.zoom(coarse, (1, SIDE / (cells + 1), SIDE / (cells + 1)), order=1) / FOG_DECAY ** octave
    low, high = field.min(axis=(1, 2), keepdims=True), field.max(axis=(1, 2), keepdims=True)
    return (field - low) / (high - low)


def fog(images, rng):
    x = _float(images)
    peak = x.max(axis=(1, 2), keepdims=True)
    return _uint8((x + FOG * _fractal(rng, len(x))) * peak / (peak + FOG))


def spatter(images, rng):
    """Blotches of grey mud covering parts of the image."""
    x = _float(images)
    mean, spread, blur, threshold, edge = SPATTER
    liquid = ndimage.gaussian_filter(rng.normal(mean, spread, x.shape).astype(np.float32), sigma=(0, blur, blur))
    mask = ndimage.gaussian_filter((liquid > threshold).astype(np.float32), sigma=(0, edge, edge))
    mask[mask < 0.8] = 0.0
    return _uint8(x * (1 - mask) + MUD * mask)


def canny_edges(images, rng):
    """Only the edges of the strokes (Canny: smooth, gradient, thin to ridges, hysteresis)."""
    sigma, low, high = CANNY
    x = _blur(_float(images), sigma, mode="nearest")
    # 2-D Sobel kernels: ndimage.sobel on the batch would also smooth across neighbouring images
    across = np.array([1.0, 2.0, 1.0])[:, None] * np.array([-1.0, 0.0, 1.0])[None, :]
    gr = ndimage.correlate(x, across.T[None], mode="nearest")
    gc = ndimage.correlate(x, across[None], mode="nearest")
    mag = np.hypot(gr, gc)
    # non-maximum suppression: keep pixels at least as strong as both neighbours across the edge
    direction = np.round(np.arctan2(gr, gc) / (np.pi / 4)).astype(int) % 4     # in 45-degree steps
    pad = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    ridge = np.zeros(mag.shape, bool)
    for d, (dr, dc) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = pad[:, 1 + dr:1 + dr + SIDE, 1 + dc:1 + dc + SIDE]
        behind = pad[:, 1 - dr:1 - dr + SIDE, 1 - dc:1 - dc + SIDE]
        ridge |= (direction == d) & (mag >= ahead) & (mag >= behind)
    weak = ridge & (mag >= low)
    within = np.zeros((3, 3, 3), bool)
    within[1] = True                                               # connect pixels, never images
    labels, count = ndimage.label(weak, structure=within)
    strong = np.zeros(count + 1, bool)
    strong[labels[weak & (mag >= high)]] = True
    return np.where(strong[labels], 255, 0).astype(np.uint8)


CORRUPTIONS = {f.__name__: f for f in (
    shot_noise, impulse_noise, glass_blur, motion_blur, shear, scale, rotate, brightness, translate,
    stripe, fog, spatter, dotted_line, zigzag, canny_edges, gaussian_blur, contrast)}


def corrupt(images, name: str, seed: int) -> np.ndarray:
    """`images` (uint8 [n, 28, 28], or [n, 28, 28, 1]) under the corruption `name`, reproducibly.

    The generator is seeded with (seed, the corruption's place in CORRUPTIONS): one seed gives every
    corruption its own stream. The input is never modified; the output has its shape.
    """
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    x = np.asarray(images, dtype=np.uint8)
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name)])
    return CORRUPTIONS[name](x.reshape(-1, SIDE, SIDE), rng).reshape(x.shape)
