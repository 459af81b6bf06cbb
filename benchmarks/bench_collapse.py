"""The evidence behind the collapse check of training (``_train.COLLAPSE_RATIO``): the
ratio of the last epoch's mean training loss to the start's, for the default fit
on every world of the family and for fits at learning rates that collapse.

    .venv/bin/python benchmarks/bench_collapse.py [--seeds 0] [--lrs auto 0.1 1]

One row per fit to benchmarks/results/collapse.jsonl: world, seed, lr ("auto" for the
default), the untrained head's loss (the first step's), the first and last epoch's loss, the ratio
that the check compares with COLLAPSE_RATIO (last / min(untrained, first)), and HM. The
check raises ``TrainingDivergedError`` above the ratio, so it is switched off here.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import record, rows  # noqa: E402
from worlds import LARGE, PEER_WORLDS, WORLDS, load_world  # noqa: E402


def run_one(world, seed, lr):
    import torch

    from candle_sklearn import CandleClassifier, _train
    from candle_sklearn.exceptions import TrainingDivergedError
    from candle_sklearn.metrics import base_new_accuracy

    torch.set_num_threads(1)
    seen = {}
    check = _train._check_progress

    def measure(history, dim, untrained):  # see what the check sees; raise nothing
        seen["untrained"] = float(untrained)
        return check(history, 0, untrained)  # below MIN_COLLAPSE_DIM: no check

    _train._check_progress = measure
    data = load_world(world, seed)
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           lr=lr, new_class_bias=0.0, device="cpu", random_state=seed)
    try:
        clf.fit(data.X_train, data.y_train)
    except TrainingDivergedError:  # non-finite loss: caught before any ratio
        return dict(world=world, seed=seed, lr=lr, first=None, last=None, ratio=None,
                    epochs=None, hm=None)
    ref = base_new_accuracy(data.y_test, clf.decision_function(data.X_test, calibrated=False),
                            clf.classes_, data.new_classes)
    h = clf.history_
    start = min(seen["untrained"], h[0])
    return dict(world=world, seed=seed, lr=lr, untrained=seen["untrained"], first=h[0],
                last=h[-1], ratio=h[-1] / start, epochs=len(h), hm=ref["hm"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--lrs", nargs="+", default=["auto", "0.1", "1"])
    args = parser.parse_args()
    have = {(r["world"], r["seed"], str(r["lr"])) for r in rows("collapse")}
    for world in [w for w in list(WORLDS) + list(PEER_WORLDS) if w not in LARGE]:
        for seed in args.seeds:
            for lr in args.lrs:
                if (world, seed, lr) in have:
                    continue
                row = run_one(world, seed, lr if lr == "auto" else float(lr))
                row["lr"] = lr
                record("collapse", row)
                print(f"{world:>20} {seed} lr={lr:>5} {row}", flush=True)
    table = rows("collapse")
    for lr in args.lrs:
        ratios = [r["ratio"] for r in table if str(r["lr"]) == lr and r["ratio"] is not None]
        diverged = sum(r["ratio"] is None for r in table if str(r["lr"]) == lr)
        print(f"lr={lr}: {diverged} fits non-finite")
        if ratios:
            print(f"lr={lr}: ratio min {min(ratios):.3f} median {np.median(ratios):.3f} "
                  f"max {max(ratios):.3f} over {len(ratios)} fits")


if __name__ == "__main__":
    main()
