"""Cross-validation for the base-to-new setting: folds whose test part holds classes
that the training part has never seen."""

from numbers import Integral, Real

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_parameter_constraints
from sklearn.utils.validation import _num_samples, column_or_1d


class BaseNewSplit(BaseCrossValidator):
    """Shuffled folds that hold out whole classes, so that they become new classes.

    Each of the ``n_splits`` folds draws ``new_size`` of the classes in ``y`` and puts
    all their samples in the test part; of every other class it also puts a
    ``test_size`` fraction of the samples in the test part (a class with a single
    sample keeps it for training). A :class:`~candle_sklearn.CandleClassifier` given
    ``classes`` that lists every label (with their text) then meets the held-out
    classes as new classes, known by name only, exactly as it meets the real new
    classes; :func:`~candle_sklearn.metrics.make_base_new_scorer` measures base against
    new accuracy on each fold, and ``GridSearchCV`` selects, for instance, the loss
    margin ``tau`` by what it trades off.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds (independent draws).
    new_size : float or int, default=0.25
        Held-out classes per fold: a fraction of the classes in ``y`` (float in
        (0, 1)) or a number of classes (int). At least one class is held out and at
        least two are kept.
    test_size : float, default=0.2
        Fraction of each kept class's samples in the test part (rounded down).
    random_state : int, RandomState instance or None, default=None
        Controls the draws; an int gives the same folds at every call to ``split``.

    Examples
    --------
    >>> import numpy as np
    >>> from candle_sklearn.model_selection import BaseNewSplit
    >>> y = np.repeat([0, 1, 2, 3], 5)
    >>> cv = BaseNewSplit(n_splits=2, new_size=1, test_size=0.2, random_state=0)
    >>> for train, test in cv.split(np.zeros((20, 1)), y):
    ...     print(np.unique(y[train]), np.unique(y[test]))
    [0 1 3] [0 1 2 3]
    [0 2 3] [0 1 2 3]
    """

    _parameter_constraints: dict = {
        "n_splits": [Interval(Integral, 1, None, closed="left")],
        "new_size": [Interval(Real, 0, 1, closed="neither"),
                     Interval(Integral, 1, None, closed="left")],
        "test_size": [Interval(Real, 0, 1, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_splits=5, *, new_size=0.25, test_size=0.2, random_state=None):
        self.n_splits = n_splits
        self.new_size = new_size
        self.test_size = test_size
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """The number of folds, ``n_splits``."""
        return self.n_splits

    def _n_held(self, n_classes):
        if n_classes < 3:
            raise ValueError(f"BaseNewSplit needs at least 3 classes in y (one held out, "
                             f"two kept); got {n_classes}")
        n = (int(self.new_size) if isinstance(self.new_size, Integral)
             else int(np.floor(self.new_size * n_classes)))
        return int(np.clip(n, 1, n_classes - 2))

    def split(self, X, y=None, groups=None):
        """Indices of the training and test parts of each fold.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
            Labels; whole classes are held out.
        groups : ignored

        Yields
        ------
        train, test : ndarray of int
        """
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        validate_parameter_constraints(self._parameter_constraints, params,
                                       caller_name=type(self).__name__)
        if y is None:
            raise ValueError("BaseNewSplit needs the labels y to hold out whole classes")
        y = column_or_1d(y, warn=True)
        if _num_samples(X) != len(y):
            raise ValueError(f"X has {_num_samples(X)} samples but y has {len(y)}")
        classes, y_idx = np.unique(y, return_inverse=True)
        members = [np.flatnonzero(y_idx == c) for c in range(len(classes))]
        n_held = self._n_held(len(classes))
        rng = check_random_state(self.random_state)
        for _ in range(self.n_splits):
            held = rng.permutation(len(classes))[:n_held]
            test = [members[c] for c in held]
            for c in np.setdiff1d(np.arange(len(classes)), held):
                k = int(np.floor(self.test_size * len(members[c])))
                test.append(rng.permutation(members[c])[:min(k, len(members[c]) - 1)])
            test = np.sort(np.concatenate(test))
            yield np.setdiff1d(np.arange(len(y)), test), test

    def _iter_test_indices(self, X=None, y=None, groups=None):  # pragma: no cover
        raise NotImplementedError("BaseNewSplit overrides split")
