"""The reference protocol's split rules: few-shot, long-tailed, base / new."""

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


def fewshot_indices(labels, shots, random_state=None):
    """Indices of at most ``shots`` samples of each class, drawn without replacement
    (every sample of a class that has fewer), as Dassl's ``generate_fewshot_dataset``.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    shots : int
        Samples kept per class; ``shots < 1`` keeps everything (as in Dassl).
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    indices : ndarray of int, sorted
    """
    labels = np.asarray(labels)
    if shots < 1:
        return np.arange(len(labels))
    rng = check_random_state(random_state)
    # One stable sort groups every class's indices in ascending order (ImageNet: 1.28M
    # labels in well under a second, where a scan per class takes seconds).
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    groups = np.split(order, starts[1:]) if len(order) else []
    chosen = [rng.permutation(group)[:shots] for group in groups]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


def base_new_classes(classes):
    """``(base, new)``: the first ``ceil(n/2)`` of the sorted ``classes`` and the rest,
    as the reference's ``subsample_classes`` divides labels."""
    classes = np.unique(np.asarray(classes))
    m = -(-len(classes) // 2)
    return classes[:m], classes[m:]


def imbalanced_fewshot_indices(labels, shots=100, imbalance_ratio=0.02, keep_classes=None,
                               random_state=None):
    """The reference's training subset: few-shot, then long-tailed.

    In the order of the reference code (Candle's ``datasets/*.py`` on top of Dassl):

    1. few-shot: at most ``shots`` samples of every class (:func:`fewshot_indices`);
    2. only the samples of ``keep_classes`` stay (all classes when None);
    3. long tail (when ``imbalance_ratio < 1``): the classes, ranked by their number of
       samples (most first, ties by label), keep ``floor(max(n_max * r**(i/(K-1)), 1))``
       samples (:func:`long_tailed_indices`), where ``n_max`` is the largest class after
       step 2: ``shots`` when a class has that many, else fewer (as in the reference).

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    shots : int, default=100
    imbalance_ratio : float, default=0.02
        ``r`` in (0, 1]; 1 keeps the few-shot subset as it is (the balanced setting).
    keep_classes : array-like, default=None
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    indices : ndarray of int, sorted
    """
    labels = np.asarray(labels)
    if not 0 < imbalance_ratio <= 1:
        raise ValueError(f"imbalance_ratio must be in (0, 1], got {imbalance_ratio}")
    rng = check_random_state(random_state)
    chosen = fewshot_indices(labels, shots, rng)
    if keep_classes is not None:
        chosen = chosen[np.isin(labels[chosen], np.asarray(keep_classes))]
    if imbalance_ratio < 1 and len(chosen):
        n_max = int(np.unique(labels[chosen], return_counts=True)[1].max())
        chosen = chosen[long_tailed_indices(labels[chosen], imbalance_ratio, n_max, rng)]
    return chosen


def base_to_new_split(y_train, y_test, classes=None, *, shots=100, imbalance_ratio=0.02,
                      random_state=None):
    """The reference base-to-new split of one seed.

    The first ``ceil(n/2)`` classes are base (:func:`base_new_classes`); the training
    set is :func:`imbalanced_fewshot_indices` of the base classes; the test set keeps
    every sample, ``test_base`` and ``test_new`` index its two sides.

    Parameters
    ----------
    y_train, y_test : array-like of shape (n_train,), (n_test,)
        Labels of the training and test samples.
    classes : array-like, default=None
        Every class of the dataset (default: those in ``y_train`` and ``y_test``).
    shots : int, default=100
        16 in the balanced setting, 100 in the long-tailed one.
    imbalance_ratio : float, default=0.02
        ``r``: 0.02 in the long-tailed setting (0.01 for ImageNet), 1 for balanced.
    random_state : int, RandomState instance or None, default=None
        The seed (the paper's seeds are 1, 2, 3): the same seed gives the same split.

    Returns
    -------
    split : Bunch
        ``train`` (sorted indices into ``y_train``), ``test_base`` and ``test_new``
        (indices into ``y_test``), ``base_classes``, ``new_classes``, ``classes`` and
        ``train_counts`` (training samples per class of ``classes``, 0 for new classes).

    Examples
    --------
    >>> import numpy as np
    >>> from candle_sklearn.datasets import base_to_new_split
    >>> y = np.repeat(np.arange(6), 50)
    >>> split = base_to_new_split(y, y, shots=40, imbalance_ratio=0.1, random_state=1)
    >>> split.base_classes, split.train_counts
    (array([0, 1, 2]), array([40, 12,  4,  0,  0,  0]))
    """
    from sklearn.utils import Bunch

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes = (np.union1d(y_train, y_test) if classes is None
               else np.unique(np.asarray(classes)))
    if unknown := np.setdiff1d(np.union1d(y_train, y_test), classes).tolist():
        raise ValueError(f"labels not in classes: {unknown[:10]}")
    base, new = base_new_classes(classes)
    train = imbalanced_fewshot_indices(y_train, shots, imbalance_ratio, keep_classes=base,
                                       random_state=random_state)
    counts = np.bincount(np.searchsorted(classes, y_train[train]), minlength=len(classes))
    return Bunch(train=train, test_base=np.flatnonzero(np.isin(y_test, base)),
                 test_new=np.flatnonzero(np.isin(y_test, new)), base_classes=base,
                 new_classes=new, classes=classes, train_counts=counts)
