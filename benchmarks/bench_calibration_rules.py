"""Selection rules of new_class_bias="auto" scored on the same fits and held-out draws
(the default CandleClassifier, whitened start): the bias and zero-shot weight each rule
picks from the draws, applied to the model's test scores, scored by joint HM.

    .venv/bin/python benchmarks/bench_calibration_rules.py WORLD:SEED [WORLD:SEED ...]

Rules: the default (per draw the largest bias whose joint error 1 - HM is within
CALIBRATION_TOLERANCE of the best bias's, averaged), the same with each weight judged by
the held-out joint HM at the bias it would use ("used") instead of at each draw's best,
the same within 0 %, the rule before decision 0025 (within 2 % of the best HM), the
middle of the optimal set, and on the draws' mean curve (over a grid of biases) the
largest bias within 0 %, 1 % and 2 % of its best and the middle of its 2 % set; and the
hindsight-optimal bias at the default's weight. Rows go to benchmarks/results/calibration_rules.jsonl (decision 0005).
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import run_world_seeds  # noqa: E402
from worlds import load_world  # noqa: E402

from candle_sklearn import CandleClassifier, _base  # noqa: E402
from candle_sklearn import _calibration as cal  # noqa: E402
from candle_sklearn._zero_shot import zero_shot_scores  # noqa: E402

NOTE = ("the default CandleClassifier (whitened start, attenuation correction, tolerance on "
        "the error), its three held-out draws scored by the selection rules of "
        "(zero_shot_weight, new_class_bias); joint HM on the test set")


def mean_curve_rule(draws, tolerance, pick="largest"):
    """The weight of best mean held-out curve and, on that curve, the largest (or middle)
    bias within ``tolerance`` of its best."""
    best = None
    for w in cal.ZERO_SHOT_WEIGHTS:
        if w == 1:
            bias = 0.0
            merit = np.mean([cal.joint_hm_by_bias(d["zero_shot"], d["y"], d["new_col"],
                                                  d["new_row"], [0.0], d["weights"])[0]
                             for d in draws])
        else:
            blended = [cal.blend(d, w) for d in draws]
            gaps = np.concatenate([s[:, ~d["new_col"]].max(1) - s[:, d["new_col"]].max(1)
                                   for s, d in zip(blended, draws)])
            grid = np.linspace(gaps.min() - 1, gaps.max() + 1, 2001)
            curve = np.mean([cal.joint_hm_by_bias(s, d["y"], d["new_col"], d["new_row"], grid,
                                                  d["weights"])
                             for s, d in zip(blended, draws)], axis=0)
            ok = np.flatnonzero(curve >= curve.max() * (1 - tolerance) - 1e-12)
            bias, merit = grid[ok[-1] if pick == "largest" else ok[len(ok) // 2]], curve.max()
        if best is None or merit > best[0] + 1e-12:
            best = (merit, w, bias)
    return best[1], best[2]


def hm_plateau_rule(draws, tolerance=0.02):
    """The rule before decision 0025: each draw's largest bias whose joint HM is within
    ``tolerance`` of its best HM (relative to the HM, not to the error), averaged; the
    weight by the draws' best."""
    best = None
    for w in cal.ZERO_SHOT_WEIGHTS:
        blended = [cal.blend(d, w) for d in draws]
        if w == 1:
            bias = 0.0
            merit = np.mean([cal.joint_hm_by_bias(s, d["y"], d["new_col"], d["new_row"],
                                                  [0.0], d["weights"])[0]
                             for s, d in zip(blended, draws)])
        else:
            picks = []
            for s, d in zip(blended, draws):
                _, top = cal.best_bias(s, d["y"], d["new_col"], d["new_row"], d["weights"])
                # HM >= top (1 - tolerance) is error <= (1 - top) (1 + k), k below
                k = tolerance * top / (1 - top) if top < 1 else 0.0
                picks.append(cal.plateau_bias(s, d["y"], d["new_col"], d["new_row"], k,
                                              d["weights"]))
            bias, merit = np.mean([b for b, _ in picks]), np.mean([h for _, h in picks])
        if best is None or merit > best[0] + 1e-12:
            best = (merit, w, bias)
    return best[1], best[2]


def study(world, seed):
    stash = {}
    original = _base.choose_calibration

    def keep(draws, *args, **kwargs):
        stash["draws"] = draws
        return original(draws, *args, **kwargs)

    _base.choose_calibration = keep
    try:
        d = load_world(world, seed)
        clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                               random_state=seed, device="cpu").fit(d.X_train, d.y_train)
    finally:
        _base.choose_calibration = original
    draws = stash.get("draws")
    if not draws:
        return None
    own = clf.decision_function(d.X_test, calibrated=False)
    zs = zero_shot_scores(d.X_test, clf.text_features_)
    y = np.searchsorted(clf.classes_, d.y_test)
    new = clf.class_counts_ == 0

    def joint(w, bias):
        scores = zs if w == 1 else (1 - w) * own + w * zs
        return float(cal.joint_hm_by_bias(scores, y, new, new[y], [bias])[0])

    hm = {"default": joint(clf.zero_shot_weight_, clf.new_class_bias_)}
    hm["used"] = joint(*cal.choose_calibration(draws, cal.CALIBRATION_TOLERANCE,
                                               merit="used")[:2])
    hm["tol0"] = joint(*cal.choose_calibration(draws, 0.0)[:2])
    hm["hm tol 2%"] = joint(*hm_plateau_rule(draws))
    hm["middle"] = joint(*cal.choose_calibration(draws, None)[:2])
    for tol in (0.0, 0.01, 0.02):
        hm[f"mean-curve tol{tol:g}"] = joint(*mean_curve_rule(draws, tol))
    hm["mean-curve middle 2%"] = joint(*mean_curve_rule(draws, 0.02, "middle"))
    w = clf.zero_shot_weight_
    hm["hindsight"] = cal.best_bias(zs if w == 1 else (1 - w) * own + w * zs, y, new,
                                    new[y])[1]
    return {"world": world, "seed": seed, "joint_hm": hm}


def main():
    run_world_seeds("calibration_rules", study, sys.argv[1:], note=NOTE)


if __name__ == "__main__":
    main()
