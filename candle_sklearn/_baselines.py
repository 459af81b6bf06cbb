"""Baselines that the demo and the benchmarks compare Candle with, as score matrices
(n, C) aligned with ``classes``; classes a method cannot score get -inf. The estimators
themselves are public in :mod:`candle_sklearn.baselines`."""

import numpy as np
from sklearn.preprocessing import normalize as _unit

from ._labels import columns
from .baselines import LinearProbeClassifier


# Zero-shot CLIP's scores are cosines times CLIP's logit scale, as the head's are.
ZERO_SHOT_SCALE = 100.0


def zero_shot_scores(X, text_features):
    """CLIP zero-shot, in float64: cosine of each image with each class's text feature,
    times 100 (``ZeroShotClassifier.decision_function`` for more than two classes). A
    zero row scores zero."""
    return ZERO_SHOT_SCALE * (_unit_rows(X) @ _unit_rows(text_features).T)


def _unit_rows(A):
    """Rows of ``A`` scaled to unit norm in float64; a zero row stays zero."""
    A = np.asarray(A, np.float64)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-300)


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
        logits = self.model.set_params(tau=tau)._logits(X)
        return _base_columns(logits, columns(classes, self.model.classes_), len(classes))
