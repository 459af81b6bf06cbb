"""Joint prediction over base and new classes: no calibration, new_class_bias="auto", and
the hindsight-optimal bias (an upper bound chosen on the test labels); add_classes
against naming the classes before fit.

    .venv/bin/python benchmarks/bench_calibration.py [--seeds 0 1 2]

Synthetic CLIP-like features, 50 base + 50 new classes, D=512. Ratios are measured in
the same run: auto / optimum joint HM, and auto fit time / plain fit time.
"""

import argparse
import time

import numpy as np

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy, best_new_class_bias


def joint(scores, data, classes):
    return base_new_accuracy(data.y_test, scores, classes, data.new_classes, protocol="joint")


def reference_hm(scores, data, classes):
    return base_new_accuracy(data.y_test, scores, classes, data.new_classes)["hm"]


def one_seed(seed):
    data = make_clip_like_features(n_base=50, n_new=50, dim=512, random_state=seed)
    rows = {}
    fits = {}
    for name, bias in (("no calibration", 0.0), ("auto", "auto")):
        clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                               new_class_bias=bias, random_state=seed)
        start = time.perf_counter()
        clf.fit(data.X_train, data.y_train)
        fits[name] = (clf, time.perf_counter() - start)
        scores = clf.decision_function(data.X_test)
        rows[name] = {**joint(scores, data, clf.classes_), "bias": clf.new_class_bias_,
                      "ref_hm": reference_hm(scores, data, clf.classes_),
                      "seconds": fits[name][1]}
    plain = fits["no calibration"][0]
    bias = best_new_class_bias(plain, data.X_test, data.y_test)  # chosen on test labels
    scores = plain.decision_function(data.X_test)
    scores[:, plain.class_counts_ == 0] += bias
    rows["hindsight optimum"] = {**joint(scores, data, plain.classes_), "bias": bias,
                                 "ref_hm": reference_hm(scores, data, plain.classes_),
                                 "seconds": float("nan")}
    return rows, add_vs_refit(data, seed)


def add_vs_refit(data, seed):
    """New-class accuracy (among the new classes) on the classes added after fit,
    against the same classes named before fit."""
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
    out = {}
    for name, clf in (("named before fit", named), ("add_classes after fit", added)):
        proba = clf.predict_proba(data.X_test[on_late])
        ref = base_new_accuracy(data.y_test[on_late], proba, clf.classes_, data.new_classes)
        jnt = base_new_accuracy(data.y_test, clf.predict_proba(data.X_test), clf.classes_,
                                data.new_classes, protocol="joint")
        out[name] = {"late_new_acc": ref["new"], "joint_hm_all": jnt["hm"]}
    out["add_classes after fit"]["seconds"] = t_add
    return out


def main(seeds):
    per_seed = [one_seed(s) for s in seeds]
    names = per_seed[0][0].keys()
    mean = {n: {k: float(np.mean([p[0][n][k] for p in per_seed])) for k in
                ("base", "new", "hm", "ref_hm", "bias", "seconds")} for n in names}
    print(f"joint protocol, mean over seeds {list(seeds)}: 50 base + 50 new classes, D=512\n")
    print(f"{'bias':<20}{'value':>7}{'base':>7}{'new':>7}{'HM':>7}{'ref HM':>8}{'fit s':>7}")
    for n, r in mean.items():
        print(f"{n:<20}{r['bias']:7.2f}{r['base']:7.3f}{r['new']:7.3f}{r['hm']:7.3f}"
              f"{r['ref_hm']:8.3f}{r['seconds']:7.1f}")
    auto, opt, plain = mean["auto"], mean["hindsight optimum"], mean["no calibration"]
    ratios = [p[0]["auto"]["hm"] / p[0]["hindsight optimum"]["hm"] for p in per_seed]
    print(f"\nauto / optimum joint HM: {auto['hm'] / opt['hm']:.3f} "
          f"(per seed: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"auto / plain fit time: {auto['seconds'] / plain['seconds']:.2f}")
    gaps = [p[0]["auto"]["bias"] - p[0]["hindsight optimum"]["bias"] for p in per_seed]
    print("auto bias - optimal bias, per seed: " + ", ".join(f"{g:+.2f}" for g in gaps))

    add = {n: {k: float(np.mean([p[1][n][k] for p in per_seed])) for k in
               ("late_new_acc", "joint_hm_all")} for n in per_seed[0][1]}
    t_add = np.mean([p[1]["add_classes after fit"]["seconds"] for p in per_seed])
    print("\n25 of the 50 new classes named before fit, the other 25 added after fit "
          "(accuracy on the added classes' images among all new classes):")
    for n, r in add.items():
        print(f"{n:<24} new acc {r['late_new_acc']:.3f}   joint HM (all) "
              f"{r['joint_hm_all']:.3f}")
    print(f"add_classes takes {t_add * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    main(parser.parse_args().seeds)
