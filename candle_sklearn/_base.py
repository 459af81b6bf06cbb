"""What the package's classifiers over CLIP features share, as scikit-learn's
discriminant-analysis classifiers share one prediction mixin:

- :class:`ClassTableMixin`: the class table (every label, base and new, its prompt name
  and its text feature from ``text_features`` or ``encoder`` + ``templates``);
- :class:`ScoresPredictionMixin`: ``decision_function``, ``predict_proba``,
  ``predict_log_proba`` and ``predict`` over one ``_scores`` method;
- :class:`TextClassifier`: the two, with a ``fit`` that hands the method its validated
  class table and then calibrates base against new classes for joint prediction (the
  held-out-class protocol of ``new_class_bias="auto"``), so that each method (Candle and
  its peers) is its own fitting and scoring and nothing else.
"""

import contextlib
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm.auto import tqdm

from ._calibration import (CALIBRATION_TOLERANCE, ZERO_SHOT_WEIGHTS, choose_calibration,
                           class_balanced_weights, draw_held_out, few_images_median,
                           fit_temperature, held_back, n_held_out, rate_matched_bias)
from ._zero_shot import zero_shot_scores
from .templates import encode_class_names


def as_1d(name, values):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def is_text(values):
    """Whether labels are strings; mixed strings and numbers cannot be sorted: an error."""
    values = np.asarray(values)
    if values.dtype.kind != "O":
        return values.dtype.kind in "US"
    is_str = [isinstance(v, str) for v in values.tolist()]
    if any(is_str) and not all(is_str):
        example = [values[is_str.index(True)], values[is_str.index(False)]]
        raise ValueError(f"labels mix strings and numbers (for example {example}); use "
                         "one kind of label")
    return bool(is_str) and all(is_str)


def duplicates(values):
    uniq, counts = np.unique(values, return_counts=True)
    return uniq[counts > 1].tolist()


def as_decision(scores):
    """scikit-learn's shape: (n,) of ``classes_[1]`` minus ``classes_[0]`` for two classes."""
    return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores


CLASS_TABLE_CONSTRAINTS = {
    "classes": ["array-like", None],
    "class_names": ["array-like", None],
    "text_features": ["array-like", None],
    "encoder": [HasMethods(["encode_text"]), None],
    "templates": [list, tuple, str, callable, None],
}

CALIBRATION_CONSTRAINTS = {
    "new_class_bias": [StrOptions({"auto"}), Interval(Real, None, None, closed="neither")],
    "zero_shot_weight": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="both")],
    "calibration_repeats": [Interval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
}


class ClassTableMixin:
    """The class table from the parameters ``classes``, ``class_names``,
    ``text_features``, ``encoder`` and ``templates``."""

    def _class_table(self, y, n_features):
        """Sorted classes with their names and text features (or None), validated."""
        classes = np.unique(y) if self.classes is None else as_1d("classes", self.classes)
        if classes.dtype.kind == "O" and not is_text(classes):  # numbers held as objects
            classes = np.array(classes.tolist())
        if y is not None and is_text(classes) != is_text(y):
            raise ValueError(f"y ({np.asarray(y).dtype}) and classes ({classes.dtype}) must "
                             "both be strings or both be numbers")
        if dup := duplicates(classes):
            raise ValueError(f"classes contains duplicates: {dup}")
        if y is not None and (unknown := np.setdiff1d(np.unique(y), classes).tolist()):
            raise ValueError(f"y contains labels that are not in classes: {unknown}")
        names = self._names(classes)
        text = self._text(classes, names, n_features)
        order = np.argsort(classes, kind="stable")
        return (classes[order], None if names is None else names[order],
                None if text is None else text[order])

    def _names(self, classes):
        if self.class_names is None:
            return classes.astype(str) if is_text(classes) else None
        names = as_1d("class_names", self.class_names).astype(str)
        if len(names) != len(classes):
            raise ValueError(f"class_names has {len(names)} entries for {len(classes)} classes")
        if dup := duplicates(names):
            raise ValueError(f"class_names contains duplicates: {dup}")
        return names

    def _text(self, classes, names, n_features):
        """The classes' text features (C, D) as float32, or None without text."""
        if self.text_features is not None:
            text = np.asarray(self.text_features, dtype=np.float32)
        elif self.encoder is not None:
            if names is None:
                raise ValueError("an encoder needs class names: pass class_names, or use "
                                 "string labels")
            text = encode_class_names(self.encoder, names, self.templates)
        else:
            return None
        if text.shape != (len(classes), n_features):
            hint = (" (open_clip's build_zero_shot_classifier gives (n_features, n_classes): "
                    "convert it with candle_sklearn.templates.text_features_from_open_clip)"
                    if text.shape == (n_features, len(classes)) else "")
            raise ValueError(f"text features must have shape (n_classes, n_features) = "
                             f"({len(classes)}, {n_features}), got {text.shape}{hint}")
        if not np.isfinite(text).all():
            raise ValueError("text features contain NaN or infinity")
        if zero := classes[~np.any(text != 0, axis=1)].tolist():
            raise ValueError(f"text features of classes {zero[:5]} are all zeros: a zero "
                             "vector has no direction to compare images with")
        return text


class ScoresPredictionMixin:
    """Prediction methods over ``self._scores(X, calibrated)``: class scores (n_samples,
    n_classes) in ``classes_`` order, float64. ``calibrated`` is the joint calibration of
    :class:`TextClassifier`; a method without one ignores it."""

    def decision_function(self, X, *, calibrated=True):
        """Class scores (n_samples, n_classes); for two classes, the score of
        ``classes_[1]`` minus that of ``classes_[0]`` (n_samples,).

        ``calibrated=False`` gives the method's own scores, without the zero-shot blend
        and the new-class bias of joint prediction (the scores that the reference
        base-to-new protocol evaluates)."""
        return as_decision(self._scores(X, calibrated))

    def predict_proba(self, X, *, calibrated=True):
        """Softmax of the class scores; columns follow ``classes_``. Calibrated, the
        scores are divided by the fitted ``temperature_`` where the method has one, so
        that probabilities match accuracy on held-out classes. See
        :meth:`decision_function` for ``calibrated``."""
        return softmax(self._probability_scores(X, calibrated))

    def predict_log_proba(self, X, *, calibrated=True):
        """Log of :meth:`predict_proba`, computed stably from the class scores."""
        scores = self._probability_scores(X, calibrated)
        return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)

    def _probability_scores(self, X, calibrated):
        """The scores whose softmax is :meth:`predict_proba`."""
        return self._scores(X, calibrated)

    def predict(self, X):
        """Label of the highest (calibrated) score for each sample."""
        scores = self._scores(X, True)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(scores, axis=1)]


class TextClassifier(ClassTableMixin, ScoresPredictionMixin, ClassifierMixin, BaseEstimator):
    """Base of the classifiers that fit on base-class features and predict base and new
    classes, calibrated against each other.

    A subclass is its method: ``_fit_method(X, y_idx, counts, text, seed)`` fits it on
    validated features, the head's class indices into the sorted ``classes`` and the
    class table, and ``_method_scores(X)`` scores validated features (n, C) in
    ``classes_`` order. It may override ``_check_method_input`` (extra input checks),
    ``_refit_params`` (parameters that make a calibration refit behave as the fitted
    model), ``_blended_scores`` (a faster blend with zero-shot CLIP) and
    ``_fit_threads`` (a context for the whole fit).

    Fitted attributes set here: ``classes_``, ``class_counts_``, ``base_classes_``,
    ``new_classes_``, ``class_names_``, ``text_features_``, ``new_class_bias_``,
    ``zero_shot_weight_``, ``temperature_``, ``calibration_`` and ``n_features_in_``.
    """

    _parameter_constraints: dict = {**CLASS_TABLE_CONSTRAINTS, **CALIBRATION_CONSTRAINTS}

    # ----------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on image features ``X`` and labels ``y`` of the base classes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image features, e.g. the output of :class:`~candle_sklearn.ClipEmbedder`.
        y : array-like of shape (n_samples,)
            Labels; each must be in ``classes`` when that is given.

        Returns
        -------
        self : object
        """
        fitted = dict(vars(self))  # validate_data resets n_features_in_ first
        try:
            with self._fit_threads():
                return self._fit(X, y)
        except BaseException:  # a failed fit leaves an earlier one as it was
            vars(self).clear()
            vars(self).update(fitted)
            raise

    def _fit_threads(self):
        return contextlib.nullcontext()

    def _fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        is_text(y)
        with warnings.catch_warnings():
            # one or two images per class is these estimators' purpose, not a sign that
            # y holds regression targets, as scikit-learn's check would warn
            warnings.filterwarnings("ignore", "The number of unique classes is greater")
            check_classification_targets(y)
        self._check_method_input(X)
        if self.new_class_bias != "auto" and not np.isfinite(self.new_class_bias):
            raise ValueError(f"new_class_bias must be finite, got {self.new_class_bias}")
        classes, names, text = self._class_table(y, X.shape[1])
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two classes; got "
                             f"{len(classes)} class: {classes.tolist()}")
        y_idx = np.searchsorted(classes, y)
        counts = np.bincount(y_idx, minlength=len(classes))
        is_new = counts == 0
        if text is None and is_new.any():
            raise ValueError(
                f"classes {classes[is_new].tolist()} have no training sample, so they "
                "need text: pass text_features, or class_names (or string labels) with "
                "an encoder")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.classes_ = classes
        self.class_counts_ = counts
        self.base_classes_ = classes[~is_new]
        self.new_classes_ = classes[is_new]
        self.class_names_ = names
        self.text_features_ = text
        self._fit_method(X, y_idx, counts, text, seed)
        (self.zero_shot_weight_, self.new_class_bias_, self.temperature_,
         self.calibration_) = self._calibrate(X, y_idx, classes, counts, text, seed)
        return self

    def _check_method_input(self, X):
        """Checks of validated ``X`` that the method needs beyond scikit-learn's."""

    def _refit_params(self):
        """Parameters of the calibration refits beyond the fit's own (after fitting)."""
        return {}

    # ---------------------------------------------------- joint calibration
    def _calibrate(self, X, y_idx, classes, counts, text, seed):
        """``(zero-shot weight, bias, temperature, calibration record)`` of the calibrated
        scores. The temperature is fitted on the held-out draws; without them it is 1."""
        fixed = None if self.zero_shot_weight == "auto" else float(self.zero_shot_weight)
        if fixed and text is None:
            raise ValueError(f"zero_shot_weight={fixed} needs text features to score "
                             "zero-shot; pass text_features, or an encoder and class names")
        if self.new_class_bias != "auto":
            return fixed or 0.0, float(self.new_class_bias), 1.0, None
        if text is None or counts.min() > 0:
            return fixed or 0.0, 0.0, 1.0, None  # no new classes: nothing to balance
        median = few_images_median(counts)
        if fixed is None and (counts > 0).sum() >= 2 and median is not None:
            return 1.0, 0.0, 1.0, {"method": "few images per class", "median_images": median}
        draws = self._calibration_draws(X, y_idx, classes, counts, text, seed)
        if draws:
            weight, bias, table = choose_calibration(
                draws, CALIBRATION_TOLERANCE, ZERO_SHOT_WEIGHTS if fixed is None else (fixed,))
            temperature = fit_temperature(draws, weight, bias)
            return weight, bias, temperature, {
                "method": "held-out classes", "n_held_out_classes": len(draws[0]["held_out"]),
                "held_out": [d["held_out"] for d in draws],
                "by_zero_shot_weight": {f"{w:g}": {"bias": b, "held_out_hm": h,
                                                   "held_out_hm_at_bias": a}
                                        for w, (b, h, a) in table.items()}}
        # Nothing to estimate base accuracy on: one base class, or no base class with a
        # second image to hold back. Fall back to zero-shot CLIP's own scores, or, with
        # a fixed weight, be as ready to answer "new" on the training images as
        # zero-shot CLIP is on them.
        weight = 1.0 if fixed is None else fixed
        zs = zero_shot_scores(X, text)
        rate = float(np.mean(zs[:, counts == 0].max(axis=1) > zs[:, counts > 0].max(axis=1)))
        bias = 0.0 if weight == 1 else rate_matched_bias(self._blended_scores(X, weight),
                                                           counts == 0, rate)
        if (counts > 0).sum() < 2:
            warnings.warn(f"new_class_bias='auto' needs at least two base classes to hold "
                          f"one out; with one, the model predicts a new class for as many "
                          f"training images ({rate:.0%}) as zero-shot CLIP does (bias "
                          f"{bias:.3g}, zero_shot_weight_ {weight:g}). Pass "
                          "new_class_bias=<float> to choose it yourself.",
                          UserWarning, stacklevel=4)
        return weight, bias, 1.0, {"method": "zero-shot rate", "zero_shot_new_rate": rate}

    def _calibration_draws(self, X, y_idx, classes, counts, text, seed):
        """Held-out-class refits for ``new_class_bias="auto"``: in each, some base classes
        become pretend-new classes (names kept, images dropped) and the model is refitted
        on the rest; returns the refit's scores and zero-shot CLIP's on the held-out
        classes' images and on held-back images of the kept classes (a fifth of each kept
        class with two images or more), with class-balanced weights, as a base / new test
        set is scored. No draws when no image can be held back."""
        base = np.flatnonzero(counts > 0)
        if len(base) < 2 or counts.max() < 2:
            return []
        rng = np.random.RandomState(seed)
        n_held = n_held_out(len(base), np.mean(counts == 0))
        draws = []
        for r in tqdm(range(self.calibration_repeats), unit="refit",
                      desc="new_class_bias='auto'", disable=not getattr(self, "verbose", 0)):
            held = draw_held_out(rng, base, n_held, np.flatnonzero(counts >= 2))
            is_held = np.isin(y_idx, held)
            validation = np.zeros(len(y_idx), dtype=bool)
            for c in np.setdiff1d(np.flatnonzero(counts >= 2), held):
                idx = np.flatnonzero(y_idx == c)
                validation[rng.choice(idx, held_back(len(idx)), replace=False)] = True
            train = ~is_held & ~validation
            sub = self._variant(
                classes=classes, text_features=text, class_names=None, encoder=None,
                new_class_bias=0.0, zero_shot_weight=0.0, random_state=seed + r,
                **self._refit_params())
            with warnings.catch_warnings():  # the fit itself has warned of its parameters
                warnings.simplefilter("ignore", FutureWarning)
                sub.fit(X[train], classes[y_idx[train]])
            evaluate = is_held | validation
            draws.append({"held_out": classes[held], "y": y_idx[evaluate],
                          "scores": sub._scores(X[evaluate], calibrated=False),
                          "zero_shot": zero_shot_scores(X[evaluate], text),
                          "weights": class_balanced_weights(y_idx[evaluate]),
                          "new_col": sub.class_counts_ == 0, "new_row": is_held[evaluate]})
        return draws

    def _variant(self, **params):
        """An unfitted estimator with ``params`` changed, sharing the others' values:
        ``clone`` would deep-copy the ``encoder`` (a whole CLIP model, or an object that
        cannot be copied) only for it to be dropped or read."""
        return type(self)(**{**self.get_params(deep=False), **params})

    # ------------------------------------------------------------- predict
    def _scores(self, X, calibrated=True):
        """Scores (n, n_classes) in ``classes_`` order, float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        scores = self._blended_scores(X, self.zero_shot_weight_ if calibrated else 0.0)
        if calibrated:
            scores[:, self.class_counts_ == 0] += self.new_class_bias_
        return scores

    def _probability_scores(self, X, calibrated):
        scores = self._scores(X, calibrated)
        # a model pickled before temperature_ existed predicts its plain softmax
        return scores / getattr(self, "temperature_", 1.0) if calibrated else scores

    def _blended_scores(self, X, weight):
        """``(1 - weight) * method scores + weight * zero-shot CLIP's``, float64."""
        scores = np.asarray(self._method_scores(X), dtype=np.float64)
        if weight == 0:
            return scores
        return (1 - weight) * scores + weight * zero_shot_scores(X, self.text_features_)
