"""Serving on a CPU: one-sample latency and bulk throughput of CandleClassifier's
predict_proba against LogisticRegression's, at 1,000 classes, on an idle and on a busy
machine, in the same run.

    .venv/bin/python benchmarks/bench_serving.py [--classes 1000] [--repeats 300]
    .venv/bin/python benchmarks/bench_serving.py --threads-sweep

"Busy": another process keeps one core spinning for the length of the measurement (the
benchmark starts and stops it), as a serving process rarely has the machine to itself.
Both models run with their libraries' default threads (torch's and NumPy's BLAS: one per
core), as a user's server would. Targets (issue 24): one-sample latency at most 20x
LogisticRegression's and bulk throughput at least 0.05x, on the busy machine. The head is
fitted for one step only: the cost of scoring does not depend on how well it is trained.
Rows go to benchmarks/results/serving.jsonl. ``--threads-sweep`` instead times
CandleClassifier's predict_proba on 1 to 512 rows with one and with two threads, idle and
busy (the evidence of the thread policy for small inputs, docs/decisions/0017), into
benchmarks/results/serving_threads.jsonl.
"""

import argparse
import contextlib
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import record  # noqa: E402

DIM = 512


@contextlib.contextmanager
def busy_core():
    """One other process spinning on a core for the length of the block."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let the scheduler see it
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _latency(fn, x, repeats):
    for _ in range(5):  # warm-up: the class context is computed once, here
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _throughput(fn, X, repeats=3):
    """Samples per second of one call on all of ``X``, the median of ``repeats`` calls
    (one call of a fraction of a second varies by a third on a busy machine)."""
    fn(X[:64])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - start)
    return len(X) / float(np.median(times))


def models(n_classes):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features

    n_base = n_classes // 2
    data = make_clip_like_features(n_base=n_base, n_new=n_classes - n_base, dim=DIM,
                                   imbalance_ratio=1.0, max_per_class=2, n_test_per_class=1,
                                   random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        logreg = LogisticRegression(max_iter=5).fit(np.vstack([data.X_train, data.X_test]),
                                                    np.concatenate([data.y_train, data.y_test]))
    candle = CandleClassifier(classes=data.classes, text_features=data.text_features,
                              max_steps=1, new_class_bias=0.0, device="cpu",
                              random_state=0).fit(data.X_train, data.y_train)
    return {"LogisticRegression": logreg, "CandleClassifier": candle}


def measure(fitted, X, repeats):
    return {name: (_latency(m.predict_proba, X[:1], repeats), _throughput(m.predict_proba, X))
            for name, m in fitted.items()}


def threads_sweep(candle, X):
    for load in ("idle", "busy"):
        with busy_core() if load == "busy" else contextlib.nullcontext():
            for rows in (1, 16, 64, 256, 512):
                for n_jobs in (1, 2):
                    candle.set_params(n_jobs=n_jobs)
                    ms = 1e3 * _latency(candle.predict_proba, X[:rows], 60 if rows < 100 else 15)
                    record("serving_threads", dict(load=load, rows=rows, n_jobs=n_jobs, ms=ms))
                    print(f"{load} {rows:>4} rows n_jobs={n_jobs}: {ms:.2f} ms", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--bulk", type=int, default=20_000)
    parser.add_argument("--threads-sweep", action="store_true")
    args = parser.parse_args()
    fitted = models(args.classes)
    X = np.random.default_rng(0).standard_normal((args.bulk, DIM)).astype(np.float32)
    if args.threads_sweep:
        return threads_sweep(fitted["CandleClassifier"], X)
    print("| machine | method | one-sample ms | x LogReg | bulk samples/s | x LogReg |")
    print("|---|---|---|---|---|---|")
    for load in ("idle", "busy"):
        with busy_core() if load == "busy" else contextlib.nullcontext():
            rows = measure(fitted, X, args.repeats)
        lat0, thr0 = rows["LogisticRegression"]
        for name, (lat, thr) in rows.items():
            row = dict(classes=args.classes, load=load, method=name, latency_ms=1e3 * lat,
                       latency_ratio=lat / lat0, throughput=thr, throughput_ratio=thr / thr0)
            record("serving", row)
            print(f"| {load} | {name} | {1e3 * lat:.3f} | {lat / lat0:.1f} | {thr:,.0f} | "
                  f"{thr / thr0:.3f} |", flush=True)


if __name__ == "__main__":
    main()
