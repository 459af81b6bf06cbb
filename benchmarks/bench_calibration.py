"""Joint prediction over base and new classes: how `new_class_bias="auto"` chooses the
bias, over the family of worlds (benchmarks/worlds.py), and `add_classes`.

    .venv/bin/python benchmarks/bench_calibration.py study [--worlds ...] [--seeds 0 1 2]
    .venv/bin/python benchmarks/bench_calibration.py add-classes [--seeds 0 1 2]

`study` fits the default CandleClassifier with `new_class_bias=0.0` on every world and
seed, runs the held-out-class refits of "auto" once (three draws) and evaluates every
selection rule on the same draws: the bias each rule picks is applied to the model's
test scores and scored by joint HM (every test image among all classes). Rules: the
middle of the optimal set (0.1.0) and the largest bias within a relative tolerance of
the optimum, from the first 1, 2 or 3 draws. The yardsticks, in the same run: the
hindsight-optimal bias (chosen on the test labels), no bias, and zero-shot CLIP's
joint HM (the issue's floor). Also printed: the refits' cost relative to the plain fit.

`add-classes` compares classes added after fit with classes named before fit.
"""

import argparse
import json
import time

import numpy as np

from worlds import RESULTS, WORLDS, load_world

from candle_sklearn import CandleClassifier
from candle_sklearn._zero_shot import zero_shot_scores
from candle_sklearn._calibration import (best_bias, choose_calibration, joint_hm_by_bias,
                                         plateau_bias, rate_matched_bias)
from candle_sklearn._calibration import CALIBRATION_TOLERANCE
from candle_sklearn._calibration import few_images_median as _few_images_median
from candle_sklearn._calibration import held_back as _held_back
from candle_sklearn._calibration import median_images as _median_images
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy, best_new_class_bias

TOLERANCES = (0.0, 0.02, 0.05)
SCALED_RULE = "K=3 w chosen, largest within 2%, bias x max(1, 0.75 / fraction of images kept)"
DEFAULT_RULE = "default: K=3 w chosen, largest within 2%, zero-shot below 4 images per class"


def _rules(draws, fallback):
    """{rule name: (zero-shot weight, bias)} from the held-out draws; every rule takes
    the classifier's ``fallback`` when there are none (nothing to hold back)."""
    rules = {}
    for k in (1, 3):
        use = draws[:k]

        def add(name, rule):
            rules[f"K={k} {name}"] = rule() if use else fallback

        add("0.1.0: w=0, middle of optimum, per image", lambda: (0.0, np.mean(
            [best_bias(d["scores"], d["y"], d["new_col"], d["new_row"])[0] for d in use])))
        add("w=0, largest within 2%, per image", lambda: (0.0, np.mean(
            [plateau_bias(d["scores"], d["y"], d["new_col"], d["new_row"], 0.02)[0]
             for d in use])))
        for tol in TOLERANCES:
            add(f"w=0, largest within {tol:.0%}, per class", lambda: (0.0, np.mean(
                [plateau_bias(d["scores"], d["y"], d["new_col"], d["new_row"], tol,
                              d["weights"])[0] for d in use])))
            add(f"w chosen, largest within {tol:.0%}, per class",
                lambda: choose_calibration(use, tol)[:2])
            add(f"w chosen (merit at the bias used), largest within {tol:.0%}, per class",
                lambda: choose_calibration(use, tol, merit="used")[:2])
        if k == 3:
            # the draws scored among the kept and held-out classes only, as the test is
            # among base and new classes (the real new classes add new-side columns)
            for tol, name in ((None, "middle of optimum"), (0.0, "largest within 0%"),
                              (0.02, "largest within 2%")):
                add(f"w chosen, {name}, per class, real new columns left out",
                    lambda: choose_calibration([_without_real_new(d) for d in use], tol)[:2])
                if tol is None:  # the other tolerances have their rows above
                    add(f"w chosen, {name}, per class, all columns",
                        lambda: choose_calibration(use, tol)[:2])
            # zero-shot CLIP unless the draws show the blend better beyond their spread
            for n_se in (1, 2):
                add(f"w chosen, largest within 2%, per class, zero-shot unless > {n_se} SE",
                    lambda: _unless_significant(use, 0.02, n_se))
    return rules


def _without_real_new(draw):
    """The draw restricted to the columns of the refit's base and held-out classes: the
    classes that are new in the fitted model too (new columns without a row) dropped."""
    real_new = draw["new_col"].copy()
    real_new[np.unique(draw["y"][draw["new_row"]])] = False
    keep = np.flatnonzero(~real_new)
    column = np.full(len(real_new), -1)
    column[keep] = np.arange(len(keep))
    return dict(draw, scores=draw["scores"][:, keep], zero_shot=draw["zero_shot"][:, keep],
                new_col=draw["new_col"][keep], y=column[draw["y"]])


def _unless_significant(draws, tolerance, n_se):
    """The default rule's (weight, bias), replaced by zero-shot CLIP's (1, 0) unless the
    blend's held-out joint HM beats zero-shot CLIP's by more than ``n_se`` standard errors
    of the per-draw differences."""
    w, bias, _ = choose_calibration(draws, tolerance)
    if w == 1:
        return 1.0, 0.0
    diff = [joint_hm_by_bias((1 - w) * d["scores"] + w * d["zero_shot"], d["y"], d["new_col"],
                             d["new_row"], [bias], d["weights"])[0]
            - joint_hm_by_bias(d["zero_shot"], d["y"], d["new_col"], d["new_row"], [0.0],
                               d["weights"])[0] for d in draws]
    se = np.std(diff, ddof=1) / np.sqrt(len(diff))
    return (w, bias) if np.mean(diff) > n_se * se else (1.0, 0.0)


def one_world(world, seed, params):
    data = load_world(world, seed)
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, random_state=seed, device="cpu", **params)
    start = time.process_time()
    clf.fit(data.X_train, data.y_train)
    fit_s = time.process_time() - start
    y_idx = np.searchsorted(clf.classes_, data.y_train)
    start = time.process_time()
    draws = clf.set_params(calibration_repeats=3)._calibration_draws(  # at the fit's lr
        data.X_train, y_idx, clf.classes_, clf.class_counts_, clf.text_features_, seed)
    refit_s = time.process_time() - start
    scores = clf.decision_function(data.X_test, calibrated=False)
    zs = zero_shot_scores(data.X_test, data.text_features)
    y_test = np.searchsorted(clf.classes_, data.y_test)
    new_col = clf.class_counts_ == 0

    def joint(bias, w=0.0):
        return float(joint_hm_by_bias((1 - w) * scores + w * zs, y_test, new_col,
                                      new_col[y_test], [bias])[0])

    # no refit: as ready to answer "new" on the training images as zero-shot CLIP is
    zs_train = zero_shot_scores(data.X_train, data.text_features)
    rate = float(np.mean(zs_train[:, new_col].max(1) > zs_train[:, ~new_col].max(1)))
    fallback = (1.0, 0.0)  # zero-shot CLIP itself, as the classifier falls back
    out = {rule: joint(b, w) for rule, (w, b) in _rules(draws, fallback).items()}
    counts = clf.class_counts_
    if draws:
        w, b, _ = choose_calibration(draws, CALIBRATION_TOLERANCE)
        # the package's rule: zero-shot CLIP below a median of four images per class
        out[DEFAULT_RULE] = (joint(0.0, 1.0) if _few_images_median(counts) is not None
                             else joint(b, w))
        # the alternative: keep the refits, but scale their bias by how much of its
        # images a held-back class keeps (0.75 / kept fraction, at least 1: x1.5 at two)
        kept = np.concatenate([counts[np.unique(d["y"][~d["new_row"]])] for d in draws])
        kept = (kept - _held_back(kept)) / kept
        out[SCALED_RULE] = joint(b * (1.0 if w == 1 else max(1.0, np.mean(0.75 / kept))), w)
    else:
        out[DEFAULT_RULE] = out[SCALED_RULE] = joint(0.0, 1.0)
    # the head's own bias (w = 0): chosen on the draws (middle of the optimum) against
    # the best on the test set; their ratio shows how far refits stand for the model
    out["_median_images"] = _median_images(counts) or 0.0
    if draws:
        out["_bias_draws"] = float(np.mean([best_bias(d["scores"], d["y"], d["new_col"],
                                                      d["new_row"], d["weights"])[0]
                                            for d in draws]))
        out["_bias_test"] = best_bias(scores, y_test, new_col, new_col[y_test])[0]
    out["zero-shot rate on training images (no refit)"] = joint(rate_matched_bias(
        clf.decision_function(data.X_train, calibrated=False), new_col, rate))
    out["hindsight optimum, w and bias"] = max(
        best_bias((1 - w) * scores + w * zs, y_test, new_col, new_col[y_test])[1]
        for w in (0.0, 0.25, 0.5, 0.75, 1.0))
    out["no bias"] = joint(0.0)
    out["hindsight optimum"] = joint(best_new_class_bias(clf, data.X_test, data.y_test))
    out["zero-shot CLIP"] = base_new_accuracy(data.y_test, zs, data.classes,
                                              data.new_classes, protocol="joint")["hm"]
    out["_refit_over_fit"] = refit_s / fit_s
    return out


def study(worlds, seeds, params, out="calibration.json"):
    rows = {}
    for world in worlds:
        per_seed = [one_world(world, s, params) for s in seeds]
        keys = [k for k in per_seed[0] if all(k in p for p in per_seed)]
        rows[world] = {k: float(np.mean([p[k] for p in per_seed])) for k in keys}
        worst = {k: min(p[k] - p["zero-shot CLIP"] for p in per_seed) for k in keys}
        rows[world]["_worst_vs_zero_shot"] = worst
        rows[world]["_per_seed"] = dict(zip(map(str, seeds), per_seed))
        print(f"{world}: optimum {rows[world]['hindsight optimum']:.3f}, zero-shot "
              f"{rows[world]['zero-shot CLIP']:.3f}, no bias {rows[world]['no bias']:.3f}, "
              f"refits / fit {rows[world]['_refit_over_fit']:.2f}", flush=True)
    rules = [k for k in rows[worlds[0]] if not k.startswith("_")]
    print(f"\nmean over {len(worlds)} worlds x {len(seeds)} seeds: joint HM, regret against "
          "the hindsight optimum, and the worst margin over zero-shot CLIP (any world, "
          "any seed; negative: a loss to zero-shot)\n")
    print("| rule | joint HM | regret | worst vs zero-shot | worlds lost to zero-shot | "
          "fits lost |")
    print("|---|---|---|---|---|---|")
    for rule in rules:
        hm = np.mean([rows[w][rule] for w in worlds])
        regret = np.mean([rows[w]["hindsight optimum"] - rows[w][rule] for w in worlds])
        worst = min(rows[w]["_worst_vs_zero_shot"][rule] for w in worlds)
        lost = sum(rows[w]["_worst_vs_zero_shot"][rule] < 0 for w in worlds)
        where = min(worlds, key=lambda w: rows[w]["_worst_vs_zero_shot"][rule])
        fits = sum(p[rule] < p["zero-shot CLIP"] for w in worlds
                   for p in rows[w]["_per_seed"].values())
        print(f"| {rule} | {hm:.3f} | {regret:.3f} | {worst:+.3f} ({where}) | {lost} | "
              f"{fits} |")
    print("\nthe head's bias (w = 0) chosen on the draws over the best one on the test set, "
          "by the median base class's images (mean over seeds)\n")
    print("| world | median images | draws' bias / test's best bias |")
    print("|---|---|---|")
    for w in sorted(worlds, key=lambda w: rows[w]["_median_images"]):
        ratios = [p["_bias_draws"] / p["_bias_test"] for p in rows[w]["_per_seed"].values()
                  if "_bias_draws" in p and p["_bias_test"] != 0]
        if ratios:
            print(f"| {w} | {rows[w]['_median_images']:g} | {np.mean(ratios):.2f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / out).write_text(json.dumps(rows, indent=1))
    print(f"\nrefits (3 draws) / plain fit, CPU time: "
          f"{np.mean([rows[w]['_refit_over_fit'] for w in worlds]):.2f}")
    return rows


def add_classes(seeds):
    """New-class accuracy (among the new classes) on classes added after fit, against the
    same classes named before fit; 50 base + 50 new synthetic classes, D=512."""
    for seed in seeds:
        data = make_clip_like_features(n_base=50, n_new=50, dim=512, random_state=seed)
        late = data.new_classes[1::2]
        early = np.setdiff1d(data.classes, late)
        named = CandleClassifier(classes=data.classes, text_features=data.text_features,
                                 random_state=seed).fit(data.X_train, data.y_train)
        added = CandleClassifier(classes=early, text_features=data.text_features[early],
                                 random_state=seed).fit(data.X_train, data.y_train)
        start = time.perf_counter()
        added.add_classes(late, text_features=data.text_features[late])
        t_add = time.perf_counter() - start
        on_late = np.isin(data.y_test, late)
        for name, clf in (("named before fit", named), ("add_classes after fit", added)):
            proba = clf.predict_proba(data.X_test[on_late])
            ref = base_new_accuracy(data.y_test[on_late], proba, clf.classes_,
                                    data.new_classes)
            jnt = base_new_accuracy(data.y_test, clf.predict_proba(data.X_test),
                                    clf.classes_, data.new_classes, protocol="joint")
            print(f"seed {seed} {name:<24} new acc (added classes) {ref['new']:.3f}  "
                  f"joint HM (all) {jnt['hm']:.3f}")
        print(f"seed {seed} add_classes: {1e3 * t_add:.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["study", "add-classes"])
    parser.add_argument("--worlds", nargs="+",
                        default=[w for w in WORLDS if w != "classes-1000"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="calibration.json",
                        help="study: the results file, in benchmarks/results")
    args = parser.parse_args()
    if args.command == "study":
        study(args.worlds, args.seeds, {}, args.out)
    else:
        add_classes(args.seeds)


if __name__ == "__main__":
    main()
