"""Speed and memory of CandleClassifier on CLIP-sized features (D = 512), CPU.

    .venv/bin/python benchmarks/bench_speed.py          # everything (about 10 minutes)
    .venv/bin/python benchmarks/bench_speed.py --quick  # fit ratio and throughput only

1. fit time against LogisticRegression at 10k samples x 100 classes (same features,
   same process), for the default and for the reference recipe (SGD, batch 128, 50
   epochs, context="batch": the 2C class tokens fused in every step);
2. time per epoch and peak memory at 1k / 10k / 100k samples x 100 / 1,000 classes,
   each in its own process (peak RSS), with the training FLOP/s against a plain
   matrix multiply timed in the same process;
3. predict_proba throughput at 1,000 classes against LogisticRegression.predict_proba.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from candle_sklearn import CandleClassifier
from candle_sklearn._head import CandleHead
from candle_sklearn._loss import cla_loss, class_log_prior
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn import REFERENCE_RECIPE

REFERENCE = REFERENCE_RECIPE


def balanced(n_samples, n_classes, seed=0, n_test=10):
    """n_samples training features spread evenly over n_classes (all base)."""
    return make_clip_like_features(n_base=n_classes, n_new=0, dim=512, imbalance_ratio=1.0,
                                   max_per_class=n_samples // n_classes,
                                   n_test_per_class=n_test, random_state=seed)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def fit_ratio(full_reference):
    data = balanced(10_000, 100)
    lr, t_lr = timed(lambda: LogisticRegression(max_iter=1000).fit(data.X_train, data.y_train))
    rows = [("LogisticRegression", t_lr, lr.score(data.X_test, data.y_test), "")]
    candle = CandleClassifier(text_features=data.text_features, random_state=0, device="cpu")
    _, t = timed(lambda: candle.fit(data.X_train, data.y_train))
    rows.append(("Candle default", t, candle.score(data.X_test, data.y_test), ""))
    epochs = REFERENCE["max_epochs"] if full_reference else 2
    ref = CandleClassifier(text_features=data.text_features, random_state=0, device="cpu",
                           **{**REFERENCE, "max_epochs": epochs})
    _, t = timed(lambda: ref.fit(data.X_train, data.y_train))
    note = "" if full_reference else f"(timed {epochs} epochs, x{50 // epochs})"
    rows.append(("Candle reference recipe", t * 50 / epochs,
                 ref.score(data.X_test, data.y_test) if full_reference else float("nan"), note))
    print("1. fit at 10,000 samples x 100 classes, D=512, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<26}{'seconds':>9}{'x LogReg':>10}{'accuracy':>10}")
    for name, t, acc, note in rows:
        print(f"{name:<26}{t:9.1f}{t / t_lr:10.1f}{acc:10.3f}  {note}")


def step_flops(n_classes, batch):
    """FLOPs of one training step (forward and backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode
    head = CandleHead(torch.randn(n_classes, 512), torch.randn(n_classes, 512),
                      dropout=0.0).train()
    X = torch.randn(batch, 512)
    target = torch.cat([torch.randint(n_classes, (batch,)), torch.arange(n_classes)])
    prior = class_log_prior(torch.ones(n_classes))
    with FlopCounterMode(display=False) as counter:
        loss = sum(cla_loss(z, target, prior, 1.0) for z in head.training_logits(X))
        loss.backward()
    return counter.get_total_flops()


def matmul_flops_per_s():
    a, b = torch.randn(4096, 512), torch.randn(512, 512)
    a @ b
    _, t = timed(lambda: [a @ b for _ in range(20)])
    return 20 * 2 * 4096 * 512 * 512 / t


def one_size(n_samples, n_classes, full_epochs):
    """Run in a child process: one epoch (and a full fit if asked), peak RSS."""
    data = balanced(n_samples, n_classes, n_test=2)
    warm = balanced(500, 10, n_test=1)  # torch's first-call set-up is not an epoch
    CandleClassifier(max_epochs=1, device="cpu").fit(warm.X_train, warm.y_train)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clf = CandleClassifier(text_features=data.text_features, random_state=0, device="cpu",
                           max_epochs=1)
    _, t_epoch = timed(lambda: clf.fit(data.X_train, data.y_train))
    t_full = float("nan")
    if full_epochs:
        clf.set_params(max_epochs=full_epochs)
        _, t_full = timed(lambda: clf.fit(data.X_train, data.y_train))
    steps = -(-len(data.y_train) // clf.batch_size)
    flops = step_flops(n_classes, clf.batch_size) * steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(n=len(data.y_train), C=n_classes, epoch_s=t_epoch, full_s=t_full,
                          train_gflops=flops / t_epoch / 1e9,
                          matmul_gflops=matmul_flops_per_s() / 1e9,
                          peak_mib=peak / 1024, data_mib=rss0 / 1024)))


def sizes():
    print("\n2. one epoch (default batch 512) and full default fit (10 epochs), D=512")
    print(f"{'samples':>8}{'classes':>8}{'s/epoch':>9}{'full fit s':>11}{'train GF/s':>11}"
          f"{'matmul GF/s':>12}{'ratio':>7}{'peak MiB':>9}")
    for n, c in [(1_000, 100), (10_000, 100), (100_000, 100),
                 (1_000, 1_000), (10_000, 1_000), (100_000, 1_000)]:
        full = 10 if n * max(c, 300) <= 30_000_000 else 0
        out = subprocess.run([sys.executable, __file__, "--one", str(n), str(c), str(full)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['n']:8d}{c:8d}{r['epoch_s']:9.2f}{r['full_s']:11.1f}"
              f"{r['train_gflops']:11.1f}{r['matmul_gflops']:12.1f}"
              f"{r['train_gflops'] / r['matmul_gflops']:7.2f}{r['peak_mib']:9.0f}", flush=True)


def throughput():
    data = balanced(10_000, 1_000, n_test=1)
    X = np.repeat(data.X_test, 2, axis=0)  # 2,000 queries
    lr = LogisticRegression(max_iter=200).fit(data.X_train, data.y_train)
    _, t_lr = timed(lambda: lr.predict_proba(X))
    print(f"\n3. predict_proba at 1,000 classes, {len(X)} samples")
    print(f"{'method':<34}{'samples/s':>10}{'x LogReg':>10}")
    print(f"{'LogisticRegression':<34}{len(X) / t_lr:10.0f}{1.0:10.2f}")
    for context in ("isolated", "batch"):
        clf = CandleClassifier(text_features=data.text_features, random_state=0, device="cpu",
                               max_epochs=1, context=context).fit(data.X_train, data.y_train)
        n = len(X) if context == "isolated" else 200
        _, t = timed(lambda: clf.predict_proba(X[:n]))
        print(f"{'Candle context=' + context:<34}{n / t:10.0f}{n / t / (len(X) / t_lr):10.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full-reference", action="store_true",
                        help="fit the reference recipe for all 50 epochs (about 150 s)")
    parser.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_size(*args.one)
    else:
        fit_ratio(args.full_reference)
        if not args.quick:
            sizes()
        throughput()
