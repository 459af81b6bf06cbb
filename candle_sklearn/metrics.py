"""Base / new / harmonic-mean accuracy (reference and joint protocols) and many /
medium / few-shot accuracy, as functions and as scorers for model selection."""

import numpy as np

from ._display import LongTailDisplay  # noqa: F401  (public here, with the metrics it plots)
from ._display import _final
from ._labels import check_known, check_predictions, columns, not_in


def harmonic_mean(a, b):
    """``2ab / (a + b)``; 0 when both are 0, NaN when either is NaN."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _mean_or_nan(hits):
    return float(np.mean(hits)) if len(hits) else float("nan")


def restrict_scores(scores, classes, labels):
    """Columns of ``scores`` (aligned with ``classes``) for ``labels`` only.

    Works on scores and on probabilities; probabilities are renormalised when every
    row of ``scores`` sums to one. Returns ``(scores_subset, labels)`` so that
    ``labels[argmax]`` is the prediction among ``labels``.
    """
    labels = np.asarray(labels)
    sub = np.asarray(scores)[:, columns(classes, labels)]
    if np.allclose(np.asarray(scores).sum(axis=1), 1.0) and (sub >= 0).all():
        sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    return sub, labels


def _check_scores(y_true, scores, classes, new_classes):
    if scores.ndim != 2 or scores.shape != (len(y_true), len(classes)):
        raise ValueError(f"scores must have shape (n_samples, n_classes) = ({len(y_true)}, "
                         f"{len(classes)}), got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    check_known(classes, y_true=y_true, new_classes=new_classes)


def base_new_accuracy(y_true, scores, classes, new_classes, *, protocol="reference"):
    """Accuracy on base-class and new-class samples and their harmonic mean.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    scores : array-like of shape (n_samples, n_classes)
        Scores or probabilities, columns aligned with ``classes``.
    classes : array-like of shape (n_classes,)
    new_classes : array-like
        Classes without training samples.
    protocol : {"reference", "joint"}
        ``"reference"``: base-class samples are scored among all classes and
        new-class samples among the new classes only, as in the Candle/CoOp
        evaluation. ``"joint"``: every sample among all classes, as a deployed
        model predicts.

    Returns
    -------
    dict with keys ``base``, ``new``, ``hm`` (NaN for a group without samples).
    """
    if protocol not in ("reference", "joint"):
        raise ValueError(f"protocol must be 'reference' or 'joint', got {protocol!r}")
    y_true, classes = np.asarray(y_true), np.asarray(classes)
    scores = np.asarray(scores, dtype=float)
    _check_scores(y_true, scores, classes, new_classes)
    is_new = np.isin(y_true, new_classes)
    pred = classes[np.argmax(scores, axis=1)]
    if protocol == "reference" and is_new.any():
        sub, labels = restrict_scores(scores[is_new], classes, np.asarray(new_classes))
        pred[is_new] = labels[np.argmax(sub, axis=1)]
    hits = pred == y_true
    base, new = _mean_or_nan(hits[~is_new]), _mean_or_nan(hits[is_new])
    return {"base": base, "new": new, "hm": harmonic_mean(base, new)}


def shot_accuracy(y_true, y_pred, classes, class_counts, *, many=100, few=20):
    """Accuracy on samples of many-shot (more than ``many`` training images),
    medium-shot (``few`` to ``many``) and few-shot (fewer than ``few``, at least one)
    classes. Classes without training images are left out.

    Returns
    -------
    dict with keys ``many``, ``medium``, ``few`` (NaN for an empty group).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    check_predictions(y_true, y_pred, classes)
    counts = dict(zip(np.asarray(classes).tolist(), np.asarray(class_counts).tolist()))
    n = np.array([counts[c] for c in y_true.tolist()])
    hits = y_pred == y_true
    return {"many": _mean_or_nan(hits[n > many]),
            "medium": _mean_or_nan(hits[(n >= few) & (n <= many)]),
            "few": _mean_or_nan(hits[(n > 0) & (n < few)])}


def expected_calibration_error(y_true, proba, classes, *, n_bins=15):
    """Expected calibration error of the top prediction: over ``n_bins`` equal-width bins
    of confidence (the highest probability), the mean gap between accuracy and
    confidence, weighted by the share of samples in each bin (Guo et al., 2017). 0 is
    perfect; a model that says 0.999 and is right 80 % of the time scores about 0.2.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Probabilities whose columns follow ``classes`` (``predict_proba``).
    classes : array-like of shape (n_classes,)
    n_bins : int, default=15
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise ValueError(f"proba must have shape (n_samples, n_classes) = ({len(y_true)}, "
                         f"{len(classes)}), got {proba.shape}")
    confidence = proba.max(axis=1)
    hits = classes[proba.argmax(axis=1)] == y_true
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, hits, n_bins) - np.bincount(bins, confidence, n_bins))
    return float(gap.sum() / max(total.sum(), 1))


def _scores(estimator, X, calibrated=True):
    if not calibrated and hasattr(_final(estimator), "new_class_bias_"):
        return estimator.predict_proba(X, calibrated=False)
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)
    scores = estimator.decision_function(X)
    return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores


def make_base_new_scorer(metric="hm", *, protocol="reference", new_classes=None):
    """A scorer ``scorer(estimator, X, y)`` for ``GridSearchCV(scoring=...)``.

    ``metric`` is ``"base"``, ``"new"`` or ``"hm"``. The new classes are
    ``new_classes`` or, when None, the fitted estimator's (or the pipeline's last
    step's) ``new_classes_``. A test fold without a new-class sample (or with labels the
    model does not know) raises a ``ValueError`` rather than scoring NaN: use
    :class:`~candle_sklearn.model_selection.BaseNewSplit` to cross-validate. (A search
    turns a scorer's error into a warning and a NaN score unless
    ``error_score="raise"``.)

    The reference protocol scores a :class:`~candle_sklearn.CandleClassifier` on its
    uncalibrated scores
    (``calibrated=False``), as the reference evaluation does; the joint protocol on
    the calibrated ones, as the model predicts.
    """
    if metric not in ("base", "new", "hm"):
        raise ValueError(f"metric must be 'base', 'new' or 'hm', got {metric!r}")
    if protocol not in ("reference", "joint"):  # here, not as NaN scores in a search
        raise ValueError(f"protocol must be 'reference' or 'joint', got {protocol!r}")
    return _Scorer(_base_new_score, f"{metric}_{protocol}",
                   f"make_base_new_scorer({metric!r}, protocol={protocol!r})",
                   metric=metric, protocol=protocol, new_classes=new_classes)


class _Scorer:
    """A scorer ``score(estimator, X, y, **params)`` with a name and a repr: a class, not
    a closure, so that a search holding it can be pickled."""

    def __init__(self, score, name, call, **params):
        self.score, self.__name__, self.call, self.params = score, name, call, params

    def __repr__(self):
        return self.call

    def __call__(self, estimator, X, y):
        return self.score(estimator, X, y, **self.params)


def _base_new_score(estimator, X, y, metric, protocol, new_classes):
    new = _final(estimator).new_classes_ if new_classes is None else new_classes
    _check_fold(y, estimator.classes_, new, metric)
    scores = _scores(estimator, X, calibrated=protocol == "joint")
    return base_new_accuracy(y, scores, estimator.classes_, new, protocol=protocol)[metric]


_SPLITTER_HINT = (
    "To select parameters by what they trade between base and new classes, cross-validate "
    "with candle_sklearn.model_selection.BaseNewSplit, which holds whole classes out of "
    "each training part, and give the classifier classes= listing every label (with their "
    "names or text features), so that the held-out classes become its new classes.")


def _check_fold(y, classes, new_classes, metric):
    """A clear error where a base / new score could only be NaN or meaningless."""
    y = np.asarray(y)
    if unknown := not_in(y, classes):
        raise ValueError(f"the test labels {unknown[:10]} are not among the model's classes_, "
                         "so it can never predict them. " + _SPLITTER_HINT)
    is_new = np.isin(y, new_classes)
    if metric in ("new", "hm") and not is_new.any():
        raise ValueError(f"base/new scorer ({metric!r}): no test sample belongs to a new "
                         "class (one without training samples), so new-class accuracy is "
                         "undefined. " + _SPLITTER_HINT)
    if metric in ("base", "hm") and is_new.all():
        raise ValueError(f"base/new scorer ({metric!r}): every test sample belongs to a new "
                         "class, so base-class accuracy is undefined.")


def make_shot_scorer(group="few", *, many=100, few=20):
    """A scorer of many / medium / few-shot accuracy; class counts come from the
    fitted estimator's (or the pipeline's last step's) ``class_counts_``."""
    if group not in ("many", "medium", "few"):
        raise ValueError(f"group must be 'many', 'medium' or 'few', got {group!r}")
    return _Scorer(_shot_score, f"{group}_shot_accuracy",
                   f"make_shot_scorer({group!r}, many={many}, few={few})",
                   group=group, many=many, few=few)


def _shot_score(estimator, X, y, group, many, few):
    final = _final(estimator)
    return shot_accuracy(y, estimator.predict(X), final.classes_, final.class_counts_,
                         many=many, few=few)[group]


def best_new_class_bias(estimator, X, y):
    """The bias on new-class scores that maximises joint harmonic-mean accuracy on
    labelled samples ``(X, y)`` of base and new classes (exact search).

    For when a few labelled images of new classes are at hand: assign the result to the
    fitted model's ``new_class_bias_`` (or refit with ``new_class_bias=<result>`` and
    ``zero_shot_weight=<its zero_shot_weight_>``). The bias applies to the calibrated
    scores, blended with zero-shot CLIP's by ``zero_shot_weight_``.

    Parameters
    ----------
    estimator : fitted CandleClassifier, or a Pipeline ending in one
    X : samples the estimator accepts
    y : array-like of shape (n_samples,), labels in ``classes_``

    Returns
    -------
    bias : float
    """
    from ._calibration import best_bias

    final = _final(estimator)
    y = np.asarray(y)
    if unknown := not_in(y, final.classes_):
        raise ValueError(f"y contains labels not in classes_: {unknown}")
    scores = estimator.decision_function(X)
    if scores.ndim == 1:  # two classes: the score difference
        scores = np.stack([np.zeros_like(scores), scores], axis=1)
    is_new_col = final.class_counts_ == 0
    scores[:, is_new_col] -= final.new_class_bias_  # the calibrated scores without bias
    return best_bias(scores, np.searchsorted(final.classes_, y), is_new_col,
                     np.isin(y, final.classes_[is_new_col]))[0]
