"""The weight of the visual logits in prediction (`visual_weight`), over the family of
worlds and the worlds kept out of it, by regret.

    .venv/bin/python benchmarks/bench_visual_weight.py run [--worlds ...] [--seeds 0 1]
    .venv/bin/python benchmarks/bench_visual_weight.py report

`run` fits the default CandleClassifier once per world and seed (`new_class_bias=0.0`:
the reference protocol scores the head's own scores) and scores the test set at every
weight of WEIGHTS, which changes prediction only (training is the same), appending one
row per fit to benchmarks/results/visual_weight.jsonl. `report` prints the mean regret of
each weight (the world's best weight's HM minus its HM, mean over seeds) over the family
(WORLDS and PEER_WORLDS) and over the kept-out worlds (VALIDATION, HOLDOUT, FRESH).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import record, rows  # noqa: E402
from worlds import FRESH, HOLDOUT, LARGE, PEER_WORLDS, VALIDATION, WORLDS, load_world  # noqa: E402

NAME = "visual_weight"
WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)
KEPT_OUT = {**VALIDATION, **HOLDOUT, **FRESH}


def run_one(world, seed):
    import torch

    from candle_sklearn import CandleClassifier
    from candle_sklearn.metrics import base_new_accuracy

    torch.set_num_threads(1)
    data = load_world(world, seed)
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, random_state=seed, device="cpu")
    clf.fit(data.X_train, data.y_train)
    hm = {}
    for weight in WEIGHTS:
        clf.head_.set_inference_visual_scale(weight * clf.visual_scale)
        hm[f"{weight:g}"] = base_new_accuracy(
            data.y_test, clf.decision_function(data.X_test, calibrated=False),
            clf.classes_, data.new_classes)["hm"]
    return {"world": world, "seed": seed, "n_train": len(data.y_train), "hm": hm}


def regret(worlds):
    """{weight: (mean regret, max regret)} over ``worlds`` (those with rows)."""
    by = {}
    for r in rows(NAME):
        if r["world"] in worlds:
            by.setdefault(r["world"], []).append(r["hm"])
    weights = [w for w in (f"{x:g}" for x in WEIGHTS) if all(w in h for hs in by.values()
                                                               for h in hs)]
    out = {w: [] for w in weights}
    for hms in by.values():
        mean = {w: np.mean([h[w] for h in hms]) for w in weights}
        for w in weights:
            out[w].append(max(mean.values()) - mean[w])
    return {w: (float(np.mean(v)), float(np.max(v)), len(v)) for w, v in out.items() if v}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--worlds", nargs="+", default=[w for w in {**WORLDS, **PEER_WORLDS}
                                                   if w not in LARGE] + list(KEPT_OUT))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    sub.add_parser("report")
    args = parser.parse_args()
    if args.cmd == "run":
        have = {(r["world"], r["seed"]) for r in rows(NAME)}
        for world in args.worlds:
            for seed in args.seeds:
                if (world, seed) not in have:
                    row = run_one(world, seed)
                    record(NAME, row)
                    print(world, seed, {k: round(v, 3) for k, v in row["hm"].items()},
                          flush=True)
        return
    for label, worlds in (("family", {**WORLDS, **PEER_WORLDS}), ("kept out", KEPT_OUT)):
        for weight, (mean, worst, n) in regret(worlds).items():
            print(f"{label:9s} visual_weight={weight:>4}: mean regret {mean:.4f}, max "
                  f"{worst:.4f} over {n} worlds")


if __name__ == "__main__":
    main()
