"""The offline demo: Candle against zero-shot and linear baselines on long-tailed data
with new classes, printed as a table."""

import time

import numpy as np

from ._baselines import LinearProbe, nearest_class_mean_scores, zero_shot_scores
from .classifier import CandleClassifier
from .datasets import make_clip_like_features
from .metrics import base_new_accuracy, shot_accuracy

COLUMNS = ("base", "new", "hm", "joint_hm", "many", "medium", "few", "seconds")


def evaluate(scores, data, classes, counts, raw_scores=None):
    """Every column of the table (but time). ``raw_scores``: uncalibrated scores for the
    reference protocol, when the method calibrates new classes for joint prediction."""
    ref = base_new_accuracy(data.y_test, scores if raw_scores is None else raw_scores,
                            classes, data.new_classes)
    joint = base_new_accuracy(data.y_test, scores, classes, data.new_classes,
                              protocol="joint")
    ref_scores = scores if raw_scores is None else raw_scores
    shots = shot_accuracy(data.y_test, classes[np.argmax(ref_scores, axis=1)], classes, counts)
    if not np.isfinite(scores[:, np.isin(classes, data.new_classes)]).any():
        ref["new"] = ref["hm"] = float("nan")  # the method cannot score new classes
    return {**ref, "joint_hm": joint["hm"], **shots}


def compare_methods(data, candle_params=None):
    """Rows of results for zero-shot, nearest class mean, linear probes and Candle."""
    classes, counts = data.classes, data.train_counts
    rows = {}

    def timed(name, make_scores):
        start = time.perf_counter()
        scores = make_scores()
        raw = None
        if isinstance(scores, tuple):
            scores, raw = scores
        rows[name] = {**evaluate(scores, data, classes, counts, raw),
                      "seconds": time.perf_counter() - start}

    timed("zero-shot", lambda: zero_shot_scores(data.X_test, data.text_features))
    timed("nearest class mean", lambda: nearest_class_mean_scores(
        data.X_train, data.y_train, data.X_test, classes))
    probe = {}
    timed("linear probe", lambda: probe.setdefault("lr", LinearProbe().fit(
        data.X_train, data.y_train)).scores(data.X_test, classes))
    timed("linear probe + logit adj.", lambda: probe["lr"].scores(data.X_test, classes, 1.0))
    clf = CandleClassifier(classes=classes, text_features=data.text_features,
                           **(candle_params or {}))
    def candle():
        clf.fit(data.X_train, data.y_train)
        return (clf.predict_proba(data.X_test),
                clf.predict_proba(data.X_test, calibrated=False))

    timed("Candle", candle)
    return rows


def format_table(rows):
    head = f"{'method':<27}" + "".join(f"{c:>9}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = "".join("       --" if np.isnan(r[c]) else f"{r[c]:9.3f}" for c in COLUMNS)
        lines.append(f"{name:<27}{cells}")
    return "\n".join(lines)


def main(seed=0, verbose=1):
    data = make_clip_like_features(n_base=50, n_new=50, dim=512, random_state=seed)
    print(f"Synthetic CLIP-like features, seed {seed}: {len(data.base_classes)} base classes "
          f"({len(data.y_train)} long-tailed training images, imbalance 0.02), "
          f"{len(data.new_classes)} new classes known by name only, "
          f"{len(data.y_test)} test images.")
    rows = compare_methods(data, {"random_state": seed, "verbose": verbose})
    print()
    print(format_table(rows))
    print("\nbase/new/hm: reference protocol (new-class images scored among new classes);"
          "\njoint_hm: every image among all classes; many/medium/few: base classes with"
          "\n>100, 20-100, <20 training images; '--': the method cannot score new classes.")
    return rows
