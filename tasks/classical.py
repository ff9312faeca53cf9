"""The scikit-learn classifiers of params.yaml's `baselines.models`, built and fed the same way by
the baselines stage (which compares them) and the robustness stage (which corrupts their inputs):
every model sees pixel/255 (the CNN's scaling), plus StandardScaler and/or PCA where configured.
"""
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from digits import params as params_mod
from digits.io import to_images

ESTIMATORS = {
    "logistic_regression": LogisticRegression,
    "linear_sgd_hinge": SGDClassifier,
    "decision_tree": DecisionTreeClassifier,
    "random_forest": RandomForestClassifier,
    "knn": KNeighborsClassifier,
    "svc_rbf": SVC,
    "mlp": MLPClassifier,
}
SEEDED = {"linear_sgd_hinge", "decision_tree", "random_forest", "svc_rbf", "mlp", "logistic_regression"}


def flat(frame: pd.DataFrame):
    """The shared conversion, flattened: (x uint8 [n, 784], y)."""
    x, y = to_images(frame)
    return x.reshape(len(x), -1), y


def subsample(x, y, size: int, seed: int):
    if not size or size >= len(y):
        return x, y
    x, _, y, _ = train_test_split(x, y, train_size=size, stratify=y, random_state=seed)
    return x, y


def make_model(name: str, cfg: params_mod.Baseline, seed: int):
    if name not in ESTIMATORS:
        raise params_mod.ParamsError(f"params: unknown baseline 'baselines.models.{name}'; "
                                     f"known: {', '.join(ESTIMATORS)}")
    opts = dict(cfg.options)
    if "hidden_layer_sizes" in opts:
        opts["hidden_layer_sizes"] = tuple(opts["hidden_layer_sizes"])
    if name in SEEDED:
        opts.setdefault("random_state", seed)
    steps = [FunctionTransformer(lambda a: a.astype(np.float32) / 255.0)]
    steps += [StandardScaler()] if cfg.standardize else []
    steps += [PCA(cfg.pca, random_state=seed)] if cfg.pca else []
    return make_pipeline(*steps, ESTIMATORS[name](**opts))
