"""Label checks shared by the metrics, the display and the baselines. Labels are
compared as Python values, so 0 and "0" differ (NumPy's set routines would cast both
arrays to strings and match them)."""

import numpy as np


def not_in(labels, classes):
    """Labels (sorted, as Python values) that are not in ``classes``."""
    return sorted(set(np.asarray(labels).tolist()) - set(np.asarray(classes).tolist()),
                  key=repr)


def check_known(classes, **labels):
    """An error naming the first of ``labels`` (name=values) with a label not in
    ``classes``."""
    for what, values in labels.items():
        if unknown := not_in(values, classes):
            raise ValueError(f"{what} contains labels not in classes: {unknown[:5]}")


def check_predictions(y_true, y_pred, classes):
    """``y_true`` and ``y_pred``: 1-D, of one length, every label in ``classes``."""
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    check_known(classes, y_true=y_true, y_pred=y_pred)


def columns(classes, labels):
    """Column of each of ``labels`` in ``classes`` (in any order); a label that is not
    there is an error, not a wrong column."""
    if missing := not_in(labels, classes):
        raise ValueError(f"labels not in classes: {missing[:5]}")
    column = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    return np.array([column[lab] for lab in np.asarray(labels).tolist()], dtype=np.intp)
