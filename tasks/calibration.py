"""How far a model's confidence can be trusted, and temperature scaling to make it trustworthy.

Every function takes class probabilities [n, 10] and integer labels [n]. The confidence of a
prediction is its largest probability; the calibration errors compare it with the accuracy in
equal-width confidence bins, bin k holding confidences in (k / bins, (k + 1) / bins] (Guo et al.
2017, "On Calibration of Modern Neural Networks"). Temperature scaling divides the log-probabilities
by one scalar T fitted on held-out data (T > 1 softens overconfident predictions); it never
changes which class is predicted.
"""
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

EPS = 1e-7                       # probabilities are clipped here before a logarithm in the NLL
FLOOR = 1e-30                    # and here before temperature scaling (0 would give log 0)
BOUNDS = (0.05, 20.0)            # temperatures searched


def _bins(probs, y, bins: int):
    """Per bin: (confidence sum, correct count, count), each [bins]."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return (np.bincount(idx, conf, bins), np.bincount(idx, correct.astype(float), bins),
            np.bincount(idx, minlength=bins))


def _gaps(probs, y, bins: int):
    """|accuracy - confidence| and count of each non-empty bin."""
    conf, correct, count = _bins(probs, y, bins)
    full = count > 0
    return np.abs(correct[full] - conf[full]) / count[full], count[full]


def ece(probs, y, bins: int = 15) -> float:
    """Expected calibration error: the bins' |accuracy - confidence|, weighted by their counts."""
    gap, count = _gaps(probs, y, bins)
    return float(np.sum(gap * count) / np.sum(count))


def mce(probs, y, bins: int = 15) -> float:
    """Maximum calibration error: the largest |accuracy - confidence| of a non-empty bin."""
    return float(_gaps(probs, y, bins)[0].max())


def brier(probs, y) -> float:
    """Mean over samples of the squared distance between the probabilities and the one-hot label."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(y)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def nll(probs, y) -> float:
    """Mean negative log-probability of the true class (probabilities clipped at EPS)."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y)), np.asarray(y)]
    return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))


def reliability(probs, y, bins: int = 15) -> list:
    """Rows (bin_lower, bin_upper, confidence, accuracy, count) of the non-empty bins, for a
    reliability diagram; the counts add up to n."""
    conf, correct, count = _bins(probs, y, bins)
    return [(k / bins, (k + 1) / bins, float(conf[k] / count[k]), float(correct[k] / count[k]), int(count[k]))
            for k in np.flatnonzero(count)]


def _log(probs) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), FLOOR))


def fit_temperature(probs, y) -> float:
    """The T in BOUNDS minimizing the NLL of softmax(log(probs) / T) on (probs, y)."""
    logp, y = _log(probs), np.asarray(y)
    rows = np.arange(len(y))
    loss = lambda t: -np.mean(log_softmax(logp / t, axis=1)[rows, y])
    return float(minimize_scalar(loss, bounds=BOUNDS, method="bounded").x)


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T) as float32; T = 1 gives the probabilities back (renormalized)."""
    return np.exp(log_softmax(_log(probs) / temperature, axis=1)).astype(np.float32)


def summary(probs, y) -> dict:
    probs = np.asarray(probs)
    return {"ece": ece(probs, y), "mce": mce(probs, y), "brier": brier(probs, y), "nll": nll(probs, y),
            "accuracy": float(np.mean(probs.argmax(axis=1) == np.asarray(y))),
            "mean_confidence": float(probs.max(axis=1).mean())}
