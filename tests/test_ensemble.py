"""The ensemble's combination and test-time views (digits/ensemble.py), on tiny synthetic data."""
import numpy as np
import pytest

from digits import ensemble


class Fake:
    """A stand-in model: probabilities from where the ink is (so views change the answer)."""

    def __init__(self, weights):
        self.w = np.asarray(weights, np.float32).reshape(28 * 28, 10)
        self.calls = 0

    def predict_on_batch(self, x):
        self.calls += 1
        logits = x.reshape(len(x), -1).astype(np.float32) @ self.w / 255.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = np.zeros((5, 28, 28), np.uint8)
    x[:, 8:20, 12:16] = rng.integers(100, 256, size=(5, 12, 4))       # a thick vertical stroke
    return x


@pytest.fixture
def models():
    rng = np.random.default_rng(1)
    return {"a": Fake(rng.normal(size=(784, 10))), "b": Fake(rng.normal(size=(784, 10)))}


def test_combine_is_the_mean_of_the_members_probabilities():
    p = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    q = np.array([[0.5, 0.5], [0.6, 0.4]], np.float32)
    out = ensemble.combine([p, q])
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert out == pytest.approx(np.array([[0.7, 0.3], [0.4, 0.6]]))
    assert ensemble.combine([p]) == pytest.approx(p)


def test_combine_rejects_nothing_and_mismatched_shapes():
    with pytest.raises(ValueError, match="nothing to combine"):
        ensemble.combine([])
    with pytest.raises(ValueError, match=r"differ in shape: \[\(2, 10\), \(3, 10\)\]"):
        ensemble.combine([np.zeros((2, 10)), np.zeros((3, 10))])


def test_one_member_without_tta_is_that_members_own_output(images, models):
    one = {"a": models["a"]}
    own = models["a"].predict_on_batch(images.reshape(-1, 28, 28, 1))
    out = ensemble.predict(one, images)
    assert out.shape == (5, 10) and out.dtype == np.float32
    assert out == pytest.approx(own, abs=1e-6)
    assert out.sum(axis=1) == pytest.approx(np.ones(5), abs=1e-5)


def test_two_members_average_and_each_member_is_reported(images, models):
    per = ensemble.member_probabilities(models, images)
    assert list(per) == ["a", "b"]
    assert ensemble.predict(models, images) == pytest.approx((per["a"] + per["b"]) / 2, abs=1e-6)


def test_identity_only_tta_is_no_tta_and_each_view_is_one_pass(images, models):
    assert len(ensemble.views(images, ())) == 1
    np.testing.assert_array_equal(ensemble.views(images, ())[0][..., 0], images)
    a = models["a"]
    plain = ensemble.predict({"a": a}, images, ())
    calls = a.calls
    with_tta = ensemble.predict({"a": a}, images, ("shift", "rotate"))
    assert a.calls - calls == 7                               # the image, 4 shifts, 2 rotations
    assert not np.allclose(plain, with_tta)                    # the views do change the answer
    views = ensemble.views(images, ("shift", "rotate"))
    assert with_tta == pytest.approx(np.mean([a.predict_on_batch(v) for v in views], axis=0), abs=1e-6)


def test_view_probabilities_give_plain_and_tta_from_one_pass_per_view(images, models):
    calls = {n: m.calls for n, m in models.items()}
    per_view = ensemble.view_probabilities(models, images, ("shift", "rotate"))
    assert {n: m.calls - calls[n] for n, m in models.items()} == {"a": 7, "b": 7}
    assert list(per_view) == ["a", "b"] and all(len(ps) == 7 and ps[0].shape == (5, 10) for ps in per_view.values())
    plain = ensemble.member_probabilities(models, images)
    for name, ps in per_view.items():
        assert ps[0] == pytest.approx(plain[name], abs=1e-6)            # the first view is the images
    assert ensemble.combine([ensemble.combine(ps) for ps in per_view.values()]) == pytest.approx(
        ensemble.predict(models, images, ("shift", "rotate")), abs=1e-6)


def test_shift_moves_by_one_pixel_without_wrapping():
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 0, 5] = 200                                           # on the top edge
    x[0, 10, 27] = 100                                         # on the right edge
    _, right, left, down, up = ensemble.views(x, ("shift",))
    assert right[0, 0, 6, 0] == 200 and right[0, 10, 27, 0] == 0 and right.sum() == 200   # no wrap
    assert left[0, 0, 4, 0] == 200 and left[0, 10, 26, 0] == 100
    assert down[0, 1, 5, 0] == 200 and down[0, 11, 27, 0] == 100
    assert up[0, 9, 27, 0] == 100 and up.sum() == 100                                    # 200 left the frame
    for v in (right, left, down, up):
        assert v.dtype == np.uint8 and v.shape == (1, 28, 28, 1)


def test_rotations_turn_both_ways_and_keep_the_ink_inside(images):
    _, plus, minus = ensemble.views(images, ("rotate",))
    assert plus.dtype == np.uint8 and plus.shape == (5, 28, 28, 1)
    assert not np.array_equal(plus, minus) and not np.array_equal(plus[..., 0], images)
    # a small turn about the centre keeps almost all the ink of a centred stroke
    assert plus.sum() == pytest.approx(images.sum(), rel=0.05)
    np.testing.assert_array_equal(ensemble.views(images, ("rotate",))[1], plus)          # deterministic


def test_model_files_names_every_missing_member(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/a.keras").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"no model models/b.keras, models/c.keras; train the ensemble"):
        ensemble.model_files(["a", "b", "c"])
    assert {k: str(v) for k, v in ensemble.model_files(["a"]).items()} == {"a": "models/a.keras"}
