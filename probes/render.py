"""MNIST images drawn back as a user would hand them in: large, off-centre, in a file.

Inputs for the recognizer's tests and benchmarks (the round trip of tests/test_preprocess.py, the
CLI and API tests, the deskew and CLI parts of `python -m bench.serve`): a 28 x 28 MNIST image is
enlarged (the digit 100-250 px tall), placed off-centre with random margins, and saved either as a
JPEG photo (dark ink on light, slightly tinted and noisy paper) or as a canvas export (black strokes
on a fully transparent background, RGBA PNG).
"""
import io

import numpy as np
from PIL import Image

KINDS = ("jpeg", "rgba")


def render(image28: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """uint8 [28, 28] (white on black) -> the encoded file's bytes (JPEG or PNG)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    side = int(rng.integers(100, 251)) * 28 // 20                # the 20 px box becomes 100-250 px
    ink = Image.fromarray(np.asarray(image28, np.uint8).reshape(28, 28)).resize((side, side),
                                                                                 Image.Resampling.BICUBIC)
    top, bottom, left, right = (int(m) for m in rng.integers(0, side // 2 + 1, size=4))
    a = np.pad(np.asarray(ink, np.float32) / 255.0, ((top, bottom), (left, right)))
    out = io.BytesIO()
    if kind == "jpeg":
        paper = rng.uniform(190, 250) + rng.uniform(-8, 8, size=3)          # off-white, tinted
        pen = rng.uniform(0, 70, size=3)
        rgb = paper * (1 - a[..., None]) + pen * a[..., None] + rng.normal(0, 4, size=a.shape + (1,))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(out, format="JPEG",
                                                                     quality=int(rng.integers(70, 95)))
    else:
        rgba = np.zeros(a.shape + (4,), np.uint8)
        rgba[..., 3] = np.round(a * 255).astype(np.uint8)
        Image.fromarray(rgba).save(out, format="PNG")
    return out.getvalue()


def drawn_digit() -> bytes:
    """A 7 as the drawing page sends it: black 18 px strokes on a transparent 280 x 280 canvas."""
    import io

    from PIL import Image, ImageDraw
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    pen = ImageDraw.Draw(canvas)
    pen.line([(80, 60), (200, 60), (120, 230)], fill=(0, 0, 0, 255), width=18, joint="curve")
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
