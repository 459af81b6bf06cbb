"""Choosing the additive bias on new-class scores that balances base and new classes in
joint prediction. NumPy only."""

import numpy as np


def joint_hm_by_bias(scores, y, is_new_col, is_new_row, biases):
    """Joint harmonic mean of base and new accuracy for each candidate bias.

    ``scores`` (n, C) and ``y`` (column index of the true class); the bias is added to
    the columns in ``is_new_col``. A sample's prediction only depends on whether its
    best new score plus the bias beats its best base score, so each bias costs O(n).
    """
    base_cols, new_cols = np.flatnonzero(~is_new_col), np.flatnonzero(is_new_col)
    best_base = scores[:, base_cols].max(axis=1)
    best_new = scores[:, new_cols].max(axis=1)
    right_if_base = base_cols[scores[:, base_cols].argmax(axis=1)] == y
    right_if_new = new_cols[scores[:, new_cols].argmax(axis=1)] == y
    picks_new = best_new[None, :] + np.asarray(biases)[:, None] > best_base[None, :]
    correct = np.where(picks_new, right_if_new, right_if_base)
    acc_base = correct[:, ~is_new_row].mean(axis=1)
    acc_new = correct[:, is_new_row].mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hm = np.where(acc_base + acc_new > 0, 2 * acc_base * acc_new / (acc_base + acc_new), 0)
    return hm


def best_bias(scores, y, is_new_col, is_new_row):
    """The bias that maximises joint HM (the middle one of the optimal candidates).

    Candidates are the score gaps at which some sample's prediction flips between its
    best base and best new class, so the search is exact.
    """
    if not is_new_row.any() or is_new_row.all():
        raise ValueError("need samples of both base and new classes to choose a bias")
    gaps = np.sort(scores[:, ~is_new_col].max(axis=1) - scores[:, is_new_col].max(axis=1))
    # one bias inside every interval between consecutive flip points, and beyond both ends
    candidates = np.concatenate([[gaps[0] - 1.0], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] + 1.0]])
    hm = joint_hm_by_bias(scores, y, is_new_col, is_new_row, candidates)
    best = np.flatnonzero(hm >= hm.max() - 1e-12)
    return float(candidates[best[len(best) // 2]]), float(hm.max())


def plateau_bias(scores, y, is_new_col, is_new_row, tolerance=0.0):
    """The largest bias whose joint HM is within ``tolerance`` (relative) of the best.

    Joint HM falls steeply below the best bias (new classes stop being predicted) and
    gently above it, and held-out base classes, known to CLIP and to the head, need
    less bias than real new classes: so among near-optimal biases the largest is the
    safer choice. ``tolerance=0`` gives the right end of the optimal set.
    """
    if not is_new_row.any() or is_new_row.all():
        raise ValueError("need samples of both base and new classes to choose a bias")
    gaps = np.sort(scores[:, ~is_new_col].max(axis=1) - scores[:, is_new_col].max(axis=1))
    candidates = np.concatenate([[gaps[0] - 1.0], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] + 1.0]])
    hm = joint_hm_by_bias(scores, y, is_new_col, is_new_row, candidates)
    ok = np.flatnonzero(hm >= hm.max() * (1 - tolerance) - 1e-12)
    return float(candidates[ok[-1]]), float(hm.max())


def rate_matched_bias(scores, is_new_col, rate):
    """The bias at which a fraction ``rate`` of the rows (base-class samples) is predicted
    as some new class: the bias that makes the model as ready to answer "new" as a
    reference (zero-shot CLIP) is on the same samples."""
    gaps = scores[:, ~is_new_col].max(axis=1) - scores[:, is_new_col].max(axis=1)
    return float(np.quantile(gaps, np.clip(rate, 0.0, 1.0)))
