"""Candle against the methods a practitioner would pick instead, side by side, on the
family of worlds (benchmarks/worlds.py) and three worlds that favour the peers.

    .venv/bin/python benchmarks/bench_peers.py run [--seeds 0 1 2] [--jobs 2]
    .venv/bin/python benchmarks/bench_peers.py report [--markdown]

`run` fits every method at its default on every world and seed and appends one row per
fit to benchmarks/results/peers.jsonl (a rerun skips what is there): HM of the reference
protocol (new-class images among the new classes, the method's own scores), joint HM
(every image among all classes, as `predict` answers, calibrated), and fit seconds, each
worker on one torch thread. `report` prints per world and method the mean over seeds, and
the mean over worlds.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import record, rows  # noqa: E402
from worlds import LARGE, PEER_WORLDS, WORLDS, load_world  # noqa: E402

NAME = "peers"
METHODS = ("candle", "zero-shot", "linear-adapter", "clap", "gda", "tip-adapter",
           "tip-adapter-f", "cross-modal", "lift")


def make(method, data, seed):
    from candle_sklearn import CandleClassifier
    from candle_sklearn import baselines as b

    table = dict(classes=data.classes, text_features=data.text_features)
    if method == "zero-shot":
        return b.ZeroShotClassifier(**table)
    cls = {"candle": CandleClassifier, "linear-adapter": b.LinearAdapterClassifier,
           "clap": b.ClapClassifier, "gda": b.GDAClassifier,
           "tip-adapter": b.TipAdapterClassifier, "tip-adapter-f": b.TipAdapterClassifier,
           "cross-modal": b.CrossModalLinearProbe,
           "lift": b.LogitAdjustedCosineClassifier}[method]
    extra = {"fine_tune": True} if method == "tip-adapter-f" else {}
    if method == "candle":
        extra["device"] = "cpu"
    return cls(**table, random_state=seed, **extra)


def run_one(world, seed, method):
    import torch

    from candle_sklearn.metrics import base_new_accuracy

    torch.set_num_threads(1)
    data = load_world(world, seed)
    est = make(method, data, seed)
    wall = time.perf_counter()
    est.fit(data.X_train, data.y_train)
    wall = time.perf_counter() - wall
    own = est.decision_function(data.X_test, calibrated=False)
    joint = est.decision_function(data.X_test)
    ref = base_new_accuracy(data.y_test, own, est.classes_, data.new_classes)
    jnt = base_new_accuracy(data.y_test, joint, est.classes_, data.new_classes,
                            protocol="joint")
    return dict(world=world, seed=seed, method=method, hm=ref["hm"], base=ref["base"],
                new=ref["new"], joint_hm=jnt["hm"], joint_base=jnt["base"],
                joint_new=jnt["new"], fit_s=wall)


def _run_and_record(world, seed, method):
    row = run_one(world, seed, method)
    record(NAME, row)
    return row


def run(seeds, jobs, worlds, methods):
    from joblib import Parallel, delayed

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                            os.environ.get("PYTHONPATH")]))
    have = {(r["world"], r["seed"], r["method"]) for r in rows(NAME)}
    todo = [(w, s, m) for w in worlds for s in (seeds[:1] if w in LARGE else seeds)
            for m in methods if (w, s, m) not in have]
    print(f"{len(todo)} fits to run", flush=True)
    for row in Parallel(n_jobs=jobs, return_as="generator_unordered", verbose=5)(
            delayed(_run_and_record)(*job) for job in todo):
        print(f"{row['world']:>20} {row['seed']} {row['method']:>15} hm {row['hm']:.3f} "
              f"joint {row['joint_hm']:.3f} {row['fit_s']:.1f}s", flush=True)


def table(worlds=None, methods=METHODS):
    """{world: {method: (hm, joint_hm, fit_s) mean over seeds}} over the seeds that every
    method has on that world."""
    by = {}
    for r in rows(NAME):
        by.setdefault(r["world"], {}).setdefault(r["method"], {})[r["seed"]] = r
    out = {}
    for world in worlds or by:
        if world not in by:
            continue
        have = [by[world].get(m, {}) for m in methods]
        seeds = set.intersection(*(set(h) for h in have))
        if not seeds:
            continue
        out[world] = {m: tuple(float(np.mean([h[s][k] for s in seeds]))
                               for k in ("hm", "joint_hm", "fit_s")) + (len(seeds),)
                      for m, h in zip(methods, have)}
    return out


def report(markdown, methods):
    t = table(methods=methods)
    head = ["world", *[f"{m} HM / joint / s" for m in methods]]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for world, row in t.items():
        cells = [f"{h:.3f} / {j:.3f} / {s:.1f}" for h, j, s, _ in row.values()]
        print(f"| {world} | " + " | ".join(cells) + " |")
    means = {m: np.mean([t[w][m][:3] for w in t], axis=0) for m in methods}
    print("| **mean** | " + " | ".join(f"{h:.3f} / {j:.3f} / {s:.1f}"
                                        for h, j, s in means.values()) + " |")
    peers = [m for m in methods if m != "candle"]
    if "candle" in methods:
        for key, k in (("HM", 0), ("joint HM", 1)):
            best = max(peers, key=lambda m: means[m][k])
            worst = min(t, key=lambda w: t[w]["candle"][k] - max(t[w][m][k] for m in peers))
            gap = t[worst]["candle"][k] - max(t[worst][m][k] for m in peers)
            print(f"{key}: candle {means['candle'][k]:.3f}, best peer {best} "
                  f"{means[best][k]:.3f}; worst world {worst} ({gap:+.3f} against its best "
                  "peer)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--worlds", nargs="+", default=list(WORLDS) + list(PEER_WORLDS))
    r.add_argument("--methods", nargs="+", default=list(METHODS))
    p = sub.add_parser("report")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.seeds, args.jobs, args.worlds, args.methods)
    else:
        report(args.markdown, args.methods)


if __name__ == "__main__":
    main()
