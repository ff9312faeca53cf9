"""Calibration metrics against hand-computed values on tiny examples, and temperature scaling."""
import numpy as np
import pytest
from scipy.special import softmax

from tasks import calibration as cal
from test_evaluate_submit import assert_plot


def confident(conf, predicted, classes=10):
    """Probability rows: `conf` on the predicted class, the rest spread evenly."""
    conf = np.asarray(conf, dtype=float)
    p = np.repeat(((1 - conf) / (classes - 1))[:, None], classes, axis=1)
    p[np.arange(len(conf)), predicted] = conf
    return p


def test_a_perfectly_calibrated_toy_has_no_calibration_error():
    probs = confident([0.8] * 10, [3] * 10)
    y = np.array([3] * 8 + [4] * 2)                               # 8 of 10 right at confidence 0.8
    assert cal.ece(probs, y) == pytest.approx(0, abs=1e-12)
    assert cal.mce(probs, y) == pytest.approx(0, abs=1e-12)


def test_ece_and_mce_for_two_bins_by_hand():
    # 4 images at 0.85, 2 right -> gap 0.35; 6 images at 0.55, 3 right -> gap 0.05
    probs = confident([0.85] * 4 + [0.55] * 6, [1] * 10)
    y = np.array([1, 1, 0, 0] + [1, 1, 1, 0, 0, 0])
    assert cal.ece(probs, y, bins=10) == pytest.approx(0.35 * 4 / 10 + 0.05 * 6 / 10)   # 0.17
    assert cal.mce(probs, y, bins=10) == pytest.approx(0.35)
    rows = cal.reliability(probs, y, bins=10)
    assert [(lo, hi, n) for lo, hi, _, _, n in rows] == [(0.5, 0.6, 6), (0.8, 0.9, 4)]
    assert [(c, a) for _, _, c, a, _ in rows] == [pytest.approx((0.55, 0.5)), pytest.approx((0.85, 0.5))]
    assert cal.ece(probs, y, bins=1) == pytest.approx(abs(0.5 - 0.67))                   # one bin: |5/10 - mean conf|


def test_brier_and_nll_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    y = np.array([0, 2])
    # (0.09 + 0.04 + 0.01) and (0.25 + 0.25 + 1)
    assert cal.brier(probs, y) == pytest.approx((0.14 + 1.5) / 2)
    # -log 0.7 and -log 1e-7 (the zero is clipped)
    assert cal.nll(probs, y) == pytest.approx((-np.log(0.7) - np.log(1e-7)) / 2)


def test_reliability_rows_count_every_sample_once():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 3, (500, 10)), axis=1)
    y = rng.integers(0, 10, 500)
    rows = cal.reliability(probs, y)
    assert sum(r[4] for r in rows) == 500
    assert all(lo < c <= hi + 1e-12 and 0 <= a <= 1 for lo, hi, c, a, _ in rows)


def test_fit_temperature_recovers_the_overconfidence_factor():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4000, 10))
    y = np.array([rng.choice(10, p=q) for q in softmax(logits, axis=1)])   # labels drawn from softmax(z)
    overconfident = softmax(2 * logits, axis=1)                             # the model reports softmax(2 z)
    t = cal.fit_temperature(overconfident, y)
    assert t == pytest.approx(2.0, rel=0.1)
    scaled = cal.apply_temperature(overconfident, t)
    assert cal.nll(scaled, y) < cal.nll(overconfident, y)
    assert cal.ece(scaled, y) < cal.ece(overconfident, y)
    np.testing.assert_array_equal(scaled.argmax(1), overconfident.argmax(1))   # never changes a prediction


def test_apply_temperature_one_is_the_identity_and_rows_sum_to_one():
    probs = softmax(np.random.default_rng(2).normal(0, 4, (50, 10)), axis=1).astype(np.float32)
    probs[0] = np.eye(10)[3]                                      # exact zeros survive too
    same = cal.apply_temperature(probs, 1.0)
    assert same.dtype == np.float32
    np.testing.assert_allclose(same, probs, atol=1e-6)
    for t in (0.5, 3.0):
        np.testing.assert_allclose(cal.apply_temperature(probs, t).sum(1), 1, atol=1e-5)
    assert cal.apply_temperature(probs, 3.0).max(1).mean() < probs.max(1).mean()   # T > 1 softens


def test_summary_names_every_metric():
    probs = confident([0.9, 0.6], [1, 2])
    s = cal.summary(probs, np.array([1, 0]))
    assert set(s) == {"ece", "mce", "brier", "nll", "accuracy", "mean_confidence"}
    assert s["accuracy"] == 0.5 and s["mean_confidence"] == pytest.approx(0.75)


def test_reliability_diagram_is_a_png(tmp_path):
    from tasks import plots
    probs = softmax(np.random.default_rng(3).normal(0, 3, (200, 10)), axis=1)
    y = np.random.default_rng(4).integers(0, 10, 200)
    plots.reliability(cal.reliability(probs, y), tmp_path / "r.png", "Reliability")
    assert_plot(tmp_path / "r.png", min_side=500)          # 5.5 x 6 inches at 110 dpi, trimmed
