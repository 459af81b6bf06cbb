"""Baselines that the demo and the benchmarks compare Candle with, as score matrices
(n, C) aligned with ``classes``; classes a method cannot score get -inf. The estimators
themselves are public in :mod:`candle_sklearn.baselines`."""

import numpy as np
from sklearn.preprocessing import normalize as _unit

from .._labels import columns
from .._zero_shot import zero_shot_scores  # noqa: F401  (the demo's zero-shot baseline)
from ..baselines import LinearProbeClassifier


def _base_columns(scores_base, base_idx, n_classes):
    out = np.full((scores_base.shape[0], n_classes), -np.inf)
    out[:, base_idx] = scores_base
    return out


def nearest_class_mean_scores(X_train, y_train, X, classes):
    """Cosine to the mean training feature of each class (base classes only)."""
    seen = np.unique(y_train)
    base_idx = columns(classes, seen)
    means = np.stack([X_train[y_train == c].mean(0) for c in seen])
    return _base_columns(_unit(X) @ _unit(means).T, base_idx, len(classes))


class LinearProbe:
    """:class:`~candle_sklearn.baselines.LinearProbeClassifier` with its scores spread
    over all ``classes`` (-inf for classes it never saw)."""

    def __init__(self, C=1.0, max_iter=1000):
        self.model = LinearProbeClassifier(C=C, max_iter=max_iter)

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def scores(self, X, classes, tau=0.0):
        logits = self.model.set_params(tau=tau)._scores(X, False)
        return _base_columns(logits, columns(classes, self.model.classes_), len(classes))
