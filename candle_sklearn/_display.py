"""LongTailDisplay: per-class accuracy against training-set size, in scikit-learn's
Display style (``from_estimator``, ``from_predictions``, ``plot``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from sklearn.pipeline import Pipeline

from ._labels import check_predictions


def _final(estimator):
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def _name(estimator):
    return type(_final(estimator)).__name__


def _per_class_accuracy(y_true, y_pred, classes):
    """Accuracy on the samples of each class (NaN for a class without samples)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    check_predictions(y_true, y_pred, classes)
    hits = y_pred == y_true
    return np.array([hits[y_true == c].mean() if (y_true == c).any() else np.nan
                     for c in classes])


def _moving_average(values, width):
    """Centred moving average ignoring NaN; the window shrinks at the ends."""
    kernel = np.ones(min(width, len(values)))  # convolve's "same" keeps the longer length
    ok = ~np.isnan(values)
    total = np.convolve(np.where(ok, values, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class LongTailDisplay:
    """Long-tail plot: accuracy of every class against its number of training images.

    Classes are ordered by training images, most first; classes without any (new
    classes, known by name only) come last, set apart by a dashed line. Each method is
    one series of markers (one per class) with a moving average drawn separately over
    the base and the new classes; grey bars on a second axis show the training images.

    It is recommended to create one with :meth:`from_estimator` or
    :meth:`from_predictions`. All parameters are stored as attributes.

    Parameters
    ----------
    per_class_accuracy : ndarray of shape (n_classes,) or (n_series, n_classes)
        Accuracy on the test samples of each class, one row per method (NaN for a
        class without test samples).
    class_counts : ndarray of shape (n_classes,)
        Training images per class; 0 marks a new class.
    classes : ndarray of shape (n_classes,), default=None
        The labels, aligned with the columns of ``per_class_accuracy``.
    names : str or list of str, default=None
        Legend label of each series.

    Attributes
    ----------
    ax_ : matplotlib Axes
        Axes with the accuracies.
    figure_ : matplotlib Figure
        Figure containing the plot.
    ax_counts_ : matplotlib Axes or None
        Twin axes with the training-image bars (None with ``show_counts=False``).
    lines_ : dict of str to list of matplotlib Line2D
        Per series: its markers, then its moving averages.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from candle_sklearn import CandleClassifier
    >>> from candle_sklearn.baselines import ZeroShotClassifier
    >>> from candle_sklearn.datasets import make_clip_like_features
    >>> from candle_sklearn.metrics import LongTailDisplay
    >>> data = make_clip_like_features(n_base=6, n_new=2, dim=64, random_state=0)
    >>> clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
    ...                        max_epochs=5, random_state=0).fit(data.X_train, data.y_train)
    >>> zero_shot = ZeroShotClassifier(data.classes, text_features=data.text_features)
    >>> disp = LongTailDisplay.from_estimator(clf, data.X_test, data.y_test,
    ...                                       baseline=zero_shot.fit(data.X_test))
    >>> disp.per_class_accuracy.shape
    (2, 8)
    """

    def __init__(self, per_class_accuracy: ArrayLike, class_counts: ArrayLike, *,
                 classes: ArrayLike | None = None, names: str | list[str] | None = None):
        self.per_class_accuracy = per_class_accuracy
        self.class_counts = class_counts
        self.classes = classes
        self.names = names

    def plot(self, *, ax=None, smooth: int | None = 7, show_counts: bool = True,
             title: str | None = None) -> LongTailDisplay:
        """Draw the plot.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.
        smooth : int or None, default=7
            Width (in classes) of the moving average; None or 1 draws none.
        show_counts : bool, default=True
            Bars of training images per class on a second y-axis.
        title : str, default=None

        Returns
        -------
        display : LongTailDisplay
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("LongTailDisplay.plot needs matplotlib: "
                              "pip install 'candle-sklearn[demo]'") from exc
        acc = np.atleast_2d(np.asarray(self.per_class_accuracy, dtype=float))
        counts = np.asarray(self.class_counts)
        if acc.ndim != 2 or acc.shape[1] != len(counts):
            raise ValueError(f"per_class_accuracy has shape {acc.shape}, expected "
                             f"(n_series, {len(counts)}) to match class_counts")
        names = self.names
        names = [names] if isinstance(names, str) else list(names or [])
        names += [f"series {i}" for i in range(len(names), len(acc))]
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 4.5))
        order = np.argsort(-counts, kind="stable")
        n_base = int((counts > 0).sum())
        x = np.arange(len(order))
        segments = [s for s in (slice(0, n_base), slice(n_base, None)) if len(x[s])]
        self.lines_ = {}
        for row, name, marker in zip(acc, names, "osd^v<>ph*"):
            y = row[order]
            (dots,) = ax.plot(x, y, marker, ls="none", ms=4, alpha=0.75, label=name)
            self.lines_[name] = [dots]
            if smooth and smooth > 1:
                for part in segments:  # base and new averaged apart
                    (line,) = ax.plot(x[part], _moving_average(y[part], smooth), "-", lw=1.5,
                                      color=dots.get_color())
                    self.lines_[name].append(line)
        if 0 < n_base < len(order):
            ax.axvline(n_base - 0.5, color="grey", ls="--", lw=1)
            ax.text(n_base - 0.2, 1.02, "new classes (names only) →", fontsize=8,
                    color="grey")
        self.ax_counts_ = None
        if show_counts:
            twin = ax.twinx()
            twin.bar(x, counts[order], color="lightgrey", alpha=0.6, zorder=0)
            twin.set_ylabel("training images")
            ax.set_zorder(twin.get_zorder() + 1)  # markers above the bars
            ax.patch.set_visible(False)
            self.ax_counts_ = twin
        ax.set_xlabel("classes, by number of training images")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.08)
        ax.legend(loc="center left", fontsize=8)
        if title is not None:
            ax.set_title(title)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, X, y: ArrayLike, *, baseline=None, X_baseline=None,
                       class_counts: ArrayLike | None = None, name: str | None = None,
                       baseline_name: str | None = None, ax=None, smooth: int | None = 7,
                       show_counts: bool = True, title: str | None = None) -> LongTailDisplay:
        """Plot the per-class accuracy of a fitted classifier (and of a baseline).

        Parameters
        ----------
        estimator : fitted classifier, or a Pipeline ending in one
            Its ``classes_`` are the classes plotted; its (or its last step's)
            ``class_counts_`` are the training images, unless ``class_counts`` is given.
        X : samples ``estimator.predict`` accepts
        y : array-like of shape (n_samples,)
            True labels.
        baseline : fitted classifier, default=None
            A second method to compare with, e.g. a
            :class:`~candle_sklearn.baselines.ZeroShotClassifier`.
        X_baseline : default=None
            The samples for ``baseline`` when it takes other inputs (features rather
            than images); default ``X``.
        class_counts : array-like of shape (n_classes,), default=None
            Training images per class of ``estimator.classes_``.
        name, baseline_name : str, default=None
            Legend labels; default: the class names of the (final) estimators.
        ax, smooth, show_counts, title
            See :meth:`plot`.

        Returns
        -------
        display : LongTailDisplay
        """
        classes = np.asarray(estimator.classes_)
        if class_counts is None:
            if not hasattr(_final(estimator), "class_counts_"):
                raise ValueError(f"{_name(estimator)} has no class_counts_: pass "
                                 "class_counts (training images per class of classes_)")
            class_counts = _final(estimator).class_counts_
        y_pred = {name or _name(estimator): estimator.predict(X)}
        if baseline is not None:
            key = baseline_name or _name(baseline)
            if key in y_pred:
                key += " (baseline)"
            y_pred[key] = baseline.predict(X if X_baseline is None else X_baseline)
        return cls._from_predictions(y, y_pred, class_counts, classes, ax, smooth,
                                     show_counts, title)

    @classmethod
    def from_predictions(cls, y_true: ArrayLike, y_pred: ArrayLike, *, class_counts: ArrayLike,
                         classes: ArrayLike | None = None,
                         y_pred_baseline: ArrayLike | Mapping[str, ArrayLike] | None = None,
                         name: str | None = None, baseline_name: str | None = None, ax=None,
                         smooth: int | None = 7, show_counts: bool = True,
                         title: str | None = None) -> LongTailDisplay:
        """Plot per-class accuracy from true and predicted labels.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
        y_pred : array-like of shape (n_samples,)
        class_counts : array-like of shape (n_classes,)
            Training images per class of ``classes``; 0 marks a new class.
        classes : array-like of shape (n_classes,), default=None
            Labels aligned with ``class_counts``; default ``np.unique(y_true)``.
        y_pred_baseline : array-like of shape (n_samples,) or dict, default=None
            Predictions of a method to compare with; a dict ``{name: predictions}``
            adds several.
        name, baseline_name : str, default=None
            Legend labels.
        ax, smooth, show_counts, title
            See :meth:`plot`.

        Returns
        -------
        display : LongTailDisplay
        """
        classes = np.unique(y_true) if classes is None else np.asarray(classes)
        main = name or "predictions"
        y_pred = {main: y_pred}
        baselines = (dict(y_pred_baseline) if isinstance(y_pred_baseline, Mapping) else
                     {} if y_pred_baseline is None else
                     {baseline_name or "baseline": y_pred_baseline})
        for key, values in baselines.items():  # a baseline never replaces the main series
            y_pred[f"{key} (baseline)" if key == main else key] = values
        return cls._from_predictions(y_true, y_pred, class_counts, classes, ax, smooth,
                                     show_counts, title)

    @classmethod
    def _from_predictions(cls, y_true, y_pred, class_counts, classes, ax, smooth,
                          show_counts, title):
        class_counts = np.asarray(class_counts)
        if class_counts.shape != classes.shape:
            raise ValueError(f"class_counts has shape {class_counts.shape}, expected "
                             f"{classes.shape}: one count per class")
        acc = np.stack([_per_class_accuracy(y_true, p, classes) for p in y_pred.values()])
        display = cls(acc, class_counts, classes=classes, names=list(y_pred))
        return display.plot(ax=ax, smooth=smooth, show_counts=show_counts, title=title)
