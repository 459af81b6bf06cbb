"""How well calibrated ``predict_proba`` is, beside accuracy, on the family of worlds: the
expected calibration error (ECE, 15 bins) and the log loss of every test image among all
classes, with the fitted temperature (``temperature_``) and without it (temperature 1,
before 0.2), for Candle, the strongest peer (the linear adapter) and zero-shot CLIP.

    .venv/bin/python benchmarks/bench_probabilities.py [--seeds 0] [--jobs 2]

One row per fit to benchmarks/results/probabilities.jsonl (a rerun skips what is there).
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_peers import make  # noqa: E402
from harness import record, rows  # noqa: E402
from worlds import LARGE, PEER_WORLDS, WORLDS, load_world  # noqa: E402

NAME = "probabilities"
METHODS = ("candle", "linear-adapter", "zero-shot")


def run_one(world, seed, method):
    import torch
    from sklearn.metrics import log_loss

    from candle_sklearn.metrics import base_new_accuracy, expected_calibration_error

    torch.set_num_threads(1)
    data = load_world(world, seed)
    est = make(method, data, seed).fit(data.X_train, data.y_train)
    row = dict(world=world, seed=seed, method=method,
               temperature=float(getattr(est, "temperature_", 1.0)))
    joint = base_new_accuracy(data.y_test, est.decision_function(data.X_test), est.classes_,
                              data.new_classes, protocol="joint")
    row["joint_hm"] = joint["hm"]
    for key, temperature in (("", row["temperature"]), ("_t1", 1.0)):
        if hasattr(est, "temperature_"):
            est.temperature_ = temperature
        proba = est.predict_proba(data.X_test)
        row["ece" + key] = expected_calibration_error(data.y_test, proba, est.classes_)
        row["log_loss" + key] = log_loss(data.y_test, proba, labels=est.classes_)
        row["above_0999" + key] = float(np.mean(proba.max(1) > 0.999))
    return row


def _run_and_record(world, seed, method):
    row = run_one(world, seed, method)
    record(NAME, row)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    from joblib import Parallel, delayed

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                            os.environ.get("PYTHONPATH")]))
    have = {(r["world"], r["seed"], r["method"]) for r in rows(NAME)}
    todo = [(w, s, m) for w in list(WORLDS) + list(PEER_WORLDS) if w not in LARGE
            for s in args.seeds for m in args.methods if (w, s, m) not in have]
    for row in Parallel(n_jobs=args.jobs, return_as="generator_unordered")(
            delayed(_run_and_record)(*job) for job in todo):
        print(f"{row['world']:>20} {row['method']:>15} T {row['temperature']:.2f} "
              f"ECE {row['ece_t1']:.3f} -> {row['ece']:.3f} log loss "
              f"{row['log_loss_t1']:.2f} -> {row['log_loss']:.2f}", flush=True)


if __name__ == "__main__":
    main()
