"""How fast the dataset readers list images and draw the reference split, on an
ImageNet-shaped tree of empty files and a large split file, against a bare os.scandir
walk of the same tree (the floor for listing).

    .venv/bin/python benchmarks/bench_readers.py [--classes 1000 --per-class 200]

Prints images listed per second and the extrapolation to ImageNet's 1,281,167 training
images. Nothing is decoded: the readers only list.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

from candle_sklearn.datasets import base_to_new_split, load_coop_dataset

IMAGENET_TRAIN = 1_281_167


def _make_imagenet(root, n_classes, per_class):
    base = os.path.join(root, "imagenet")
    wnids = [f"n{10000000 + i}" for i in range(n_classes)]
    for part, n in (("train", per_class), ("val", max(1, per_class // 26))):
        for w in wnids:
            folder = os.path.join(base, "images", part, w)
            os.makedirs(folder)
            for i in range(n):
                open(os.path.join(folder, f"{w}_{i}.JPEG"), "wb").close()
    with open(os.path.join(base, "classnames.txt"), "w") as f:
        f.writelines(f"{w} class {i}\n" for i, w in enumerate(wnids))


def _make_split(root, n_classes, per_class):
    base = os.path.join(root, "sun397")
    os.makedirs(os.path.join(base, "SUN397"))
    items = [[f"a/{c}/sun_{c}_{i}.jpg", c, f"indoor_class_{c}"]
             for c in range(n_classes) for i in range(per_class)]
    with open(os.path.join(base, "split_zhou_SUN397.json"), "w") as f:
        json.dump({"train": items, "val": items[:1000], "test": items[:5000]}, f)
    return len(items)


def _bare_walk(folder):
    n = 0
    for cls in os.scandir(folder):
        with os.scandir(cls.path) as entries:
            n += sum(1 for _ in entries)
    return n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        _make_imagenet(root, args.classes, args.per_class)
        n_json = _make_split(root, args.classes, args.per_class)
        print(f"made {args.classes} x {args.per_class} empty files in "
              f"{time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        n_bare = _bare_walk(os.path.join(root, "imagenet", "images", "train"))
        bare = time.perf_counter() - start
        start = time.perf_counter()
        data = load_coop_dataset("imagenet", root)
        listed = time.perf_counter() - start
        n = len(data.train.paths) + len(data.test.paths)
        print(f"{'':32}{'images':>10}{'seconds':>9}{'images/s':>12}{'x bare':>8}"
              f"{'ImageNet train s':>18}")
        print(f"{'bare os.scandir walk (train)':<32}{n_bare:>10}{bare:>9.2f}"
              f"{n_bare / bare:>12,.0f}{1.0:>8.2f}{IMAGENET_TRAIN * bare / n_bare:>18.1f}")
        print(f"{'load_coop_dataset imagenet':<32}{n:>10}{listed:>9.2f}{n / listed:>12,.0f}"
              f"{(n / listed) / (n_bare / bare):>8.2f}{IMAGENET_TRAIN * listed / n:>18.1f}")

        start = time.perf_counter()
        sun = load_coop_dataset("sun397", root)
        read = time.perf_counter() - start
        n_items = n_json + 6000
        print(f"{'load_coop_dataset split file':<32}{n_items:>10}{read:>9.2f}"
              f"{n_items / read:>12,.0f}{'':>8}{IMAGENET_TRAIN * read / n_items:>18.1f}")
        assert len(sun.train.paths) == n_json

        labels = np.repeat(np.arange(1000), IMAGENET_TRAIN // 1000)
        start = time.perf_counter()
        split = base_to_new_split(labels, labels[:50000], shots=100, imbalance_ratio=0.01,
                                  random_state=1)
        print(f"\nbase_to_new_split on {len(labels):,} ImageNet-sized labels (1,000 classes, "
              f"100 shots, r = 0.01): {time.perf_counter() - start:.2f} s, "
              f"{len(split.train):,} training images kept")


if __name__ == "__main__":
    main()
