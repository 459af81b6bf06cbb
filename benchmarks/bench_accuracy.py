"""Accuracy of CandleClassifier against baselines on synthetic CLIP-like features.

    .venv/bin/python benchmarks/bench_accuracy.py            # methods, contexts (3 seeds)
    .venv/bin/python benchmarks/bench_accuracy.py --sweep    # optimizer / lr / epochs sweep

Prints mean over seeds; ratios are against zero-shot measured in the same run.
"""

import argparse

import numpy as np

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.cli.demo import compare_methods
from candle_sklearn.cli.tables import COLUMNS, format_table, timed_row
from candle_sklearn import REFERENCE_RECIPE

REFERENCE = REFERENCE_RECIPE


def data_for(seed, dim=512):
    return make_clip_like_features(n_base=50, n_new=50, dim=dim, random_state=seed)


def mean_rows(per_seed):
    names = per_seed[0].keys()
    return {n: {c: float(np.mean([r[n][c] for r in per_seed])) for c in COLUMNS}
            for n in names}


def candle_row(data, params):
    """Fit + predict time and every table column for CandleClassifier(**params)."""
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features, **params)

    def fit_predict():
        clf.fit(data.X_train, data.y_train)
        return clf.predict_proba(data.X_test), clf.predict_proba(data.X_test, calibrated=False)

    rows = {}
    timed_row(rows, "Candle", data, fit_predict)
    return rows["Candle"]


def methods(seeds):
    per_seed = []
    for seed in seeds:
        data = data_for(seed)
        rows = compare_methods(data, {"random_state": seed})
        rows["Candle, context=batch"] = candle_row(data, {"random_state": seed,
                                                          "context": "batch"})
        rows["Candle, reference recipe"] = candle_row(data, {"random_state": seed,
                                                             **REFERENCE})
        per_seed.append(rows)
    rows = mean_rows(per_seed)
    print(f"mean over seeds {list(seeds)}: 50 base + 50 new classes, D=512\n")
    print(format_table(rows))
    zs = rows["zero-shot"]
    print("\nratio to zero-shot (reference HM): "
          + ", ".join(f"{n}: {r['hm'] / zs['hm']:.2f}" for n, r in rows.items()
                      if not np.isnan(r["hm"])))


SWEEP = {
    "adamw lr1e-3 e10 b256": dict(optimizer="adamw", lr=1e-3, max_epochs=10, batch_size=256),
    "adamw lr1e-3 e5 b256": dict(optimizer="adamw", lr=1e-3, max_epochs=5, batch_size=256),
    "adamw lr3e-4 e10 b256": dict(optimizer="adamw", lr=3e-4, max_epochs=10, batch_size=256),
    "adamw lr1e-4 e10 b256": dict(optimizer="adamw", lr=1e-4, max_epochs=10, batch_size=256),
    "adamw lr1e-3 e20 b512": dict(optimizer="adamw", lr=1e-3, max_epochs=20, batch_size=512),
    "adamw lr3e-4 e20 b128": dict(optimizer="adamw", lr=3e-4, max_epochs=20, batch_size=128),
    "sgd lr3e-4 e10 b128": dict(optimizer="sgd", lr=3e-4, max_epochs=10, batch_size=128),
    "sgd lr1e-3 e10 b256": dict(optimizer="sgd", lr=1e-3, max_epochs=10, batch_size=256),
    "reference (sgd e50 b128)": REFERENCE,
}


def sweep(seeds):
    print(f"{'config':<27}{'base':>8}{'new':>8}{'hm':>8}{'few':>8}{'seconds':>9}")
    for name, params in SWEEP.items():
        rows = [candle_row(data_for(s), {**params, "random_state": s}) for s in seeds]
        m = {c: np.nanmean([r[c] for r in rows]) for c in ("base", "new", "hm", "few",
                                                            "seconds")}
        print(f"{name:<27}{m['base']:8.3f}{m['new']:8.3f}{m['hm']:8.3f}{m['few']:8.3f}"
              f"{m['seconds']:9.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    sweep(args.seeds) if args.sweep else methods(args.seeds)
