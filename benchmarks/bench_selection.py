"""Selecting the loss margin `tau` by cross-validation that sees new classes, over the
family of worlds: what the selected `tau` gains over the default, and what it can lose.

    .venv/bin/python benchmarks/bench_selection.py [--worlds ...] [--seeds 0 1]
                                                   [--taus 0 0.5 1 2] [--splits 3]

Per world and seed: `GridSearchCV(CandleClassifier(...), {"tau": taus},
cv=BaseNewSplit(n_splits=3), scoring=make_base_new_scorer("hm"))` on the training set
only (its folds hold out whole base classes, which become the fold's new classes), then
the reference-protocol HM on the world's test set of (a) the `tau` of the best mean
score (GridSearchCV's plain refit), (a') the `tau` that `refit=prefer_default({"tau":
1.0})` picks from the same search (the best only where it beats the default by more
than two standard errors of the fold differences; other n_se in the summary), (b) the
default `tau`, (c) the best
`tau` in hindsight (each `tau` fitted on the whole training set and scored on the test
set). Printed per world: the selected `tau`s, the HMs and the gains of (a) and (a')
over (b); at the end the mean gains, the worst losses, and the seed-to-seed spread of
the default's HM as the yardstick for noise.
"""

import argparse
import warnings

import numpy as np
from sklearn.model_selection import GridSearchCV

from worlds import LARGE, WORLDS, load_world

from candle_sklearn import CandleClassifier
from candle_sklearn.metrics import base_new_accuracy, make_base_new_scorer
from candle_sklearn.model_selection import BaseNewSplit, prefer_default

DEFAULT_TAU = CandleClassifier().tau
N_SE = (0.0, 0.5, 1.0, 2.0)  # the rules compared in the summary


def test_hm(clf, data):
    scores = clf.predict_proba(data.X_test, calibrated=False)
    return base_new_accuracy(data.y_test, scores, clf.classes_, clf.new_classes_)["hm"]


def one(world, seed, taus, n_splits=3):
    data = load_world(world, seed)
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, random_state=seed, device="cpu")
    search = GridSearchCV(clf, {"tau": taus}, scoring=make_base_new_scorer("hm"),
                          cv=BaseNewSplit(n_splits=n_splits, random_state=seed), refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny folds: one-image classes
        search.fit(data.X_train, data.y_train)
    results = search.cv_results_
    best = results["params"][int(np.argmin(results["rank_test_score"]))]["tau"]  # as refit
    safe = results["params"][prefer_default({"tau": DEFAULT_TAU})(results)]["tau"]
    per_tau = {tau: test_hm(clf.set_params(tau=tau).fit(data.X_train, data.y_train), data)
               for tau in taus}
    hindsight = max(per_tau, key=per_tau.get)
    # what other n_se would have picked, from the same search
    by_n_se = {n: per_tau[results["params"][prefer_default({"tau": DEFAULT_TAU}, n_se=n)(
        results)]["tau"]] - per_tau[DEFAULT_TAU] for n in N_SE}
    return dict(selected=best, hm_selected=per_tau[best], safe=safe, hm_safe=per_tau[safe],
                hm_default=per_tau[DEFAULT_TAU], hm_hindsight=per_tau[hindsight],
                hindsight=hindsight, by_n_se=by_n_se)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=[w for w in WORLDS if w not in LARGE])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--splits", type=int, default=3, help="BaseNewSplit's n_splits")
    args = parser.parse_args()
    if DEFAULT_TAU not in args.taus:
        args.taus.append(DEFAULT_TAU)
    print("| world | seed | best-mean tau | HM | gain | prefer_default tau | HM | gain | "
          "HM default tau | hindsight tau | HM hindsight |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    gains, safe_gains, spreads, by_n_se = [], [], [], []
    for world in args.worlds:
        defaults = []
        for seed in args.seeds:
            r = one(world, seed, args.taus, args.splits)
            gains.append(r["hm_selected"] - r["hm_default"])
            safe_gains.append(r["hm_safe"] - r["hm_default"])
            defaults.append(r["hm_default"])
            by_n_se.append(r["by_n_se"])
            print(f"| {world} | {seed} | {r['selected']:g} | {r['hm_selected']:.3f} | "
                  f"{gains[-1]:+.3f} | {r['safe']:g} | {r['hm_safe']:.3f} | "
                  f"{safe_gains[-1]:+.3f} | {r['hm_default']:.3f} | {r['hindsight']:g} | "
                  f"{r['hm_hindsight']:.3f} |", flush=True)
        spreads.append(np.std(defaults))
    print()
    for name, g in (("best mean", gains), ("prefer_default", safe_gains)):
        g = np.array(g)
        print(f"{name}: mean gain over tau={DEFAULT_TAU:g} {g.mean():+.4f}; wins "
              f"{int((g > 0).sum())}, ties {int((g == 0).sum())}, losses "
              f"{int((g < 0).sum())} of {len(g)}; worst loss {g.min():+.3f}")
    for n in N_SE:
        g = np.array([row[n] for row in by_n_se])
        print(f"prefer_default(n_se={n:g}): mean gain {g.mean():+.4f}; wins "
              f"{int((g > 0).sum())}, losses {int((g < 0).sum())}; worst loss {g.min():+.3f}")
    print(f"mean seed-to-seed std of the default's HM (noise) {np.mean(spreads):.3f}")


if __name__ == "__main__":
    main()
