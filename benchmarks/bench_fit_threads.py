"""Fit threads on an idle and on a busy CPU: the default (``n_jobs=None``: torch's threads,
at most the free cores) against one thread and against every core, in the same run.

    .venv/bin/python benchmarks/bench_fit_threads.py [--world lt-aniso-256] [--repeats 2]

"Busy": another process keeps one core spinning (the benchmark starts it, waits until the
one-minute load average shows it, as it does on a machine that is busy for longer, and
stops it). Wall seconds of the default CandleClassifier's fit, calibration included,
the median of ``--repeats`` fits, to benchmarks/results/fit_threads.jsonl.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import record  # noqa: E402
from worlds import load_world  # noqa: E402


@contextlib.contextmanager
def busy_core(settle=0.9, wait=90):
    """One other process spinning on a core, held until the load average shows it."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        start = time.time()
        while os.getloadavg()[0] < settle and time.time() - start < wait:
            time.sleep(1)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def fit_seconds(data, n_jobs, repeats):
    from candle_sklearn import CandleClassifier

    times = []
    for seed in range(repeats):
        clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                               device="cpu", n_jobs=n_jobs, random_state=seed)
        start = time.perf_counter()
        clf.fit(data.X_train, data.y_train)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="lt-aniso-256")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from joblib import cpu_count

    data = load_world(args.world, 0)
    fit_seconds(data, 1, 1)  # warm-up
    for load in ("idle", "busy"):
        with busy_core() if load == "busy" else contextlib.nullcontext():
            for name, n_jobs in (("default", None), ("one thread", 1),
                                 ("every core", cpu_count())):
                s = fit_seconds(data, n_jobs, args.repeats)
                record("fit_threads", dict(world=args.world, load=load, threads=name,
                                           seconds=s, load_average=os.getloadavg()[0]))
                print(f"{load} {name}: {s:.2f} s (load average {os.getloadavg()[0]:.2f})",
                      flush=True)


if __name__ == "__main__":
    main()
