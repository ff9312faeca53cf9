"""The shared preprocessing: any image -> MNIST-style 28 x 28 (polarity, alpha, crop, 20 px box,
centre of mass, noise, no ink), and the round trip of re-rendered MNIST images through the CLI's
recognizer against the model's answers on the originals."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits import preprocess, recognize
from digits.preprocess import NoInk, to_mnist
from probes import render


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def bbox(image28: np.ndarray):
    """(height, width) of the pixels above 0."""
    rows, cols = np.flatnonzero(image28.any(axis=1)), np.flatnonzero(image28.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def centre_of_mass(image28: np.ndarray):
    ys, xs = np.indices(image28.shape)
    w = image28.astype(float)
    return (w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()


def big_ink(mnist, i: int, side: int = 200) -> np.ndarray:
    """MNIST training image i enlarged to side x side, white on black, as floats 0..1."""
    im = Image.fromarray(mnist[0][i].reshape(28, 28)).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def on_canvas(ink: np.ndarray, shape, top: int, left: int) -> np.ndarray:
    canvas = np.zeros(shape, np.float32)
    canvas[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return canvas


def grey(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8))


def test_mnist_images_come_back_almost_unchanged(mnist):
    x = mnist[0][:300].reshape(-1, 28, 28)
    diffs = np.array([np.abs(to_mnist(Image.fromarray(im)).astype(int) - im).mean() for im in x])
    assert np.median(diffs) < 1.0 and (diffs < 3).mean() >= 0.95


def test_output_is_white_on_black_in_a_20px_box_centred_by_mass(mnist):
    ink = big_ink(mnist, 0)
    out = to_mnist(grey(on_canvas(ink, (500, 700), 30, 420)))     # off-centre, wide canvas
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    assert max(bbox(out)) == 20 and out.max() == 255
    assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0     # black frame
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_polarity_does_not_matter(mnist):
    ink = on_canvas(big_ink(mnist, 1), (260, 300), 40, 70)
    light_on_dark = to_mnist(grey(ink))
    dark_on_light = to_mnist(grey(1 - ink))
    grey_paper = to_mnist(grey(0.75 - 0.6 * ink))                  # dark pen on grey paper
    assert np.abs(light_on_dark.astype(int) - dark_on_light).max() <= 1
    assert np.abs(light_on_dark.astype(int) - grey_paper).mean() < 3
    rgb = Image.merge("RGB", [grey(1 - ink)] * 3)
    assert np.abs(to_mnist(rgb).astype(int) - light_on_dark).max() <= 1


def test_transparent_images_are_read_through_their_alpha(mnist):
    ink = on_canvas(big_ink(mnist, 2), (280, 280), 20, 60)
    expected = to_mnist(grey(ink))
    alpha = np.round(ink * 255).astype(np.uint8)
    black = np.zeros(ink.shape, np.uint8)
    canvas = Image.fromarray(np.dstack([black, black, black, alpha]))      # a canvas export
    white_strokes = Image.fromarray(np.dstack([black + 255] * 3 + [alpha]))
    palette = Image.open(io.BytesIO(encode(canvas.quantize(colors=64))))     # P with tRNS
    assert palette.mode == "P" and "transparency" in palette.info
    for image in (canvas, white_strokes, Image.open(io.BytesIO(encode(canvas))), canvas.convert("LA")):
        assert np.abs(to_mnist(image).astype(int) - expected).max() <= 2, image.mode
    for image in (canvas.quantize(colors=64), palette):            # 64 levels of alpha, not 256
        assert np.abs(to_mnist(image).astype(int) - expected).mean() < 2


def test_palette_images_and_jpeg_photos_are_read(mnist):
    ink = on_canvas(big_ink(mnist, 3), (240, 320), 10, 100)
    expected = to_mnist(grey(ink))
    photo = Image.open(io.BytesIO(encode(Image.merge("RGB", [grey(0.9 - 0.8 * ink)] * 3), "JPEG")))
    assert np.abs(to_mnist(photo).astype(int) - expected).mean() < 4
    palette = grey(1 - ink).convert("P")
    assert palette.mode == "P" and np.abs(to_mnist(palette).astype(int) - expected).mean() < 4


def test_non_square_ink_keeps_its_aspect_ratio():
    tall = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(tall).rectangle([40, 20, 69, 169], fill=0)      # a bar 30 wide, 150 tall
    h, w = bbox(to_mnist(tall))
    assert h == 20 and 3 <= w <= 6                                # 30 / 150 * 20 = 4
    wide = Image.new("L", (400, 120), 255)
    ImageDraw.Draw(wide).rectangle([250, 50, 369, 89], fill=0)    # 120 wide, 40 tall
    h, w = bbox(to_mnist(wide))
    assert w == 20 and 6 <= h <= 9                                # 40 / 120 * 20 = 6.7


def test_uneven_lighting_is_levelled(mnist):
    ink = on_canvas(big_ink(mnist, 4), (400, 400), 120, 60)
    clean = to_mnist(grey(1 - ink))
    shade = np.linspace(1.0, 0.4, 400)[None, :] * np.ones((400, 1))        # light falls off to the right
    paper = shade * (1 - 0.85 * ink) + np.random.default_rng(0).normal(0, 0.02, ink.shape)
    out = to_mnist(grey(paper))
    assert np.abs(out.astype(int) - clean).mean() < 5
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_specks_of_noise_are_dropped(mnist):
    ink = on_canvas(big_ink(mnist, 5), (400, 400), 150, 150)
    clean = to_mnist(grey(1 - ink))
    rng = np.random.default_rng(0)
    specks = np.zeros_like(ink)
    for y, x in rng.integers(0, 397, size=(40, 2)):                          # 3 x 3 dots all over
        specks[y:y + 3, x:x + 3] = 1.0
    out = to_mnist(grey(1 - 0.85 * np.maximum(ink, specks)))
    assert np.abs(out.astype(int) - clean).mean() < 3 and max(bbox(out)) == 20


def test_thin_pen_strokes_are_thickened_to_mnist_weight():
    thin = Image.new("L", (600, 600), 255)
    ImageDraw.Draw(thin).line([(200, 100), (400, 100), (260, 500)], fill=0, width=3)   # a 7, 3 px pen
    out = to_mnist(thin)
    assert (out > 127).sum() >= 55 and out.max() == 255      # MNIST's 7s: 55 (5th percentile) to 88 (median)


@pytest.mark.parametrize("image", [
    Image.new("L", (100, 100), 255), Image.new("L", (28, 28), 0), Image.new("RGB", (640, 480), (90, 120, 30)),
    Image.new("RGBA", (280, 280), (0, 0, 0, 0)),                  # an empty canvas
    Image.fromarray(np.linspace(200, 215, 300 * 300).reshape(300, 300).astype(np.uint8)),
    Image.open(io.BytesIO(encode(grey(np.random.default_rng(0).normal(0.8, 0.04, (480, 640))), "JPEG"))),
], ids=["white", "black", "colour", "empty-canvas", "faint-gradient", "blank-paper-photo"])
def test_an_image_without_ink_is_an_error_not_a_guess(image):
    with pytest.raises(NoInk, match="no ink"):
        to_mnist(image)


def test_deskew_straightens_a_slanted_stroke():
    slanted = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(slanted).line([(200, 30), (100, 270)], fill=255, width=24)    # leaning right
    plain, straight = to_mnist(slanted), to_mnist(slanted, deskew=True)
    assert preprocess.slant(plain.astype(np.float32)) < -0.3
    assert abs(preprocess.slant(straight.astype(np.float32))) < 0.05
    assert bbox(straight)[1] < bbox(plain)[1] / 2 and bbox(straight)[0] == 20


def test_unreadable_input_is_named_as_such(tmp_path):
    with pytest.raises(preprocess.NotAnImage, match="not an image"):
        preprocess.open_image(b"hello, this is text")
    png = encode(Image.new("L", (50, 50), 255))
    with pytest.raises(preprocess.NotAnImage, match="cannot decode"):
        preprocess.open_image(png[:60])                                           # truncated
    with pytest.raises(FileNotFoundError):
        preprocess.open_image(tmp_path / "missing.png")


def test_pixels_must_be_784_integers_in_range():
    ok = preprocess.pixels_image([0] * 783 + [255])
    assert ok.mode == "L" and ok.size == (28, 28) and np.asarray(ok)[27, 27] == 255
    for bad, match in (([0] * 783, "got 783"), ([0] * 785, "got 785"), ([0] * 783 + [256], "pixel 783 is 256"),
                       ([-1] + [0] * 783, "pixel 0 is -1"), ([0.5] + [0] * 783, "pixel 0 is 0.5"),
                       ([True] + [0] * 783, "pixel 0 is True"), ("0" * 784, "got str")):
        with pytest.raises(preprocess.BadPixels, match=match):
            preprocess.pixels_image(bad)


def test_png_data_url_holds_the_image(mnist):
    import base64
    image = mnist[0][5].reshape(28, 28)
    url = preprocess.png_data_url(image)
    assert url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.mode == "L" and np.array_equal(np.asarray(back), image)


def test_round_trip_of_rendered_mnist_digits_keeps_the_models_answer(mnist, predictor, tmp_path):
    """300 MNIST training images the test model never saw, rendered 100-250 px tall, off-centre,
    half as JPEG photos (dark on light) and half as RGBA canvas exports, read back from files by
    the recognizer: the same digit as the model gives for the 28 x 28 original, for >= 98%."""
    rng = np.random.default_rng(12)
    index = rng.choice(np.arange(50_000, 60_000), size=300, replace=False)
    originals = mnist[0][index].reshape(-1, 28, 28)
    files = []
    for k, image in enumerate(originals):
        kind = render.KINDS[k % 2]
        files.append(tmp_path / f"{k:03d}.{'jpg' if kind == 'jpeg' else 'png'}")
        files[-1].write_bytes(render.render(image, kind, rng))
    out, err = io.StringIO(), io.StringIO()
    assert recognize.recognize(files, predictor, as_json=True, out=out, err=err) == 0, err.getvalue()
    import json
    got = np.array([json.loads(line)["digit"] for line in out.getvalue().splitlines()])
    expected = predictor(originals).argmax(axis=1)
    agree = (got == expected).mean()
    assert len(got) == 300 and agree >= 0.98, f"{agree:.1%} agree"
    assert (expected == mnist[1][index]).mean() >= 0.95                  # and the model is right


def readable(mnist, predictor, n=8):
    """n MNIST test digits (28 x 28 uint8) that the test model reads right as they are, and labels."""
    x, y = mnist[2][:200].reshape(-1, 28, 28), mnist[3][:200]
    right = np.flatnonzero(predictor(x).argmax(axis=1) == y)[:n]
    return x[right], y[right]


def test_inverted_bars_at_the_borders_are_flipped_back_not_taken_for_ink(mnist, predictor):
    x, y = readable(mnist, predictor)
    barred = x.copy()
    barred[:, :, :7], barred[:, :, 21:] = 255 - x[:, :, :7], 255 - x[:, :, 21:]     # MNIST-C's stripe
    for clean, bars in zip(x, barred):
        assert np.abs(to_mnist(Image.fromarray(bars)).astype(int) - to_mnist(Image.fromarray(clean))).max() <= 1
    photo = grey(0.9 - 0.8 * on_canvas(big_ink(mnist, 7), (300, 300), 50, 50))
    a = np.asarray(photo).copy()
    a[:, :40], a[:, -30:] = 255 - a[:, :40], 255 - a[:, -30:]              # dark margins of a scan
    assert np.abs(to_mnist(Image.fromarray(a)).astype(int) - to_mnist(photo)).mean() < 2
    read = predictor(np.stack([to_mnist(Image.fromarray(b)) for b in barred])).argmax(axis=1)
    assert (read == y).all()


def test_a_fat_digit_is_not_taken_for_inverted_bars():
    """A thick 0 inks most middle columns, but the frame is background: nothing is flipped, and
    the same digit with MNIST-C's inverted stripes gets them flipped back."""
    r, c = np.mgrid[:28, :28] - 13.5
    inside = lambda tall, wide: (r / tall) ** 2 + (c / wide) ** 2 <= 1
    ring = (inside(12.5, 8) & ~inside(6, 3)).astype(np.float32)            # nothing on the frame
    assert (np.median(ring[:, 7:22], axis=0) > 0.5).sum() > 7       # most middle columns are ink
    assert np.array_equal(preprocess._flip_bands(ring), ring)
    barred = ring.copy()
    barred[:, :7], barred[:, 21:] = 1 - ring[:, :7], 1 - ring[:, 21:]
    assert np.array_equal(preprocess._flip_bands(barred), ring)


def test_a_ruled_line_across_the_page_is_not_taken_for_ink(mnist, predictor):
    x, y = readable(mnist, predictor)
    rows = []
    for k, image in enumerate(x):
        ink = on_canvas(np.asarray(Image.fromarray(image).resize((160, 160), Image.Resampling.BICUBIC),
                                   np.float32) / 255, (260, 320), 50, 80)
        clean = to_mnist(grey(1 - 0.85 * ink))
        lined = ink.copy()
        row = [225, 130][k % 2]                       # below the digit, or through it
        lined[row:row + 4, :] = 1.0                   # a 4 px pen line from edge to edge
        out = to_mnist(grey(1 - 0.85 * lined))
        assert max(bbox(out)) == 20 and abs(bbox(out)[0] - bbox(clean)[0]) <= 1   # cropped to the digit
        if row == 225:
            assert np.abs(out.astype(int) - clean).mean() < 1
        rows.append(out)
    assert (predictor(np.stack(rows)).argmax(axis=1) == y).mean() >= 7 / 8


def test_a_fogged_small_digit_is_read_not_refused(mnist, predictor):
    from tasks import corruptions
    x, y = readable(mnist, predictor)
    fogged = corruptions.corrupt(x, "fog", seed=0)
    out = np.stack([to_mnist(Image.fromarray(f)) for f in fogged])        # no NoInk
    assert (predictor(out).argmax(axis=1) == y).mean() >= 6 / 8
