"""Any image a user hands in -> the 28 x 28 uint8 MNIST-style image the model was trained on.

MNIST digits are white ink on black, cropped to their ink, scaled so the longer side is 20 px
(aspect ratio kept, anti-aliased) and placed in a 28 x 28 frame with their centre of mass at the
centre (row 14, column 14: where the 60,000 training images have it, to 0.3 px). A photo of dark
ink on light paper resized to 28 x 28 is none of that, and the model reads it at chance level.
`to_mnist` makes it so, in this order:

1. ink map: the image as floats in 0..1 (EXIF rotation applied, very large images reduced to
   WORK_SIDE). A transparent image (a canvas export: black strokes on alpha 0) is read through its
   alpha channel: it is laid on a background opposite to its strokes' colour;
2. border bands: a band of full-height columns at the left or right edge (or full-width rows at
   the top or bottom) whose level is opposite to the middle of the image (inverted bars, a dark
   margin around a scan) is flipped back;
3. polarity: the background is the median level; whichever extreme lies farther from it is the
   ink, so dark-on-light is inverted and light-on-dark is kept;
4. background and noise: a local background (a grey opening, wider than any stroke) is subtracted,
   so uneven lighting and fog fade (a small image is taken as evenly lit unless the levels along
   its frame spread by more than UNEVEN, and the other way is tried if the first finds no ink);
   levels are scaled so typical ink reads 1.0; a small image strewn with 1-2 px specks is
   median-filtered before its strokes are found; a mark on the frame (spanning it, or much smaller
   than the largest blob) keeps only its parts as thick as strokes (a ruled line is not taken for
   ink); blobs much smaller than the largest are dropped, and what lies away from the remaining
   strokes is zeroed;
5. strokes much thinner than MNIST's (a pen photographed from afar) are thickened;
6. optional deskew (`deskew=True`): the slant measured from the ink's second moments is sheared
   away;
7. crop to the ink, scale the longer side to 20 px, place by centre of mass in 28 x 28.

An image that is 28 x 28 already is in MNIST's own format (a Kaggle row, the API's `pixels`): it
gets steps 1-3 only, its levels stretched to 0..255, and keeps its geometry; the model normalizes
levels itself and was trained on lines, noise and fog over digits where MNIST puts them, so a
crop would only move and shrink a digit with a mark beside it. It is still refused when step 4
finds no ink in it.

An image with no ink (uniform, or a blank canvas) raises NoInk: the model would only guess.
The same function serves the CLI (digits/recognize.py), the HTTP API (digits/server.py) and the
drawing page, and its round trip is tested on re-rendered MNIST images (tests/test_preprocess.py).
"""
import base64
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from digits.io import SIDE

BOX = 20                      # MNIST's digits are scaled into a 20 x 20 box...
CENTRE = 14.0                 # ...and shifted so their centre of mass is at (14, 14)
WORK_SIDE = 512               # larger images are reduced (area averaging) before anything else
MAX_PIXELS = 16_000_000       # refuse to decode more (a small PNG can claim a huge canvas);
                              # a JPEG is first reduced while decoding (by 2, 4 or 8, keeping
DRAFT_SIDE = 2 * WORK_SIDE    # both sides at least this), so a phone photo of 48 MP still passes
MIN_CONTRAST = 0.05           # ink at least this far from the background level, else no ink
INK_LEVEL = 0.35              # after scaling, pixels above this are ink for crop and noise removal
NOISE_SIGMAS = 6.0            # ...and at least this many standard deviations of the background
SPECK = 0.03                  # ink blobs smaller than this fraction of the largest one are noise
UNEVEN = 0.15                 # a small image whose outer 2 px span more levels is levelled locally
MARK = 0.25                   # a blob on the frame smaller than this share of the largest is a mark
SALT = 10                     # a small image with this many 1-2 px blobs is median-filtered first
STROKE_MIN = 1.5              # MNIST strokes are about 3 px wide in the 20 px box (5th-95th
STROKE_TARGET = 2.8           # percentile 2.1-4.5); thinner than STROKE_MIN: grown to STROKE_TARGET
BAND = 1 / 3                  # border bands flipped back are at most this share of the side
THIN = 0.6                    # marks touching the frame lose their parts thinner than this share
                              # of the thick strokes' width (at least 3 px): ruled lines, not strokes


class ImageError(ValueError):
    """Input that cannot become a digit image; the message says why."""


class NotAnImage(ImageError):
    """The bytes are not an image Pillow can read (or one too large to decode)."""


class NoInk(ImageError):
    """The image holds nothing that stands out from its background."""


class BadPixels(ImageError):
    """A pixel list that is not 784 integers in 0..255."""


def open_image(source) -> Image.Image:
    """A path, bytes or binary file -> a decoded Pillow image (first frame); NotAnImage if not one.

    Missing or unreadable files raise the usual OSError (FileNotFoundError, PermissionError).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            if image.format == "JPEG":
                image.draft(image.mode, (DRAFT_SIDE, DRAFT_SIDE))   # DCT scaling: less to decode
            if image.width * image.height > MAX_PIXELS:
                raise NotAnImage(f"image too large to decode: {image.width} x {image.height} pixels "
                                 f"(at most {MAX_PIXELS:,})")
            image.load()
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotAnImage):
        raise
    except UnidentifiedImageError:
        raise NotAnImage("not an image (Pillow cannot identify it)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise NotAnImage(f"image too large to decode: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:   # truncated or corrupt data
        raise NotAnImage(f"cannot decode the image: {err}") from None
    return image


def pixels_image(values) -> Image.Image:
    """A flat list of 784 integers 0..255 (a 28 x 28 image, row by row) -> a mode L image."""
    if not isinstance(values, (list, tuple)):
        raise BadPixels(f"pixels must be a list of {SIDE * SIDE} integers, got {type(values).__name__}")
    if len(values) != SIDE * SIDE:
        raise BadPixels(f"pixels must be {SIDE * SIDE} integers (28 x 28, row by row), got {len(values)}")
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool):
            raise BadPixels(f"pixels must be integers 0..255: pixel {i} is {v!r}")
        if not 0 <= v <= 255:
            raise BadPixels(f"pixels must be integers 0..255: pixel {i} is {v}")
    return Image.fromarray(np.asarray(values, dtype=np.uint8).reshape(SIDE, SIDE))


def _levels(image: Image.Image) -> np.ndarray:
    """Grey levels 0..1 of the image; a transparent one laid on a background opposite its strokes."""
    image = ImageOps.exif_transpose(image)
    transparent = image.has_transparency_data      # RGBA, LA, PA, a palette with alpha, tRNS
    image = image.convert("LA" if transparent else "L")
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    if not transparent:
        return np.asarray(image, dtype=np.float32) / 255.0
    la = np.asarray(image, dtype=np.float32) / 255.0
    grey, alpha = la[..., 0], la[..., 1]
    if alpha.min() >= 1.0:                           # an alpha channel, but opaque everywhere
        return grey
    drawn = alpha.sum()
    stroke_level = (grey * alpha).sum() / drawn if drawn > 0 else 0.0
    background = 1.0 if stroke_level < 0.5 else 0.0  # dark strokes on white, light ones on black
    return grey * alpha + background * (1.0 - alpha)


def _histogram(v: np.ndarray) -> np.ndarray:
    """Counts of the 256 grey levels of values in 0..1."""
    return np.bincount(np.round(v * 255.0).astype(np.uint8).ravel(), minlength=256)


def _median(hist: np.ndarray) -> float:
    return float(np.searchsorted(np.cumsum(hist), hist.sum() / 2.0)) / 255.0


def _otsu(hist: np.ndarray) -> float:
    """Otsu's threshold (0..1) of a 256-level histogram.

    Six lines of NumPy rather than scikit-image's threshold_otsu: none of the installed libraries
    (SciPy, Pillow, scikit-learn) has Otsu's method, and scikit-image would be a new dependency of
    the recognizer for this one function."""
    hist = hist.astype(np.float64)
    levels = np.arange(256) / 255.0
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    between = w0 * w1 * (m0 / np.maximum(w0, 1) - (m0[-1] - m0) / np.maximum(w1, 1)) ** 2
    return float(levels[int(np.argmax(between))])


def _background(v: np.ndarray) -> np.ndarray:
    """Local background level: a grey opening a third of the image wide (far wider than a stroke),
    smoothed; computed on a copy reduced to about 64 px and enlarged back."""
    h, w = v.shape
    f = max(1, min(h, w) // 64)
    small = v[:h // f * f, :w // f * f].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    k = max(3, min(small.shape) // 3)
    small = ndimage.uniform_filter(ndimage.grey_opening(small, size=(k, k)), size=k)
    return np.asarray(Image.fromarray(small.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))


def _flip_bands(v: np.ndarray) -> np.ndarray:
    """Step 2: border bands whose level is opposite to the background's flipped back (lo + hi - v)."""
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < MIN_CONTRAST:
        return v
    v = v.copy()
    for axis in (0, 1):                             # per-column medians, then per-row medians
        bright = np.median(v, axis=axis) > (lo + hi) / 2
        n = len(bright)
        # The background's side, from the middle halves of the two frame lines across these lines
        # (a fat 0 or 8 makes most middle columns' medians ink; the frame's middle stays background)
        middle_half = slice(n // 4, 3 * n // 4 + 1)
        frame = v[[0, -1], middle_half] if axis == 0 else v[middle_half][:, [0, -1]]
        background = bool(np.median(frame) > (lo + hi) / 2)
        def band(edge: np.ndarray) -> int:          # lines from the edge unlike the background (0 if too many)
            like = edge[:int(n * BAND) + 1] == background
            return int(np.argmax(like)) if like.any() else 0
        left, right = band(bright), band(bright[::-1])
        for band_slice in (slice(0, left), slice(n - right, n)):
            index = (slice(None), band_slice) if axis == 0 else (band_slice, slice(None))
            v[index] = lo + hi - v[index]
    return v


def _levelled(v: np.ndarray, background, pixel_noise: bool = False) -> tuple:
    """(ink above the background clipped at 0, typical ink level, the background's noise sigma).

    The noise is the spread of what is left of the background, or with `pixel_noise` that of
    neighbouring pixels' differences: a smooth residue (fog the local background did not follow)
    is then not taken for noise."""
    rest = v - background
    s = np.clip(rest, 0.0, 1.0)
    peak = float(s.max())
    if peak < MIN_CONTRAST:
        raise NoInk("no ink found: the image is blank or uniform")
    ink = s >= max(_otsu(_histogram(s / peak)) * peak, MIN_CONTRAST)
    level = float(np.percentile(s[ink], 90))           # typical ink, above the background
    sample = np.diff(rest, axis=1).ravel() / np.sqrt(2) if pixel_noise else rest[::2, ::2]
    noise = 1.4826 * float(np.median(np.abs(sample - np.median(sample))))   # the background's sigma
    return s, level, noise


def _strokes(s: np.ndarray) -> np.ndarray:
    """Step 4's mask of the strokes: despeckled (a small image strewn with 1-2 px specks); marks
    that touch the frame and span 90% of it, or are much smaller than the largest blob, without
    their thin parts; no blobs much smaller than the largest."""
    mask = s > INK_LEVEL
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if min(s.shape) < 3 * SIDE and (np.bincount(labels.ravel())[1:] <= 2).sum() >= SALT:
        mask = ndimage.median_filter(s, size=3) > INK_LEVEL      # salt-and-pepper: despeckle
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        raise NoInk("no ink found: nothing stands out from the background")
    frame = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    frame = frame[frame > 0]
    if len(frame):                 # marks on the frame (lines, bars, dashes): only their thick parts stay
        boxes, area = ndimage.find_objects(labels), np.bincount(labels.ravel())
        h, w = s.shape
        marks = [k for k in frame if area[k] < MARK * area[1:].max()
                 or boxes[k - 1][0].stop - boxes[k - 1][0].start >= 0.9 * h
                 or boxes[k - 1][1].stop - boxes[k - 1][1].start >= 0.9 * w]
        if marks:
            touching = np.isin(labels, marks)
            thick = 2 * float(np.percentile(ndimage.distance_transform_edt(mask)[mask], 95))   # strokes, not lines
            width = max(3, int(round(THIN * thick)) | 1)
            opened = (mask & ~touching) | ndimage.binary_opening(touching, structure=np.ones((width, width)))
            if opened.any():       # else the mark along the frame is the digit itself
                mask = opened
                labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= SPECK * sizes.max()
    return keep[labels]


def oriented(image: Image.Image) -> tuple:
    """Steps 1-3: (levels 0..1 with the ink lighter than the background, the background's median
    level); NoInk for a blank or uniform image."""
    v = _flip_bands(_levels(image))
    hist = _histogram(v)
    median = _median(hist)
    levels = np.flatnonzero(hist) / 255.0
    lo, hi = float(levels[0]), float(levels[-1])
    if median - lo > hi - median:                    # the ink is darker than the background
        v, median, lo, hi = 1.0 - v, 1.0 - median, 1.0 - hi, 1.0 - lo
    if hi - median < MIN_CONTRAST:
        raise NoInk("no ink found: the image is blank or uniform")
    return v, median


def ink_map(v: np.ndarray, median: float) -> np.ndarray:
    """Step 4, on `oriented`'s result: float32 ink (1 = full ink, 0 = background) at the image's
    resolution."""
    if min(v.shape) >= 3 * SIDE:   # a photo or a canvas: the background may vary across it
        s, level, noise = _levelled(v, _background(v))
        if level < NOISE_SIGMAS * noise:
            raise NoInk("no ink found: nothing stands out from the background's noise")
    else:                          # MNIST-sized: a flat background, or a local one where it is uneven (fog)
        ring = np.concatenate([v[:2].ravel(), v[-2:].ravel(), v[:, :2].ravel(), v[:, -2:].ravel()])
        ways = [(np.float32(median), False), (_background(v), True)]
        uneven = float(np.percentile(ring, 95) - np.percentile(ring, 5)) > UNEVEN
        for background, pixel_noise in (ways[::-1] if uneven else ways):
            try:
                s, level, noise = _levelled(v, background, pixel_noise)
            except NoInk:
                continue
            if level >= NOISE_SIGMAS * noise:
                break
        else:
            raise NoInk("no ink found: nothing stands out from the background's noise")
    s = np.clip(s / max(level, MIN_CONTRAST), 0.0, 1.0)
    near = ndimage.maximum_filter(_strokes(s).view(np.uint8), size=5)   # 2 px around the strokes
    return s * near


def stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width in pixels: 2 x area / perimeter of the ink (exact for long strokes)."""
    mask = (ink > INK_LEVEL).view(np.uint8)
    edge = mask & ~ndimage.minimum_filter(mask, size=3, mode="constant").astype(bool)
    return 2.0 * int(mask.sum()) / max(int(edge.sum()), 1)


def _crop(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero((ink > 0.1).any(axis=1)), np.flatnonzero((ink > 0.1).any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _thicken(ink: np.ndarray) -> np.ndarray:
    """Step 4: strokes thinner than STROKE_MIN (measured in the 20 px box) grown to STROKE_TARGET."""
    scale = BOX / max(ink.shape)                     # box pixels per source pixel
    width = stroke_width(ink) * scale
    radius = int(round((STROKE_TARGET - width) / scale / 2))
    if width >= STROKE_MIN or radius < 1:
        return ink
    return ndimage.maximum_filter(np.pad(ink, radius), size=2 * radius + 1)


def slant(ink: np.ndarray, centre: tuple | None = None) -> float:
    """Horizontal shift per row of the ink (covariance of x and y over variance of y), about its
    centre of mass (`centre`, when the caller has it already)."""
    cy, cx = ndimage.center_of_mass(ink) if centre is None else centre
    ys, xs = np.indices(ink.shape)
    var_y = (ink * (ys - cy) ** 2).sum()
    return float((ink * (ys - cy) * (xs - cx)).sum() / var_y) if var_y > 0 else 0.0


def deskewed(ink: np.ndarray) -> np.ndarray:
    """Shear rows sideways so the ink's principal axis is vertical (the classic MNIST deskew)."""
    centre = ndimage.center_of_mass(ink)
    alpha, cy = slant(ink, centre), centre[0]
    h, w = ink.shape
    pad = int(np.ceil(abs(alpha) * h)) + 1
    wide = np.pad(ink, ((0, 0), (pad, pad)))
    # output (y, x) samples input (y, x + alpha * (y - cy)): a slanted stroke becomes vertical
    matrix = np.array([[1.0, 0.0], [alpha, 1.0]])
    offset = np.array([0.0, -alpha * cy])
    return ndimage.affine_transform(wide, matrix, offset=offset, order=1, mode="constant")


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Longer side to BOX pixels, aspect ratio kept (anti-aliased), values 0..1."""
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    small = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
    return small / max(float(small.max()), 1e-6)


def _place(digit: np.ndarray) -> np.ndarray:
    """Into the 28 x 28 frame with the centre of mass at (14, 14), whole digit kept in frame."""
    h, w = digit.shape
    cy, cx = ndimage.center_of_mass(digit)
    top = int(np.clip(round(CENTRE - cy), 0, SIDE - h))
    left = int(np.clip(round(CENTRE - cx), 0, SIDE - w))
    frame = np.zeros((SIDE, SIDE), np.float32)
    frame[top:top + h, left:left + w] = digit
    return frame


def to_mnist(image: Image.Image, deskew: bool = False) -> np.ndarray:
    """A Pillow image (any mode) -> uint8 [28, 28], MNIST style; NoInk if it holds no digit."""
    v, median = oriented(image)
    full = ink_map(v, median)                       # NoInk if there is no digit
    if full.shape == (SIDE, SIDE) and not deskew:
        # MNIST's own format already: only polarity and border bands are put right; levels are
        # left to the model (it normalizes them itself), geometry as it is.
        return np.round((v - v.min()) / max(float(np.ptp(v)), 1e-6) * 255.0).astype(np.uint8)
    ink = _crop(_thicken(_crop(full)))
    if deskew:
        ink = _crop(deskewed(ink))
    out = _place(_fit_box(ink))
    return np.round(out * 255.0).astype(np.uint8)


def png_data_url(image28: np.ndarray) -> str:
    """The 28 x 28 uint8 image as a PNG data URL (what the drawing page shows)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image28, np.uint8).reshape(SIDE, SIDE)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
