"""Choosing the additive bias on new-class scores that balances base and new classes in
joint prediction. NumPy only."""

import numpy as np

# Weights of zero-shot CLIP's scores in the calibrated scores that new_class_bias="auto"
# chooses among (see choose_calibration).
ZERO_SHOT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Tolerance of new_class_bias="auto" on the held-out classes' joint error (1 - HM): the
# largest bias whose error is within this fraction of the best one's (plateau_bias). 6 %
# of the error is the 2 % of HM it replaces at a best HM of 0.75; near an HM of 1 a 2 %
# tolerance would admit biases that double the error (docs/decisions/0025).
CALIBRATION_TOLERANCE = 0.06
# Below this median number of images per base class (of those with two or more, which
# the refits hold an image back from), the calibration uses zero-shot CLIP's scores
# without refits: a held-back image leaves the refit of a class of two or three images a
# half or two thirds of them, and the bias chosen on such refits errs low (docs/decisions).
CALIBRATION_MIN_IMAGES = 4


# A calibration refit holds out at most this fraction of the base classes (at least one;
# fewer where fewer classes are new). Each held-out class is one the refit's cross-modal
# map never learns from: a refit on half the classes scores its held-out classes lower
# than the fitted model scores real new ones, and asks for a larger bias than the model
# needs. A fifth keeps the refits near the model, as five-fold cross-validation does
# (docs/decisions/0023).
HELD_OUT_FRACTION = 0.2


def n_held_out(n_base, new_fraction):
    """Base classes a calibration refit holds out: the fraction of new classes among all,
    at most :data:`HELD_OUT_FRACTION`, of the ``n_base`` base classes; at least one, and
    one fewer than all."""
    share = min(new_fraction, HELD_OUT_FRACTION)
    return int(np.clip(round(n_base * share), 1, n_base - 1))


def held_back(count):
    """Images a calibration refit holds back from a kept class of ``count`` (two or
    more): a fifth, at least one. Works on arrays of counts too."""
    return np.maximum(1, count // 5)


def median_images(counts):
    """The median images of the base classes an image is held back from (those of two or
    more; one-image classes stay whole); None when no class has two images."""
    held_back_from = counts[counts >= 2]
    return float(np.median(held_back_from)) if held_back_from.size else None


def few_images_median(counts):
    """:func:`median_images` where it is below ``CALIBRATION_MIN_IMAGES``: the refits
    then keep too little of each class to stand for the fitted model. None otherwise."""
    median = median_images(counts)
    return median if median is not None and median < CALIBRATION_MIN_IMAGES else None


def draw_held_out(rng, base, n_held, multi):
    """``n_held`` of the ``base`` classes to hold out in a calibration refit, keeping at
    least one of the classes in ``multi`` (two images or more), which is where held-back
    images of kept classes come from: a draw that held out all of them would leave no
    base-class accuracy to balance against."""
    held = rng.choice(base, n_held, replace=False)
    if multi.size and np.isin(multi, held).all():
        keep, other = rng.choice(multi), rng.choice(np.setdiff1d(base, held))
        held = np.append(held[held != keep], other)
    return held


def class_balanced_weights(y):
    """Sample weights under which every class of ``y`` counts the same: a held-out set
    drawn from a long-tailed training set is scored as a class-balanced test set is."""
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def joint_hm_by_bias(scores, y, is_new_col, is_new_row, biases, weights=None):
    """Joint harmonic mean of base and new accuracy for each candidate bias.

    ``scores`` (n, C) and ``y`` (column index of the true class); the bias is added to
    the columns in ``is_new_col``. A sample's prediction only depends on whether its
    best new score plus the bias beats its best base score, so each bias costs O(n).
    ``weights`` (n,) weigh the samples in each accuracy (default: equally).
    """
    base_cols, new_cols = np.flatnonzero(~is_new_col), np.flatnonzero(is_new_col)
    best_base = scores[:, base_cols].max(axis=1)
    best_new = scores[:, new_cols].max(axis=1)
    right_if_base = base_cols[scores[:, base_cols].argmax(axis=1)] == y
    right_if_new = new_cols[scores[:, new_cols].argmax(axis=1)] == y
    picks_new = best_new[None, :] + np.asarray(biases)[:, None] > best_base[None, :]
    correct = np.where(picks_new, right_if_new, right_if_base)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    acc_base = correct[:, ~is_new_row] @ w[~is_new_row] / w[~is_new_row].sum()
    acc_new = correct[:, is_new_row] @ w[is_new_row] / w[is_new_row].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        hm = np.where(acc_base + acc_new > 0, 2 * acc_base * acc_new / (acc_base + acc_new), 0)
    return hm


def best_bias(scores, y, is_new_col, is_new_row, weights=None):
    """The bias that maximises joint HM (the middle one of the optimal candidates).

    Candidates are the score gaps at which some sample's prediction flips between its
    best base and best new class, so the search is exact.
    """
    if not is_new_row.any() or is_new_row.all():
        raise ValueError("need samples of both base and new classes to choose a bias")
    gaps = np.sort(scores[:, ~is_new_col].max(axis=1) - scores[:, is_new_col].max(axis=1))
    # one bias inside every interval between consecutive flip points, and beyond both ends
    candidates = np.concatenate([[gaps[0] - 1.0], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] + 1.0]])
    hm = joint_hm_by_bias(scores, y, is_new_col, is_new_row, candidates, weights)
    best = np.flatnonzero(hm >= hm.max() - 1e-12)
    return float(candidates[best[len(best) // 2]]), float(hm.max())


def plateau_bias(scores, y, is_new_col, is_new_row, tolerance=0.0, weights=None):
    """The largest bias whose joint error (1 - HM) is within ``tolerance`` (relative) of
    the best bias's.

    Joint HM falls steeply below the best bias (new classes stop being predicted) and
    gently above it, and held-out base classes, known to CLIP and to the head, need
    less bias than real new classes: so among near-optimal biases the largest is the
    safer choice. ``tolerance=0`` gives the right end of the optimal set.
    """
    if not is_new_row.any() or is_new_row.all():
        raise ValueError("need samples of both base and new classes to choose a bias")
    gaps = np.sort(scores[:, ~is_new_col].max(axis=1) - scores[:, is_new_col].max(axis=1))
    candidates = np.concatenate([[gaps[0] - 1.0], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] + 1.0]])
    hm = joint_hm_by_bias(scores, y, is_new_col, is_new_row, candidates, weights)
    ok = np.flatnonzero(hm >= hm.max() - tolerance * (1 - hm.max()) - 1e-12)
    return float(candidates[ok[-1]]), float(hm.max())


def rate_matched_bias(scores, is_new_col, rate):
    """The bias at which a fraction ``rate`` of the rows (base-class samples) is predicted
    as some new class: the bias that makes the model as ready to answer "new" as a
    reference (zero-shot CLIP) is on the same samples."""
    gaps = scores[:, ~is_new_col].max(axis=1) - scores[:, is_new_col].max(axis=1)
    return float(np.quantile(gaps, np.clip(rate, 0.0, 1.0)))


def blend(draw, weight):
    """A draw's refit scores blended with zero-shot CLIP's, ``(1 - w) * scores + w *
    zero_shot`` (zero-shot CLIP's own at w = 1)."""
    if weight == 1:
        return draw["zero_shot"]
    return (1 - weight) * draw["scores"] + weight * draw["zero_shot"]


def choose_calibration(draws, tolerance, weights=ZERO_SHOT_WEIGHTS, merit="best"):
    """The zero-shot weight and the new-class bias for calibrated scores, from held-out
    draws (dicts with the refit's ``scores``, zero-shot CLIP's ``zero_shot`` scores on
    the same rows, ``y``, ``new_col``, ``new_row`` and per-row ``weights``).

    Each candidate weight w blends the scores as ``(1 - w) * scores + w * zero_shot``;
    its bias is :func:`plateau_bias` on every draw, averaged (``tolerance=None``: the
    middle of the optimal set, :func:`best_bias`). Its merit is the mean over
    draws of each draw's best held-out joint HM (``merit="used"``: the mean held-out
    joint HM at the averaged bias, the one the model will use). The weight with the best
    merit wins, the smallest among ties, so the model falls back towards zero-shot CLIP
    only as far as the held-out classes say it predicts them better. Weight 1 is
    zero-shot CLIP itself, with bias 0: its scores never met the training images, so
    they have no base-class lean to correct, and a bias estimated on a few held-out
    classes would only add their noise to the model the fallback is meant to equal.

    The best-bias merit is an in-sample maximum, which flatters every weight but 1
    (judged at its fixed bias); the merit at the used bias is the fair comparison. Yet
    over the family of worlds (docs/decisions/0005) the fair one did not do better: 0.623
    joint HM against 0.624, and one loss to zero-shot CLIP (-0.009) against none. So the
    default stays. Returns ``(weight, bias, {weight: (bias, merit, HM at the bias)})``.
    """
    def hm_at(scores, d, bias):
        return joint_hm_by_bias(scores, d["y"], d["new_col"], d["new_row"], [bias],
                                d["weights"])[0]

    table = {}
    for w in weights:
        blended = [blend(d, w) for d in draws]
        if w == 1:
            bias = 0.0
        else:
            picks = [best_bias(s, d["y"], d["new_col"], d["new_row"], d["weights"])
                     if tolerance is None else
                     plateau_bias(s, d["y"], d["new_col"], d["new_row"], tolerance,
                                  d["weights"]) for s, d in zip(blended, draws)]
            bias, best = float(np.mean([b for b, _ in picks])), np.mean([h for _, h in picks])
        at_bias = float(np.mean([hm_at(s, d, bias) for s, d in zip(blended, draws)]))
        table[w] = (bias, at_bias if w == 1 or merit == "used" else float(best), at_bias)
    chosen = max(weights, key=lambda w: table[w][1])  # the first of equal merits
    return chosen, table[chosen][0], table


def fit_temperature(draws, weight, bias):
    """The temperature T of calibrated probabilities, ``softmax(scores / T)``: the one that
    minimises the class-balanced log loss of the held-out draws' calibrated scores (the
    zero-shot blend ``weight`` and the new-class ``bias`` applied), as temperature scaling
    does on a validation set. Logit-scale-100 cosines make a softmax that is near 1 on
    wrong answers too; the draws' images were not trained on, so their log loss measures
    that overconfidence. The log loss is convex in b = 1 / T: Newton steps on it, kept
    inside a bracket that bisects where a step would leave it, for b in [1e-4, 10]."""
    rows = []
    for d in draws:
        s = blend(d, weight) + np.where(d["new_col"], bias, 0.0)
        s = s - s.max(axis=1, keepdims=True)  # <= 0, each row's maximum 0: exp cannot overflow
        rows.append((s, s[np.arange(len(d["y"])), d["y"]], d["weights"] / d["weights"].sum()))

    def slope_and_curvature(b):
        """d/db and d2/db2 of the log loss: E_p[s] - s_true and Var_p[s], weighted."""
        slope = curvature = 0.0
        for s, true, w in rows:
            p = np.exp(b * s)
            p /= p.sum(axis=1, keepdims=True)
            mean = (p * s).sum(axis=1)
            slope += w @ (mean - true)
            curvature += w @ ((p * s * s).sum(axis=1) - mean ** 2)
        return slope, curvature

    lo, hi = 1e-4, 10.0
    if slope_and_curvature(lo)[0] >= 0:
        return 1 / lo
    if slope_and_curvature(hi)[0] <= 0:
        return 1 / hi
    b = 1.0
    for _ in range(60):
        slope, curvature = slope_and_curvature(b)
        if abs(slope) < 1e-10 or hi / lo < 1 + 1e-12:
            break
        if slope > 0:
            hi = b
        else:
            lo = b
        step = b - slope / curvature if curvature > 0 else -1.0
        b = step if lo < step < hi else np.sqrt(lo * hi)
    return float(1 / b)
