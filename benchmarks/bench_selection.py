"""Selecting the loss margin `tau` by cross-validation that sees new classes, over the
family of worlds: what the selected `tau` gains over the default, and what it can lose.

    .venv/bin/python benchmarks/bench_selection.py [--worlds ...] [--seeds 0 1]
                                                   [--taus 0 0.5 1 2]

Per world and seed: `GridSearchCV(CandleClassifier(...), {"tau": taus},
cv=BaseNewSplit(n_splits=3), scoring=make_base_new_scorer("hm"))` on the training set
only (its folds hold out whole base classes, which become the fold's new classes), then
the reference-protocol HM on the world's test set of (a) the refitted best `tau`, (b)
the default `tau`, (c) the best `tau` in hindsight (each `tau` fitted on the whole
training set and scored on the test set). Printed per world: the selected `tau`, the
three HMs and the gain of (a) over (b); at the end the mean gain, the worst loss, and
the seed-to-seed spread of the default's HM as the yardstick for noise.
"""

import argparse
import warnings

import numpy as np
from sklearn.model_selection import GridSearchCV

from worlds import LARGE, WORLDS, load_world

from candle_sklearn import CandleClassifier
from candle_sklearn.metrics import base_new_accuracy, make_base_new_scorer
from candle_sklearn.model_selection import BaseNewSplit

DEFAULT_TAU = CandleClassifier().tau


def test_hm(clf, data):
    scores = clf.predict_proba(data.X_test, calibrated=False)
    return base_new_accuracy(data.y_test, scores, clf.classes_, clf.new_classes_)["hm"]


def one(world, seed, taus):
    data = load_world(world, seed)
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, random_state=seed, device="cpu")
    search = GridSearchCV(clf, {"tau": taus}, scoring=make_base_new_scorer("hm"),
                          cv=BaseNewSplit(n_splits=3, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny folds: one-image classes
        search.fit(data.X_train, data.y_train)
    per_tau = {}
    for tau in taus:
        fitted = (search.best_estimator_ if tau == search.best_params_["tau"]
                  else clf.set_params(tau=tau).fit(data.X_train, data.y_train))
        per_tau[tau] = test_hm(fitted, data)
    best = max(per_tau, key=per_tau.get)
    return dict(selected=search.best_params_["tau"], hm_selected=per_tau[search.best_params_
                                                                          ["tau"]],
                hm_default=per_tau[DEFAULT_TAU], hm_hindsight=per_tau[best], hindsight=best)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=[w for w in WORLDS if w not in LARGE])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    args = parser.parse_args()
    if DEFAULT_TAU not in args.taus:
        args.taus.append(DEFAULT_TAU)
    print("| world | seed | selected tau | HM selected | HM default tau | gain | "
          "hindsight tau | HM hindsight |")
    print("|---|---|---|---|---|---|---|---|")
    gains, spreads = [], []
    for world in args.worlds:
        defaults = []
        for seed in args.seeds:
            r = one(world, seed, args.taus)
            gains.append(r["hm_selected"] - r["hm_default"])
            defaults.append(r["hm_default"])
            print(f"| {world} | {seed} | {r['selected']:g} | {r['hm_selected']:.3f} | "
                  f"{r['hm_default']:.3f} | {gains[-1]:+.3f} | {r['hindsight']:g} | "
                  f"{r['hm_hindsight']:.3f} |", flush=True)
        spreads.append(np.std(defaults))
    gains = np.array(gains)
    print(f"\nmean gain of the selected tau over tau={DEFAULT_TAU:g}: {gains.mean():+.4f}; "
          f"wins {int((gains > 0).sum())}, ties {int((gains == 0).sum())}, losses "
          f"{int((gains < 0).sum())} of {len(gains)}; worst loss {gains.min():+.3f}; "
          f"mean seed-to-seed std of the default's HM (noise) {np.mean(spreads):.3f}")


if __name__ == "__main__":
    main()
