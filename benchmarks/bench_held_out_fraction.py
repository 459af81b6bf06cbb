"""How many base classes a calibration refit of new_class_bias="auto" should hold out:
the default CandleClassifier fitted once per world and seed, then its calibration drawn
again with each rule, applied to the same test scores and scored by joint HM.

    .venv/bin/python benchmarks/bench_held_out_fraction.py WORLD:SEED [WORLD:SEED ...]

Rules "fF-rR": hold out the new classes' share of the base classes, at most F ("fNone":
no cap, the rule before decision 0023), in R refits; each with the default 2 % plateau
(t0.02) and with tolerance 0 (t0.0). "hindsight" is the best bias on the test labels at
the fitted model's zero-shot weight. Rows go to benchmarks/results/held_out_fraction.jsonl
(decision 0023).
"""

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import run_world_seeds  # noqa: E402
from worlds import load_world  # noqa: E402

from candle_sklearn import CandleClassifier  # noqa: E402
from candle_sklearn import _calibration as cal  # noqa: E402
from candle_sklearn._zero_shot import zero_shot_scores  # noqa: E402

RULES = ((None, 3), (0.1, 3), (0.2, 3), (0.25, 3), (0.1, 5), (0.25, 5))


def draws_for(clf, X, y_idx, seed, cap, repeats):
    """The fitted model's calibration draws made again with at most ``cap`` of the base
    classes held out (None: no cap) in ``repeats`` refits."""
    saved, saved_repeats = cal.HELD_OUT_FRACTION, clf.calibration_repeats
    cal.HELD_OUT_FRACTION, clf.calibration_repeats = (1.0 if cap is None else cap), repeats
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draws = clf._calibration_draws(X, y_idx, clf.classes_, clf.class_counts_,
                                           clf.text_features_, seed)
    finally:
        cal.HELD_OUT_FRACTION, clf.calibration_repeats = saved, saved_repeats
    return draws, len(draws[0]["held_out"])


def study(world, seed, rules=RULES):
    d = load_world(world, seed)
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                           random_state=seed, device="cpu").fit(d.X_train, d.y_train)
    own = clf.decision_function(d.X_test, calibrated=False)
    zs = zero_shot_scores(d.X_test, clf.text_features_)
    y, new = np.searchsorted(clf.classes_, d.y_test), clf.class_counts_ == 0

    def joint(w, bias):
        scores = zs if w == 1 else (1 - w) * own + w * zs
        return float(cal.joint_hm_by_bias(scores, y, new, new[y], [bias])[0])

    row = {"world": world, "seed": seed,
           "method": (clf.calibration_ or {}).get("method"),
           "joint_hm": {"fitted": joint(clf.zero_shot_weight_, clf.new_class_bias_)}}
    if row["method"] != "held-out classes":
        return row  # the rule only changes draws; fallbacks have none
    X = np.asarray(d.X_train)
    y_idx = np.searchsorted(clf.classes_, d.y_train)
    fit_seed = int(np.random.RandomState(seed).randint(np.iinfo(np.int32).max))
    for cap, repeats in rules:
        draws, n_held = draws_for(clf, X, y_idx, fit_seed, cap, repeats)
        for tol in (cal.CALIBRATION_TOLERANCE, 0.0):
            row["joint_hm"][f"f{cap}-r{repeats}-t{tol:g}"] = joint(
                *cal.choose_calibration(draws, tol)[:2])
        row[f"n_held f{cap}"] = n_held
    w = clf.zero_shot_weight_
    row["joint_hm"]["hindsight"] = cal.best_bias(zs if w == 1 else (1 - w) * own + w * zs,
                                                 y, new, new[y])[1]
    return row


def main():
    run_world_seeds("held_out_fraction", study, sys.argv[1:])


if __name__ == "__main__":
    main()
