"""Results tables: the columns every comparison reports (base / new / HM, joint HM,
many / medium / few, seconds), scored from score matrices, printed as text, averaged
over seeds and written as CSV. Shared by the demo, ``reproduce`` and the benchmarks."""

import csv
import time

import numpy as np

from ..metrics import base_new_accuracy, harmonic_mean, shot_accuracy

COLUMNS = ("base", "new", "hm", "joint_hm", "many", "medium", "few", "seconds")


def evaluate(scores, data, classes, counts, raw_scores=None):
    """Every column of the table (but time) for ``scores`` on ``data.y_test``, with
    ``data.new_classes`` the classes without training images. ``raw_scores``:
    uncalibrated scores for the reference protocol, when the method calibrates new
    classes for joint prediction."""
    ref_scores = scores if raw_scores is None else raw_scores
    ref = base_new_accuracy(data.y_test, ref_scores, classes, data.new_classes)
    joint = base_new_accuracy(data.y_test, scores, classes, data.new_classes,
                              protocol="joint")
    shots = shot_accuracy(data.y_test, classes[np.argmax(ref_scores, axis=1)], classes, counts)
    if not np.isfinite(scores[:, np.isin(classes, data.new_classes)]).any():
        ref["new"] = ref["hm"] = float("nan")  # the method cannot score new classes
    return {**ref, "joint_hm": joint["hm"], **shots}


def timed_row(rows, name, data, make_scores):
    """Time ``make_scores`` (scores, or (scores, uncalibrated scores)) and add its row
    ``rows[name]``; ``data`` has ``y_test``, ``classes``, ``new_classes`` and
    ``train_counts``. Returns the scores."""
    start = time.perf_counter()
    scores = make_scores()
    scores, raw = scores if isinstance(scores, tuple) else (scores, None)
    rows[name] = {**evaluate(scores, data, data.classes, data.train_counts, raw),
                  "seconds": time.perf_counter() - start}
    return scores


def fitted_scores(estimator, X_train, y_train, X_test):
    """A function for :func:`timed_row`: fit ``estimator`` and return its calibrated and
    its own (uncalibrated) scores of ``X_test``."""
    def scores():
        estimator.fit(X_train, y_train)
        return (estimator.decision_function(X_test),
                estimator.decision_function(X_test, calibrated=False))
    return scores


def _cell(value):
    if isinstance(value, tuple):  # (mean, std)
        mean, std = value
        return "--" if np.isnan(mean) else f"{mean:.3f}±{std:.3f}"
    return "--" if value is None or np.isnan(value) else f"{value:.3f}"


def format_table(rows, columns=COLUMNS, label="method"):
    """Text table of ``rows`` ({row name: {column: value}}); a value is a float, NaN
    (printed ``--``: the method cannot score that column) or a ``(mean, std)`` pair.
    Every column is as wide as its widest cell plus two spaces, so that cells never run
    together (seconds of ``18.746±20.329``, say)."""
    cells = {name: [_cell(r.get(c, float("nan"))) for c in columns] for name, r in rows.items()}
    width = [max([9, len(str(c)) + 1, *(len(row[i]) + 2 for row in cells.values())])
             for i, c in enumerate(columns)]
    name_width = max([27, len(label) + 2, *(len(n) + 2 for n in cells)])
    head = f"{label:<{name_width}}" + "".join(f"{c:>{w}}" for c, w in zip(columns, width))
    lines = [head, "-" * len(head)]
    for name, row in cells.items():
        lines.append(f"{name:<{name_width}}" + "".join(f"{t:>{w}}" for t, w in zip(row, width)))
    return "\n".join(lines)


def mean_std(rows, columns=COLUMNS):
    """``{column: (mean, std)}`` over a list of rows (NaN-aware; std is the population
    standard deviation over seeds, 0 for one seed)."""
    out = {}
    for c in columns:
        values = np.array([r.get(c, np.nan) for r in rows], dtype=float)
        finite = values[~np.isnan(values)]
        out[c] = ((float(finite.mean()), float(finite.std())) if len(finite)
                  else (float("nan"), float("nan")))
    return out


def average_over_datasets(summaries, columns=COLUMNS):
    """The paper's "Average" row: the mean of each dataset's mean, with HM (and joint
    HM left as the mean of the datasets' joint HMs) recomputed as the harmonic mean of
    the average base and new accuracies, as CoOp-style tables do."""
    out = {}
    for c in columns:
        values = np.array([s[c][0] for s in summaries], dtype=float)
        out[c] = float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")
    if "hm" in out:
        out["hm"] = harmonic_mean(out["base"], out["new"])
    return out


def write_csv(path, records, fields):
    """Write ``records`` (dicts) to ``path`` with the columns ``fields``; floats with 6
    decimals, NaN as an empty cell; file names that are not UTF-8 as their own bytes."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.6f}"
        return v

    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({k: fmt(r.get(k, "")) for k in fields})


def figure_and_axes():
    """A figure of its own and its axes, without pyplot: no global backend is set and no
    figure is left open in the caller's process."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5), dpi=110)
    return figure, figure.subplots()
