"""Baselines that the demo and the benchmarks compare Candle with. Each returns a
score matrix (n, C) aligned with ``classes``; classes a method cannot score get -inf."""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize as _unit


def zero_shot_scores(X, text_features):
    """CLIP zero-shot: cosine of each image with each class's text feature."""
    return 100.0 * _unit(X) @ _unit(text_features).T


def _base_columns(scores_base, base_idx, n_classes):
    out = np.full((scores_base.shape[0], n_classes), -np.inf)
    out[:, base_idx] = scores_base
    return out


def nearest_class_mean_scores(X_train, y_train, X, classes):
    """Cosine to the mean training feature of each class (base classes only)."""
    base_idx = np.searchsorted(classes, np.unique(y_train))
    means = np.stack([X_train[y_train == c].mean(0) for c in classes[base_idx]])
    return _base_columns(_unit(X) @ _unit(means).T, base_idx, len(classes))


class LinearProbe:
    """Logistic regression on L2-normalised features (base classes only), with
    optional post-hoc logit adjustment ``- tau * log prior`` at prediction."""

    def __init__(self, C=1.0, max_iter=1000):
        self.model = LogisticRegression(C=C, max_iter=max_iter)

    def fit(self, X, y):
        self.model.fit(_unit(X), y)
        counts = np.bincount(np.searchsorted(self.model.classes_, y))
        self.log_prior = np.log(counts / counts.sum())
        return self

    def scores(self, X, classes, tau=0.0):
        logits = self.model.decision_function(_unit(X)) - tau * self.log_prior
        return _base_columns(logits, np.searchsorted(classes, self.model.classes_),
                             len(classes))
