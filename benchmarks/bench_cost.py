"""What the default CandleClassifier costs, against LogisticRegression and the reference
recipe, on every world of the family, in one run.

    .venv/bin/python benchmarks/bench_cost.py [--worlds ...] [--seed 0] [--device cpu]

Per world (benchmarks/worlds.py, plus "10k-x-100": 10,000 balanced samples of 100
classes, D = 512, no new class): fit + predict of

- ``LogisticRegression()`` (scikit-learn's defaults) on the same features;
- the default ``CandleClassifier`` (``new_class_bias="auto"``, its refits included);
- the reference recipe (``candle_sklearn.REFERENCE_RECIPE``: SGD, 50 epochs of batch 128,
  warm-up, dropout 0.1, the batch context), once with the same automatic calibration and
  once without any (``new_class_bias=0``, as the official code trains);
- the strongest peer, ProLIP's regularised linear adapter at its defaults (its
  calibration included).

Times are CPU seconds of one thread (torch and BLAS pinned to one thread, process time):
a cost that other jobs on a shared machine do not inflate. With ``--device cuda`` the
Candle fits run on the GPU and every time is wall-clock seconds (LogisticRegression on
the CPU with all its threads, as a user would run it). A small fit before the first
timed one pays the process's one-time costs (importing torch._dynamo at the first
optimizer, the CUDA context). Where the reference recipe
would take more than 1,500 steps it is timed at 1 and 2 epochs and extrapolated
linearly to 50 (every epoch costs the same; the fit's fixed costs are the intercept).
Printed: the ratios default / LogisticRegression (target at most 20 in the paper's
long-tailed regime and at 10k x 100), default / reference (target at most 0.5 on every
world) and default / linear adapter (target at most 3), and the reference-protocol HM of
each. Rows go to benchmarks/results/cost.jsonl.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from harness import record  # noqa: E402
from worlds import LARGE, PEER_WORLDS, WORLDS, load_world  # noqa: E402

from candle_sklearn import REFERENCE_RECIPE, CandleClassifier  # noqa: E402
from candle_sklearn.baselines import LinearAdapterClassifier  # noqa: E402
from candle_sklearn.datasets import make_clip_like_features  # noqa: E402
from candle_sklearn.metrics import base_new_accuracy  # noqa: E402

REFERENCE = REFERENCE_RECIPE
# reference fits longer than this many optimizer steps are timed at 1 and 2 epochs and
# extrapolated
FULL_REFERENCE_STEPS = 1_500


def ten_k_by_100(seed):
    return make_clip_like_features(n_base=100, n_new=0, dim=512, imbalance_ratio=1.0,
                                   max_per_class=100, n_test_per_class=10,
                                   random_state=seed)


DEVICE = "cpu"  # set by --device


def seconds(fn):
    """CPU seconds of fn() on the CPU; wall seconds where Candle runs on a GPU (the
    results come back as NumPy arrays, so the GPU's work is finished when fn returns)."""
    clock = time.process_time if DEVICE == "cpu" else time.perf_counter
    start = clock()
    out = fn()
    return out, clock() - start


def fit_predict(data, **params):
    """Seconds of fit + predict_proba on the test set, and the reference-protocol HM."""
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           random_state=0, device=DEVICE, **params)
    scores, t = seconds(lambda: clf.fit(data.X_train, data.y_train).predict_proba(
        data.X_test, calibrated=False))
    hm = (base_new_accuracy(data.y_test, scores, clf.classes_, clf.new_classes_)["hm"]
          if len(clf.new_classes_) else float(np.mean(clf.classes_[scores.argmax(1)]
                                                      == data.y_test)))
    return t, hm


def reference(data, full_steps=FULL_REFERENCE_STEPS, **params):
    """(seconds, HM or NaN, how it was timed) of the 50-epoch reference recipe."""
    steps = 50 * -(-len(data.y_train) // 128)
    if steps <= full_steps:
        t, hm = fit_predict(data, **REFERENCE, **params)
        return t, hm, "full"
    t1, _ = fit_predict(data, **{**REFERENCE, "max_epochs": 1}, **params)
    t2, _ = fit_predict(data, **{**REFERENCE, "max_epochs": 2}, **params)
    return t1 + (t2 - t1) * 49, float("nan"), "1 and 2 epochs, extrapolated"


def one_world(name, seed, full_steps=FULL_REFERENCE_STEPS):
    data = ten_k_by_100(seed) if name == "10k-x-100" else load_world(name, seed)
    _, t_lr = seconds(lambda: LogisticRegression().fit(data.X_train, data.y_train)
                          .predict_proba(data.X_test))
    t_default, hm_default = fit_predict(data)
    t_ref, hm_ref, how = reference(data, full_steps)
    t_ref0, _, _ = reference(data, full_steps, new_class_bias=0.0)
    adapter = LinearAdapterClassifier(classes=data.classes, text_features=data.text_features,
                                      random_state=0)
    _, t_adapter = seconds(lambda: adapter.fit(data.X_train, data.y_train).predict_proba(
        data.X_test))
    return dict(world=name, n=len(data.y_train), classes=len(data.classes), lr=t_lr,
                default=t_default, ref=t_ref, ref_plain=t_ref0, adapter=t_adapter,
                hm_default=hm_default, hm_ref=hm_ref, how=how, device=DEVICE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=[*(w for w in WORLDS if w not in LARGE),
                                                        *PEER_WORLDS, "10k-x-100"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-reference-steps", type=int, default=FULL_REFERENCE_STEPS,
                        help="time longer reference fits at 1 and 2 epochs and extrapolate")
    parser.add_argument("--device", default="cpu", help="where Candle trains: cpu or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        torch.set_num_threads(1)
        print("CPU seconds, one thread; ", end="")
    else:
        print(f"wall seconds, Candle on {torch.cuda.get_device_name()}, LogisticRegression "
              f"on the CPU's {torch.get_num_threads()} threads; ", end="")
    print("default = CandleClassifier() with its calibration; "
          "ref = the reference recipe with the same calibration, ref0 = without")
    head = ["world", "n", "C", "LogReg s", "default s", "ref s", "ref0 s", "adapter s",
            "default/LogReg", "default/ref", "default/ref0", "default/adapter", "HM default",
            "HM ref", "reference timed"]
    print(" | ".join(head))
    # once per process, not per fit: torch's first optimizer imports torch._dynamo (4 s
    # of CPU here), CUDA creates its context; paid before any timed fit, whichever is first
    fit_predict(make_clip_like_features(n_base=5, n_new=5, dim=64, random_state=0))
    with threadpool_limits(1 if DEVICE == "cpu" else None):
        for name in args.worlds:
            r = one_world(name, args.seed, args.full_reference_steps)
            record("cost", r)
            print(" | ".join([
                r["world"], f"{r['n']:,}", str(r["classes"]), f"{r['lr']:.2f}",
                f"{r['default']:.1f}", f"{r['ref']:.1f}", f"{r['ref_plain']:.1f}",
                f"{r['adapter']:.1f}", f"{r['default'] / r['lr']:.1f}",
                f"{r['default'] / r['ref']:.2f}", f"{r['default'] / r['ref_plain']:.2f}",
                f"{r['default'] / r['adapter']:.2f}", f"{r['hm_default']:.3f}",
                f"{r['hm_ref']:.3f}", r["how"]]), flush=True)


if __name__ == "__main__":
    main()
