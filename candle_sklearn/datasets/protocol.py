"""The reference protocol's split rules: the long-tailed subsample."""

import numpy as np
from sklearn.utils import check_random_state


def long_tailed_counts(n_classes, imbalance_ratio=0.02, max_per_class=100):
    """Images kept by the class at each rank: ``floor(max(m * r**(i / (K-1)), 1))``.

    Rank 0 is the most frequent class. ``m`` is ``max_per_class``, ``r`` the
    imbalance ratio (0.02 in the reference, 0.01 for ImageNet), ``K`` the number of
    classes.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if not 0 < imbalance_ratio <= 1:
        raise ValueError(f"imbalance_ratio must be in (0, 1], got {imbalance_ratio}")
    ranks = np.arange(n_classes) / max(n_classes - 1, 1)
    return np.floor(np.maximum(max_per_class * imbalance_ratio**ranks, 1)).astype(int)


def long_tailed_indices(labels, imbalance_ratio=0.02, max_per_class=100, random_state=None):
    """Indices of a long-tailed subset of ``labels``, by the reference rule.

    Classes are ranked by their number of samples (most first, ties by label); the
    class at rank ``i`` keeps ``long_tailed_counts(...)[i]`` samples, drawn at random
    without replacement (all of them if it has fewer).

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    imbalance_ratio : float, default=0.02
    max_per_class : int, default=100
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    indices : ndarray of int, sorted
    """
    labels = np.asarray(labels)
    rng = check_random_state(random_state)
    classes, counts = np.unique(labels, return_counts=True)
    ranked = classes[np.argsort(-counts, kind="stable")]
    keep = long_tailed_counts(len(classes), imbalance_ratio, max_per_class)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(ranked, keep)]
    return np.sort(np.concatenate(chosen))
