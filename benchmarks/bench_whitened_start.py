"""The default CandleClassifier with its projections started at the identity (before
decision 0022) and at the within-class whitening (the default since), on the same worlds
and seeds: reference-protocol HM and joint HM of each.

    .venv/bin/python benchmarks/bench_whitened_start.py [WORLD ...] [--seeds 0]

Default worlds: the kept-out ones (worlds.VALIDATION), on which no default was chosen.
Rows go to benchmarks/results/whitened_start.jsonl.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import record  # noqa: E402
from worlds import VALIDATION, load_world  # noqa: E402

from candle_sklearn import CandleClassifier  # noqa: E402
from candle_sklearn.classifier import RECIPES  # noqa: E402
from candle_sklearn.metrics import base_new_accuracy  # noqa: E402


def run_one(world, seed):
    data = load_world(world, seed)
    row = {"world": world, "seed": seed}
    default = dict(RECIPES["default"])
    try:
        for whiten in (False, True):
            RECIPES["default"] = {**default, "whiten": whiten}
            clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                                   random_state=seed, device="cpu")
            clf.fit(data.X_train, data.y_train)
            own = base_new_accuracy(data.y_test, clf.decision_function(data.X_test,
                                                                       calibrated=False),
                                    clf.classes_, data.new_classes)
            joint = base_new_accuracy(data.y_test, clf.decision_function(data.X_test),
                                      clf.classes_, data.new_classes, protocol="joint")
            key = "whitened" if whiten else "identity"
            row[key] = {"hm": own["hm"], "joint_hm": joint["hm"]}
    finally:
        RECIPES["default"] = default
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("worlds", nargs="*", default=list(VALIDATION))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for world in args.worlds:
        for seed in args.seeds:
            row = run_one(world, seed)
            record("whitened_start", row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
