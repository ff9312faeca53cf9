"""Corruptions on a few synthetic digits: shape, dtype, seeding, input left alone, and each one's effect."""
import numpy as np
import pytest

from tasks import corruptions
from tasks.corruptions import CORRUPTIONS, corrupt

FIXED = {"gaussian_blur", "scale", "brightness", "contrast", "stripe", "canny_edges"}   # no randomness


def digits() -> np.ndarray:
    """Four 28 x 28 uint8 'digits' drawn with soft-edged strokes: 1, 0, 7 and a 1 at the left edge."""
    rr, cc = np.mgrid[0:28, 0:28].astype(float)
    ink = lambda dist: np.clip(2.0 - dist, 0, 1)          # strokes about 3 px wide
    one = ink(np.where((rr > 5) & (rr < 22), np.abs(cc - 14), 99))
    zero = ink(np.abs(np.hypot((rr - 14) / 8, (cc - 14) / 5) - 1) * 6)
    seven = np.maximum(ink(np.where((cc > 8) & (cc < 20), np.abs(rr - 6), 99)),
                       ink(np.where((rr > 6) & (rr < 22), np.abs(cc - (19 - (rr - 6) * 0.5)), 99)))
    edge = ink(np.where((rr > 5) & (rr < 22), np.abs(cc - 1), 99))
    return np.rint(np.stack([one, zero, seven, edge]) * 255).astype(np.uint8)


@pytest.fixture
def x():
    return digits()


MNIST_C = ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
           "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges"]


def test_the_registry_has_mnist_c_s_fifteen_in_its_order_then_two_more():
    assert list(CORRUPTIONS) == MNIST_C + ["gaussian_blur", "contrast"]
    assert FIXED < set(CORRUPTIONS)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_an_image_s_output_does_not_depend_on_its_batch_neighbours(name):
    """Same image at the same place, other images around it: the same output (and, where nothing
    is random, the same output as the image corrupted alone)."""
    x = np.tile(digits(), (2, 1, 1))
    others = x.copy()
    others[1:] = np.roll(x[1:], 3, axis=2)[::-1]
    out = corrupt(x, name, seed=4)
    np.testing.assert_array_equal(out[0], corrupt(others, name, seed=4)[0])
    if name in FIXED:
        for i in range(len(x)):
            np.testing.assert_array_equal(out[i], corrupt(x[i:i + 1], name, seed=4)[0])


def test_canny_edges_of_a_batch_are_those_of_each_image_alone(x):
    """The batch bug this guards against: a 3-D Sobel smooths across neighbouring images."""
    alone = np.concatenate([corrupt(x[i:i + 1], "canny_edges", 0) for i in range(len(x))])
    np.testing.assert_array_equal(corrupt(x, "canny_edges", 0), alone)
    shuffled = corrupt(x[::-1], "canny_edges", 0)[::-1]
    np.testing.assert_array_equal(shuffled, alone)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_uint8_same_shape_seeded_and_leaves_its_input_alone(name, x):
    before = x.copy()
    out = corrupt(x, name, seed=0)
    assert out.shape == x.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(x, before)                      # input not modified
    assert not np.array_equal(out, x)                             # the images did change
    np.testing.assert_array_equal(out, corrupt(x, name, seed=0))  # same seed, same images
    # another seed: other images, for a batch large enough that random signs cannot all coincide
    batch = np.tile(x, (4, 1, 1))
    same = np.array_equal(corrupt(batch, name, seed=0), corrupt(batch, name, seed=1))
    assert same == (name in FIXED)


def test_corrupt_keeps_a_channel_axis_and_rejects_unknown_names(x):
    assert corrupt(x[..., None], "rotate", 3).shape == (4, 28, 28, 1)
    with pytest.raises(KeyError, match="frost"):
        corrupt(x, "frost", 0)


def test_the_stream_is_seeded_by_the_seed_and_the_corruptions_place(x):
    for name in ("shear", "rotate"):
        index = list(CORRUPTIONS).index(name)
        expected = CORRUPTIONS[name](x, np.random.default_rng([7, index]))
        np.testing.assert_array_equal(corrupt(x, name, seed=7), expected)


def test_translate_moves_the_ink_without_losing_any(x):
    out = corrupt(x, "translate", seed=5)
    assert (out.reshape(4, -1).sum(1) == x.reshape(4, -1).sum(1)).all()
    cols = lambda img: np.flatnonzero(img.max(0))
    assert cols(out[3])[0] > cols(x[3])[0]                        # the digit at the left edge went right


def test_geometry_keeps_the_ink_in_the_frame_and_scale_shrinks_it(x):
    ink = lambda images: images[:3].reshape(3, -1).sum(1).astype(float)
    for name in ("shear", "rotate"):                              # area-preserving: as much ink as before
        assert np.allclose(ink(corrupt(x, name, seed=2)), ink(x), rtol=0.1), name
    small = corrupt(x, "scale", seed=0)
    factor = corruptions.SCALE
    assert np.all((ink(small) > 0.9 * factor ** 2 * ink(x)) & (ink(small) < 1.1 * factor ** 2 * ink(x)))
    height = lambda img: np.ptp(np.flatnonzero(img.max(1) > 64))
    assert all(height(small[i]) <= 0.75 * height(x[i]) for i in range(3))


def test_pixelwise_corruptions_do_what_they_say(x):
    bright = corrupt(x, "brightness", 0)
    assert bright[0, 0, 0] == 128 and bright.max() == 255
    stripe = corrupt(x, "stripe", 0)
    np.testing.assert_array_equal(stripe[:, :, :7], 255 - x[:, :, :7])
    np.testing.assert_array_equal(stripe[:, :, 7:21], x[:, :, 7:21])
    low = corrupt(x, "contrast", 0).astype(int)
    assert np.ptp(low, axis=(1, 2)).max() <= corruptions.CONTRAST * 255 + 1
    impulse = corrupt(x, "impulse_noise", 0)
    changed = np.mean(impulse != x)
    assert 0.05 < changed < corruptions.IMPULSE_AMOUNT + 0.03


def test_glass_blur_spreads_the_ink_locally_and_keeps_its_place(x):
    out = corrupt(x, "glass_blur", 0).astype(float)
    centre = lambda img: (np.indices(img.shape) * img).sum(axis=(1, 2)) / img.sum()
    for i in range(3):
        assert np.abs(centre(out[i]) - centre(x[i].astype(float))).max() < 1.0
        assert (out[i] > 0).sum() > (x[i] > 0).sum()               # blurred: wider than the strokes
        assert out[i].max() < x[i].max()


def test_lines_add_ink_and_edges_are_thin(x):
    for name in ("dotted_line", "zigzag"):
        out = corrupt(x, name, 0)
        assert (out >= x).all() and (out > x).any(), name
    edges = corrupt(x, "canny_edges", 0)
    assert set(np.unique(edges)) <= {0, 255}
    assert edges[0, 14, 14] == 0 and edges[0, 14, 12:17].max() == 255   # a 1's outline, not its middle
