"""A lead for the tail classes (decision 0022, Leads): the visual cosine of a class of few
images is attenuated by its prototype's noise. Each class's visual logit is divided by its
expected attenuation after the default fit (no refits: uncalibrated, reference-protocol HM),
and scored against the fit as it is.

    .venv/bin/python benchmarks/bench_attenuation.py WORLD:SEED [WORLD:SEED ...]

a_c = sqrt((|mu_c|^2 + tr(S) / n_c) / |mu_c|^2) in the projected space: mu_c the class's
projected prototype (|mu_c|^2 estimated as |p_c W_v|^2 - tr(S) / n_c), S the projected
within-class covariance of the training images. "deatt" scales the visual logits by a_c,
"deatt_rel" by a_c / min(a). Rows go to benchmarks/results/attenuation.jsonl.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from harness import run_world_seeds  # noqa: E402
from worlds import load_world  # noqa: E402

from candle_sklearn import CandleClassifier  # noqa: E402
from candle_sklearn.classifier import _for_head, _in_class_order  # noqa: E402
from candle_sklearn.metrics import base_new_accuracy  # noqa: E402


def attenuation(head, X, y):
    """a_c (n_base,) of the fitted ``head`` from its head-order training rows."""
    n_base = head.visual_prototypes.shape[0]
    counts = torch.bincount(y, minlength=n_base)[:n_base].double()
    U = (X @ head.W_v).double()
    P = (head.visual_prototypes @ head.W_v).double()
    noise = ((U - P[y]) ** 2).sum() / max(len(U) - n_base, 1)  # tr(S)
    mu2 = (P ** 2).sum(1) - noise / counts
    return ((mu2 + noise / counts) / mu2.clamp(min=1e-12)).clamp(max=1e6).sqrt()


def study(world, seed):
    d = load_world(world, seed)
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                           random_state=seed, device="cpu",
                           new_class_bias=0.0).fit(d.X_train, d.y_train)
    head, order = clf.head_, clf.head_order_
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    X = torch.as_tensor(_for_head(np.asarray(d.X_train), clf.feature_scale_))
    y = torch.as_tensor(rank[np.searchsorted(clf.classes_, d.y_train)])
    with torch.no_grad():
        a = attenuation(head, X, y).float()
        ctx = head.class_context()
        U_f = head.fusion.fuse_images(
            torch.as_tensor(_for_head(np.asarray(d.X_test), clf.feature_scale_)) @ head.W_v,
            ctx)
    P_f, T_f = head._split_classes(ctx.fused)
    row = {"world": world, "seed": seed, "a_min": float(a.min()), "a_max": float(a.max())}
    for name, scale in (("default", torch.ones_like(a)), ("deatt", a), ("deatt_rel", a / a.min())):
        per_class = torch.ones(head.n_classes)
        per_class[:len(a)] = scale
        visual = head.inference_visual_scale * F.normalize(P_f, dim=-1) * per_class[:, None]
        matrix = head.logit_scale * (visual + F.normalize(T_f, dim=-1))
        scores = _in_class_order(F.normalize(U_f, dim=-1) @ matrix.T, order)
        row[name] = base_new_accuracy(d.y_test, scores, clf.classes_, d.new_classes)["hm"]
    return row


def main():
    run_world_seeds("attenuation", study, sys.argv[1:])


if __name__ == "__main__":
    main()
