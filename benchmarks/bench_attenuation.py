"""The attenuation correction (decision 0024): each base class's visual logits divided by
its prototype's expected attenuation from noise, with |mu|^2 estimated per class or pooled
over the classes (the default), against no correction. One fit per world and seed (the
correction changes prediction only, so the three share it); uncalibrated HM of the
reference protocol.

    .venv/bin/python benchmarks/bench_attenuation.py WORLD:SEED [WORLD:SEED ...]

Rows go to benchmarks/results/attenuation_rules.jsonl. (results/attenuation.jsonl holds the
first measurement, decision 0022's Leads: per-class |mu_c|^2, in absolute and relative form.)
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import run_world_seeds  # noqa: E402
from worlds import load_world  # noqa: E402

from candle_sklearn import CandleClassifier  # noqa: E402
from candle_sklearn._attenuation import (MAX_ATTENUATION, attenuation_gain,  # noqa: E402
                                         prototype_noise)
from candle_sklearn.classifier import _for_head  # noqa: E402
from candle_sklearn.metrics import base_new_accuracy  # noqa: E402


def per_class_gain(protos, W_v, X, y):
    """The rule with |mu_c|^2 = |p_c W_v|^2 - tr(S) / n_c estimated for each class alone."""
    noise = prototype_noise(protos, W_v, X, y)
    if noise is None:  # no class of two images: no noise to correct for
        return torch.ones(len(protos))
    spread, p2 = noise
    a = (p2 / (p2 - spread).clamp_min(p2 / MAX_ATTENUATION ** 2)).sqrt()
    return (a / a.min()).float()


def study(world, seed):
    d = load_world(world, seed)
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                           random_state=seed, device="cpu", new_class_bias=0.0,
                           attenuation_correction=False).fit(d.X_train, d.y_train)
    head, order = clf.head_, clf.head_order_
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    X = torch.as_tensor(_for_head(np.asarray(d.X_train), clf.feature_scale_))
    y = torch.as_tensor(rank[np.searchsorted(clf.classes_, d.y_train)])
    with torch.no_grad():
        W = head.W_v.detach()
        gains = {"off": torch.ones(len(head.visual_gain)),
                 "per_class": per_class_gain(head.visual_prototypes, W, X, y),
                 "pooled": attenuation_gain(head.visual_prototypes, W, X, y)}
    row = {"world": world, "seed": seed, "gain_max": float(gains["pooled"].max())}
    for name, gain in gains.items():
        head.set_visual_gain(gain)
        scores = clf.decision_function(d.X_test, calibrated=False)
        row[name] = base_new_accuracy(d.y_test, scores, clf.classes_, d.new_classes)["hm"]
    return row


def main():
    run_world_seeds("attenuation_rules", study, sys.argv[1:])


if __name__ == "__main__":
    main()
