"""Prediction speed of CandleClassifier against LogisticRegression, same features, same run.

    .venv/bin/python benchmarks/bench_inference.py [--classes 100 1000 8142] [--threads 2]
                                                   [--device cpu|cuda]

Per number of classes C (D = 512, text for every class, half of them new): the median
latency of one-sample `predict_proba` over repeated calls, and bulk `predict_proba`
throughput, for LogisticRegression and for Candle in both attention contexts. Ratios:
latency Candle / LogReg (target at most 20 at 1,000 classes) and throughput
Candle / LogReg (target at least 0.05). The heads are fitted for one step only: the
cost of scoring does not depend on how well the head is trained. With ``--device cuda``
Candle scores on the GPU (the returned probabilities copied back to NumPy, so every
call is synchronised) and LogisticRegression runs on the CPU as always.
"""

import argparse
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bench_serving import _latency, _throughput

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features

DIM = 512


def one_size(n_classes, n_bulk, repeats, device="cpu"):
    n_base = n_classes // 2
    data = make_clip_like_features(n_base=n_base, n_new=n_classes - n_base, dim=DIM,
                                   imbalance_ratio=1.0, max_per_class=2, n_test_per_class=1,
                                   random_state=0)
    X = np.random.default_rng(0).standard_normal((n_bulk, DIM)).astype(np.float32)
    # a linear model over every class (as many rows per class as Candle's base classes)
    X_lr = np.vstack([data.X_train, data.X_test])
    y_lr = np.concatenate([data.y_train, data.y_test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(max_iter=5).fit(X_lr, y_lr)
    rows = {"LogisticRegression": (_latency(lr.predict_proba, X[:1], repeats),
                                   _throughput(lr.predict_proba, X))}
    for context in ("isolated", "batch"):
        clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                               context=context, max_steps=1, new_class_bias=0.0,
                               device=device, random_state=0).fit(data.X_train, data.y_train)
        rows[f"Candle, {context}"] = (_latency(clf.predict_proba, X[:1], repeats),
                                      _throughput(clf.predict_proba, X))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000, 8142])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="where Candle scores: cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # LogisticRegression runs in NumPy's BLAS: the same number of threads for both
    threadpool_limits(args.threads)
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
              else args.device)
    print(f"D={DIM}, torch {torch.__version__}, {torch.get_num_threads()} threads (torch "
          f"and BLAS), Candle on {where}\n")
    print("| classes | method | one-sample latency ms | x LogReg | bulk samples/s | x LogReg |")
    print("|---|---|---|---|---|---|")
    for c in args.classes:
        n_bulk = 20_000 if c <= 1000 else 2_000
        rows = one_size(c, n_bulk, args.repeats if c <= 1000 else 20, args.device)
        lat0, thr0 = rows["LogisticRegression"]
        for name, (lat, thr) in rows.items():
            print(f"| {c:,} | {name} | {1e3 * lat:.3f} | {lat / lat0:.1f} | {thr:,.0f} | "
                  f"{thr / thr0:.3f} |", flush=True)


if __name__ == "__main__":
    main()
