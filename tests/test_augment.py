"""The model's augmentation and level layers on real MNIST digits: training-only, seeded, shapes,
dtypes and ranges kept, each family doing what it says, and level invariance."""
import dataclasses

import keras
import numpy as np
import pytest

from conftest import ROOT
from digits import augment, model, params
from digits.augment import LevelNormalize, RandomAffine, RandomDegrade
from tasks import train


def images(mnist, n=64):
    return mnist[0][:n].reshape(-1, 28, 28, 1).astype("float32") / 255


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_degrade_is_training_only_seeded_and_keeps_shape_dtype_and_range(mnist):
    x = images(mnist)
    out = numpy(RandomDegrade(rate=1.0, seed=3)(x, training=True))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3)      # 256 levels, as uint8 input
    changed = np.abs(out - x).reshape(len(x), -1).max(axis=1) > 0.05
    assert 0.6 < changed.mean() <= 1.0                    # each family has odds < 1: most, maybe not all
    np.testing.assert_array_equal(numpy(RandomDegrade(rate=1.0, seed=3)(x, training=True)), out)  # seeded
    assert not np.array_equal(numpy(RandomDegrade(rate=1.0, seed=4)(x, training=True)), out)
    np.testing.assert_array_equal(numpy(RandomDegrade(rate=1.0, seed=3)(x, training=False)), x)   # inference
    np.testing.assert_array_equal(numpy(RandomDegrade(rate=0.0, seed=3)(x, training=True)), x)


def test_degrade_rate_is_the_share_of_images_touched_and_strength_0_turns_it_off(mnist):
    x = images(mnist, 512)
    layer = RandomDegrade(rate=0.3, seed=0)
    touched = (np.abs(numpy(layer(x, training=True)) - x).reshape(len(x), -1).max(axis=1) > 1e-6).mean()
    assert 0.15 < touched < 0.35
    layer.strength.assign(0.0)
    np.testing.assert_array_equal(numpy(layer(x, training=True)), x)


@pytest.mark.parametrize("family", ["blur", "noise", "marks", "photometric", "outline"])
def test_each_degradation_family_does_what_it_says(mnist, family, monkeypatch):
    monkeypatch.setattr(RandomDegrade, "FAMILIES", {f: float(f == family) for f in RandomDegrade.FAMILIES})
    x = images(mnist, 128)
    out = numpy(RandomDegrade(rate=1.0, seed=1)(x, training=True))
    ink, paper = x > 0.5, x == 0
    if family == "blur":                                  # ink spreads: less peak, more inked pixels
        assert out.max(axis=(1, 2, 3)).mean() < x.max(axis=(1, 2, 3)).mean()
        assert (out > 0.05).sum() > (x > 0.05).sum()
    elif family == "noise":                               # the background is no longer clean
        assert (out[paper] > 0.1).mean() > 0.02
    elif family == "marks":                               # lines, bars or patches on the paper
        assert ((out > 0.3) & paper).reshape(len(x), -1).any(axis=1).mean() > 0.5
    elif family == "photometric":                         # the paper is lifted or uneven
        assert np.median(out[paper]) > 0.02 or np.std(out[paper]) > 0.05
    else:                                                 # only a rim: the inside of the strokes goes dark
        assert (out[ink] < 0.5).mean() > 0.5 and ((out > 0.5) & paper).any()


def test_affine_with_elastic_moves_the_ink_a_little_and_only_in_training(mnist):
    x = images(mnist)
    layer = RandomAffine(0, 0, 0, seed=2, elastic=1.5)
    out = numpy(layer(x, training=True))
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.abs(out - x).mean() > 0.005                                  # the strokes moved...
    assert np.allclose(out.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=0.2)   # ...not the ink's amount
    np.testing.assert_array_equal(numpy(layer(x, training=False)), x)
    still = numpy(RandomAffine(0, 0, 0, seed=2, elastic=0.0)(x, training=True))
    np.testing.assert_allclose(still, x, atol=1e-5)


def test_level_normalize_removes_a_uniform_lift_and_a_contrast_change(mnist):
    x = images(mnist)
    level = LevelNormalize()
    base = numpy(level(x))
    np.testing.assert_allclose(numpy(level(0.3 * x + 0.5)), base, atol=1e-5)
    assert numpy(level(np.full((2, 28, 28, 1), 0.7, np.float32))).max() == 0        # uniform: all 0


def test_the_model_carries_the_level_layer_and_its_augmentation_is_training_only(mnist):
    cfg = params.load(ROOT / "params.yaml").train.presets["quick"]
    arch = dataclasses.replace(cfg.arch, widths=(4, 8), dense=16)
    m = model.build(arch, cfg.augment, seed=0)
    assert [type(m.get_layer(n)) for n in ("augment", "degrade", "levels")] == [RandomAffine, RandomDegrade, LevelNormalize]
    x = mnist[0][:32].reshape(-1, 28, 28, 1)
    np.testing.assert_array_equal(m.predict(x, verbose=0), m.predict(x, verbose=0))


def test_the_last_clean_epochs_switch_the_degradations_off(tmp_path):
    cfg = params.load(ROOT / "params.yaml").train.presets["quick"]
    cfg = dataclasses.replace(cfg, epochs=5, augment=dataclasses.replace(cfg.augment, clean_epochs=2))
    m = model.build(dataclasses.replace(cfg.arch, widths=(4, 8), dense=16), cfg.augment, seed=0)
    tail = next(c for c in train.callbacks(train.Checkpoint(tmp_path, "fp"), cfg, live=object())
                if type(c).__name__ == "CleanTail")
    tail.set_model(m)
    strength = []
    for epoch in range(5):
        tail.on_epoch_begin(epoch)
        strength.append(float(numpy(m.get_layer("degrade").strength)))
    assert strength == [1, 1, 1, 0, 0]


def test_training_never_calls_the_robustness_suite():
    """The held-out protocol: the corruptions are a test, never an augmentation."""
    for module in (augment, model, train):
        source = open(module.__file__).read()
        assert "corruptions" not in source.replace("tasks/corruptions.py", ""), module.__name__


def test_the_model_s_answer_ignores_a_brightness_shift_and_a_contrast_change(mnist, digit_model):
    """The saved model carries its level normalization: a grey background or faded ink is the
    same digit to it (the small test model, trained with the `quick` recipe's augmentation)."""
    m = model.load(digit_model)
    x = mnist[2][:200].reshape(-1, 28, 28, 1)
    dim = np.round(x * 0.6).astype(np.uint8)                            # ink up to 153
    brighter = dim + np.uint8(100)                                       # a uniform shift, no clipping
    faded = (np.round(x * 0.3) + 120).astype(np.uint8)                    # contrast x0.3 on a grey ground
    predict = lambda images: m.predict(images, verbose=0)
    np.testing.assert_allclose(predict(brighter), predict(dim), atol=1e-5)   # identical after the layer
    assert (predict(faded).argmax(axis=1) == predict(x).argmax(axis=1)).mean() >= 0.99
    assert (predict(x).argmax(axis=1) == mnist[3][:200]).mean() >= 0.95     # and the answers are right


def test_the_blurs_are_the_separable_gaussian_convolutions_zero_beyond_the_frame(mnist):
    """Matrix products on both sides give what a 'same' convolution with the normalized taps gives."""
    x = images(mnist, 8)
    got = augment._gaussian_blurs(x, augment.BLUR_SIGMAS)
    for sigma, blurred in zip(augment.BLUR_SIGMAS, got):
        radius = int(np.ceil(3 * sigma))
        taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
        taps /= taps.sum()
        padded = np.pad(x[..., 0], ((0, 0), (radius, radius), (radius, radius)))
        rows = sum(t * padded[:, i:i + 28, :] for i, t in enumerate(taps))
        want = sum(t * rows[:, :, i:i + 28] for i, t in enumerate(taps))
        assert numpy(blurred).shape == x.shape
        np.testing.assert_allclose(numpy(blurred)[..., 0], want, atol=1e-5)
    dot = np.zeros((1, 28, 28, 1), "float32")
    dot[0, 14, 14, 0] = 1.0
    one, two = (numpy(b)[0, ..., 0] for b in augment._gaussian_blurs(dot, augment.BLUR_SIGMAS))
    assert abs(one.sum() - 1) < 1e-5 and abs(two.sum() - 1) < 1e-5            # ink kept away from the border
    assert two.max() < one.max() < 1 and one[14, 14] == one.max()              # wider spreads further
    corner = np.zeros((1, 28, 28, 1), "float32")
    corner[0, 0, 0, 0] = 1.0
    assert numpy(augment._gaussian_blurs(corner, (2.2,))[0]).sum() < 0.5       # what falls outside is lost
