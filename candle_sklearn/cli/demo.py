"""The offline demo: Candle against zero-shot CLIP, linear probes and the strongest peers
(the regularised linear adapter, LIFT's classifier, GDA) on long-tailed data with new
classes, printed as a table."""

import time

import numpy as np

from ..baselines import GDAClassifier, LinearAdapterClassifier, LogitAdjustedCosineClassifier
from ..classifier import CandleClassifier
from ..datasets import make_clip_like_features, make_world_task
from ..metrics import LongTailDisplay
from .scores import LinearProbe, nearest_class_mean_scores, zero_shot_scores
from .tables import figure_and_axes, fitted_scores, format_table, timed_row

# The peers the demo shows beside Candle: the strongest on the family of worlds
# (docs/benchmarks.md).
DEMO_PEERS = {"linear adapter (ProLIP)": LinearAdapterClassifier,
              "LIFT classifier": LogitAdjustedCosineClassifier, "GDA": GDAClassifier}


def peer_rows(rows, data, X_train, X_test, text, seed):
    """Add a row per peer of :data:`DEMO_PEERS`, fitted on ``X_train`` at its defaults;
    returns ``{name: calibrated scores}``."""
    scores = {}
    for name, peer in DEMO_PEERS.items():
        est = peer(classes=data.classes, text_features=text, random_state=seed)
        scores[name] = timed_row(rows, name, data,
                                 fitted_scores(est, X_train, data.y_train, X_test))
    return scores

LEGEND = ("base/new/hm: reference protocol (new-class images scored among new classes);"
          "\njoint_hm: every image among all classes; many/medium/few: base classes with"
          "\n>100, 20-100, <20 training images; '--': the method cannot score new classes.")


def compare_methods(data, candle_params=None):
    """Rows of results for zero-shot, nearest class mean, linear probes, the peers and
    Candle."""
    classes = data.classes
    rows = {}

    def timed(name, make_scores):
        timed_row(rows, name, data, make_scores)

    timed("zero-shot", lambda: zero_shot_scores(data.X_test, data.text_features))
    timed("nearest class mean", lambda: nearest_class_mean_scores(
        data.X_train, data.y_train, data.X_test, classes))
    probe = {}
    timed("linear probe", lambda: probe.setdefault("lr", LinearProbe().fit(
        data.X_train, data.y_train)).scores(data.X_test, classes))
    timed("linear probe + logit adj.", lambda: probe["lr"].scores(data.X_test, classes, 1.0))
    peer_rows(rows, data, data.X_train, data.X_test, data.text_features,
              (candle_params or {}).get("random_state"))
    clf = CandleClassifier(classes=classes, text_features=data.text_features,
                           **(candle_params or {}))

    def candle():
        clf.fit(data.X_train, data.y_train)
        return (clf.predict_proba(data.X_test),
                clf.predict_proba(data.X_test, calibrated=False))

    timed("Candle", candle)
    return rows


def main(seed=0, verbose=1):
    data = make_clip_like_features(n_base=50, n_new=50, dim=512, random_state=seed)
    print(f"Synthetic CLIP-like features, seed {seed}: {len(data.base_classes)} base classes "
          f"({len(data.y_train)} long-tailed training images, imbalance 0.02), "
          f"{len(data.new_classes)} new classes known by name only, "
          f"{len(data.y_test)} test images.")
    rows = compare_methods(data, {"random_state": seed, "verbose": verbose})
    print()
    print(format_table(rows))
    print("\n" + LEGEND)
    return rows


# ------------------------------------------------------------------ image world demo
def run_world(seed=0, verbose=1, model_name="candle-tiny", pretrained="bundled",
              candle_params=None):
    """Fit the pipeline on world images; compare with zero-shot and a linear probe.

    Returns ``(data, rows, per_class)``: the world's data, the table rows and, per
    method, the accuracy of every class (joint prediction) for the long-tail plot.
    """
    from ..pipeline import make_candle_pipeline
    from .scores import LinearProbe, zero_shot_scores

    data = make_world_task(seed)
    classes = data.classes
    pipe = make_candle_pipeline(model_name, pretrained, classes=classes,
                                embedder_params={"verbose": verbose},
                                **{"random_state": seed, "verbose": verbose,
                                   **(candle_params or {})})
    rows, predictions = {}, {}

    def candle():
        pipe.fit(list(data.X_train), data.y_train)
        X_test = list(data.X_test)
        return pipe.predict_proba(X_test), pipe.predict_proba(X_test, calibrated=False)

    predictions["Candle (pipeline)"] = timed_row(rows, "Candle (pipeline)", data, candle)
    embedder = pipe.named_steps["clip"]
    F_train = embedder.transform(list(data.X_train))  # from the embedding cache
    F_test = embedder.transform(list(data.X_test))
    text = pipe.named_steps["candle"].text_features_
    predictions["zero-shot"] = timed_row(rows, "zero-shot", data,
                                         lambda: zero_shot_scores(F_test, text))
    predictions["linear probe"] = timed_row(
        rows, "linear probe", data,
        lambda: LinearProbe().fit(F_train, data.y_train).scores(F_test, classes))
    predictions.update(peer_rows(rows, data, F_train, F_test, text, seed))

    per_class = {name: np.array([np.mean(classes[np.argmax(s[data.y_test == c], 1)] == c)
                                 for c in classes]) for name, s in predictions.items()}
    return data, rows, per_class


def plot_long_tail(data, per_class, path):
    """Per-class accuracy (joint prediction) against training images, one series per
    method, saved to ``path`` (:class:`~candle_sklearn.metrics.LongTailDisplay`)."""
    figure, ax = figure_and_axes()
    LongTailDisplay(np.stack(list(per_class.values())), data.train_counts,
                    classes=data.classes, names=list(per_class)).plot(
        ax=ax, title="Long tail: per-class accuracy (lines: moving average over 7 classes)")
    figure.tight_layout()
    figure.savefig(path)


def main_world(seed=0, verbose=1, plot="candle_demo_long_tail.png"):
    from ..datasets import world_classes, world_new_classes

    print(f"Generated image world: {len(world_classes())} compositions (pattern x colour x "
          f"shape), {len(world_new_classes())} of them held out of the tiny CLIP's "
          "training and used here as new classes, known by name only.")
    start = time.perf_counter()
    data, rows, per_class = run_world(seed, verbose)
    print(f"\nseed {seed}: {len(data.y_train)} long-tailed training images of "
          f"{len(data.base_classes)} base classes (imbalance 0.02, at most 100 per class), "
          f"{len(data.y_test)} test images; model candle-tiny (bundled)\n")
    print(format_table(rows))
    print("\n" + LEGEND +
          "\nCandle's seconds include embedding all images; the others reuse the cached"
          " embeddings.")
    if plot:
        try:
            plot_long_tail(data, per_class, plot)
            print(f"\nlong-tail plot: {plot}")
        except ImportError:
            print("\n(matplotlib is not installed: no plot)")
    print(f"total {time.perf_counter() - start:.0f} s")
    return rows
