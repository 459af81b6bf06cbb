"""Expected run time of ``candle-sklearn reproduce`` per dataset, from measured parts.

    .venv/bin/python benchmarks/bench_reproduce.py [--images-per-second R]
        [--datasets oxford_pets dtd ...] [--shots 100]

Total = images to embed / R + 3 seeds x (Candle fit + predict, linear probe, zero-shot).
The images to embed are counted by the split functions themselves (the union of the
three seeds' training images, plus every test image) on CoOp's split sizes; the per-seed
fits are timed here on synthetic CLIP-like features (D = 512) of each dataset's shape
(base / new classes, long-tailed training set, test set). R is the embedder's images per
second: measure it with benchmarks/bench_embedder.py on the machine that will run the
job (default: 3.5, ViT-B/16 on this project's 2-core CPU, docs/benchmarks.md).
"""

import argparse
import time

import numpy as np

from candle_sklearn import CandleClassifier
from candle_sklearn.cli.scores import LinearProbe, zero_shot_scores
from candle_sklearn.datasets import base_to_new_split, make_clip_like_features

# CoOp's splits (its paper's dataset table): classes, training images, test images.
SIZES = {"imagenet": (1000, 1281167, 50000), "caltech101": (100, 4128, 2465),
         "oxford_pets": (37, 2944, 3669), "stanford_cars": (196, 6509, 8041),
         "oxford_flowers": (102, 4093, 2463), "food101": (101, 50500, 30300),
         "fgvc_aircraft": (100, 3334, 3333), "sun397": (397, 15880, 19850),
         "dtd": (47, 2820, 1692), "eurosat": (10, 13500, 8100), "ucf101": (101, 7639, 3783)}


def images_to_embed(name, shots, ratio):
    """``(training images per seed, images embedded)`` for seeds 1, 2, 3, with classes of
    equal size (the real ones differ a little)."""
    k, n_train, n_test = SIZES[name]
    y = np.sort(np.arange(n_train) % k)
    splits = [base_to_new_split(y, y[:0], np.arange(k), shots=shots, imbalance_ratio=ratio,
                                random_state=s) for s in (1, 2, 3)]
    union = np.unique(np.concatenate([s.train for s in splits]))
    return len(splits[0].train), len(union) + n_test


def seed_seconds(name, shots, ratio):
    """Seconds of one seed's fits and predictions on synthetic features of the shape."""
    k, n_train, n_test = SIZES[name]
    n_base = -(-k // 2)
    data = make_clip_like_features(n_base, k - n_base, 512, imbalance_ratio=ratio,
                                   max_per_class=min(shots, n_train // k),
                                   n_test_per_class=max(1, n_test // k), random_state=0)
    start = time.perf_counter()
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           device="cpu", random_state=1).fit(data.X_train, data.y_train)
    clf.predict_proba(data.X_test)
    clf.predict_proba(data.X_test, calibrated=False)
    candle = time.perf_counter() - start
    start = time.perf_counter()
    LinearProbe().fit(data.X_train, data.y_train).scores(data.X_test, data.classes)
    zero_shot_scores(data.X_test, data.text_features)
    return candle, time.perf_counter() - start, len(data.y_train)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-second", type=float, default=3.5)
    parser.add_argument("--datasets", nargs="+", default=[n for n in SIZES if n != "imagenet"])
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--imbalance-ratio", type=float)
    args = parser.parse_args()
    rate = args.images_per_second
    print(f"R = {rate:g} images/s; seeds 1, 2, 3; shots {args.shots}")
    print(f"{'dataset':<16}{'train/seed':>11}{'embedded':>10}{'embed s':>10}{'Candle s':>10}"
          f"{'baselines s':>12}{'total min':>10}")
    for name in args.datasets:
        ratio = args.imbalance_ratio or (0.01 if name == "imagenet" else 0.02)
        per_seed, n_embed = images_to_embed(name, args.shots, ratio)
        candle, baselines, _ = seed_seconds(name, args.shots, ratio)
        total = n_embed / rate + 3 * (candle + baselines)
        print(f"{name:<16}{per_seed:>11,}{n_embed:>10,}{n_embed / rate:>10,.0f}{candle:>10.1f}"
              f"{baselines:>12.1f}{total / 60:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
