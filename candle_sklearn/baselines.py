"""The baselines Candle is compared with, as scikit-learn classifiers: CLIP zero-shot
classification and a linear probe (with optional post-hoc logit adjustment)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .templates import Templates, encode_class_names


def _labels_1d(name, values):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _as_decision(scores):
    """scikit-learn's shape: (n,) of ``classes_[1]`` minus ``classes_[0]`` for two classes."""
    return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """CLIP zero-shot classification: each image goes to the class whose text feature
    is the most similar (cosine), as in CLIP and open_clip.

    Nothing is learned from images: ``fit`` validates the classes, embeds their prompts
    (with ``encoder``) and records the text features; ``y`` is optional and only checked
    against ``classes``.

    Parameters
    ----------
    classes : array-like of shape (n_classes,), default=None
        Every label to predict. Default: ``np.unique(y)``.
    class_names : array-like of str of shape (n_classes,), default=None
        Prompt names aligned with ``classes``; default: the labels, when they are strings.
    text_features : array-like of shape (n_classes, n_features), default=None
        Precomputed text embeddings aligned with ``classes``; takes precedence over
        ``encoder``. From ``open_clip.build_zero_shot_classifier`` (shape
        (n_features, n_classes)), convert with
        :func:`candle_sklearn.templates.text_features_from_open_clip`.
    encoder : object with ``encode_text(list[str]) -> ndarray``, default=None
        Embeds the prompts, e.g. a :class:`~candle_sklearn.ClipEmbedder`.
    templates : str, callable or sequence of them, default=None
        Prompt templates (format strings, open_clip's template callables, or a preset
        name, see :mod:`candle_sklearn.templates`); None is ``"a photo of a {}."``.
        With several, the normalised embeddings are averaged.
    logit_scale : float, default=100.0
        Multiplies the cosine similarities (CLIP's logit scale); it sharpens
        ``predict_proba`` and leaves ``predict`` unchanged.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels; the columns of ``predict_proba`` follow it.
    class_names_ : ndarray of str or None
        Prompt names aligned with ``classes_``.
    text_features_ : ndarray of shape (n_classes, n_features_in_)
        L2-normalised text features aligned with ``classes_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string feature names.

    Examples
    --------
    >>> from candle_sklearn.baselines import ZeroShotClassifier
    >>> from candle_sklearn.datasets import make_clip_like_features
    >>> data = make_clip_like_features(n_base=4, n_new=2, dim=32, random_state=0)
    >>> zs = ZeroShotClassifier(data.classes, text_features=data.text_features)
    >>> zs.fit(data.X_test).predict(data.X_test[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "classes": ["array-like", None],
        "class_names": ["array-like", None],
        "text_features": ["array-like", None],
        "encoder": [HasMethods(["encode_text"]), None],
        "templates": [list, tuple, str, callable, None],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, classes: ArrayLike | None = None, *,
                 class_names: ArrayLike | None = None, text_features: ArrayLike | None = None,
                 encoder: object | None = None, templates: Templates | None = None,
                 logit_scale: float = 100.0):
        self.classes = classes
        self.class_names = class_names
        self.text_features = text_features
        self.encoder = encoder
        self.templates = templates
        self.logit_scale = logit_scale

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> ZeroShotClassifier:
        """Record the classes and their text features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image features; only their number of features is used.
        y : array-like of shape (n_samples,), default=None
            Labels; each must be in ``classes``. Needed only when ``classes`` is None.

        Returns
        -------
        self : ZeroShotClassifier
        """
        if y is None:
            X = validate_data(self, X)
            if self.classes is None:
                raise ValueError("ZeroShotClassifier needs classes, or labels y to take "
                                 "them from")
        else:
            X, y = validate_data(self, X, y)
            check_classification_targets(y)
        classes = np.unique(y) if self.classes is None else _labels_1d("classes", self.classes)
        if len(np.unique(classes)) != len(classes):
            raise ValueError("classes contains duplicates")
        if y is not None and (unknown := np.setdiff1d(y, classes).tolist()):
            raise ValueError(f"y contains labels that are not in classes: {unknown}")
        names = self._names(classes)
        text = self._text(classes, names, X.shape[1])
        order = np.argsort(classes, kind="stable")
        self.classes_ = classes[order]
        self.class_names_ = None if names is None else names[order]
        self.text_features_ = normalize(text[order]).astype(np.float32)
        return self

    def _names(self, classes):
        if self.class_names is None:
            return classes.astype(str) if classes.dtype.kind in "OUS" else None
        names = _labels_1d("class_names", self.class_names).astype(str)
        if len(names) != len(classes):
            raise ValueError(f"class_names has {len(names)} entries for {len(classes)} classes")
        return names

    def _text(self, classes, names, n_features):
        if self.text_features is not None:
            text = np.asarray(self.text_features, dtype=np.float32)
        elif self.encoder is not None:
            if names is None:
                raise ValueError("an encoder needs class names: pass class_names, or use "
                                 "string labels")
            text = encode_class_names(self.encoder, names, self.templates)
        else:
            raise ValueError("ZeroShotClassifier needs text: pass text_features, or an "
                             "encoder with class_names (or string labels)")
        if text.shape != (len(classes), n_features):
            hint = (" (open_clip's build_zero_shot_classifier gives (n_features, n_classes): "
                    "convert it with candle_sklearn.templates.text_features_from_open_clip)"
                    if text.shape == (n_features, len(classes)) else "")
            raise ValueError(f"text features must have shape (n_classes, n_features) = "
                             f"({len(classes)}, {n_features}), got {text.shape}{hint}")
        if not np.isfinite(text).all():
            raise ValueError("text features contain NaN or infinity")
        return text

    def _scores(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        # float64: softmax and log-sum-exp of scores up to +-logit_scale
        return self.logit_scale * normalize(X.astype(np.float64)) @ self.text_features_.T

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Scaled cosine with each class's text feature (n_samples, n_classes); for two
        classes, the score of ``classes_[1]`` minus that of ``classes_[0]``."""
        return _as_decision(self._scores(X))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Softmax of the scaled cosines; columns follow ``classes_``."""
        return softmax(self._scores(X))

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        scores = self._scores(X)
        return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The class whose text feature is the most similar."""
        scores = self._scores(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(scores, axis=1)]


class LinearProbeClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression on L2-normalised features (CLIP's linear probe), with optional
    post-hoc logit adjustment for long-tailed training data.

    The adjusted logits are ``z_c - tau * log(pi_c)``, with ``pi_c`` the share of
    training samples of class ``c`` (Menon et al., ICLR 2021); ``tau=0`` is the plain
    probe. It only predicts classes seen in ``y``.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength of the logistic regression.
    tau : float, default=0.0
        Strength of the post-hoc logit adjustment (0: none, 1: the Bayes-optimal
        correction for a balanced test set).
    max_iter : int, default=1000
        Iterations of the lbfgs solver.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_counts_ : ndarray of shape (n_classes,)
        Training samples per class.
    log_prior_ : ndarray of shape (n_classes,)
        ``log(class_counts_ / class_counts_.sum())``.
    logistic_regression_ : LogisticRegression
        The fitted model (on normalised features).
    n_iter_ : int
        Iterations the solver ran.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string feature names.

    Examples
    --------
    >>> from candle_sklearn.baselines import LinearProbeClassifier
    >>> from candle_sklearn.datasets import make_clip_like_features
    >>> data = make_clip_like_features(n_base=4, n_new=0, dim=32, random_state=0)
    >>> probe = LinearProbeClassifier(tau=1.0).fit(data.X_train, data.y_train)
    >>> probe.predict(data.X_test[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "tau": [Interval(Real, None, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, C: float = 1.0, *, tau: float = 0.0, max_iter: int = 1000):
        self.C = C
        self.tau = tau
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike) -> LinearProbeClassifier:
        """Fit the logistic regression on L2-normalised ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : LinearProbeClassifier
        """
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"],
                             dtype=[np.float64, np.float32])
        check_classification_targets(y)
        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        model.fit(normalize(X), y)
        self.logistic_regression_ = model
        self.n_iter_ = int(np.max(model.n_iter_))
        self.classes_ = model.classes_
        self.class_counts_ = np.bincount(np.searchsorted(self.classes_, y),
                                         minlength=len(self.classes_))
        self.log_prior_ = np.log(self.class_counts_ / self.class_counts_.sum())
        return self

    def _logits(self, X):
        """Adjusted logits (n_samples, n_classes), also for two classes."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse=["csr", "csc"],
                          dtype=[np.float64, np.float32])
        z = self.logistic_regression_.decision_function(normalize(X))
        if z.ndim == 1:  # two classes: sigmoid(z) = softmax([0, z])
            z = np.stack([np.zeros_like(z), z], axis=1)
        return z - self.tau * self.log_prior_

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Adjusted logits (n_samples, n_classes); for two classes, the logit of
        ``classes_[1]`` minus that of ``classes_[0]`` (n_samples,)."""
        return _as_decision(self._logits(X))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Softmax of the adjusted logits; columns follow ``classes_``."""
        return softmax(self._logits(X))

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        z = self._logits(X)
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The class of the highest adjusted logit."""
        logits = self._logits(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]
