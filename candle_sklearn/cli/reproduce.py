"""The paper's settings in one call: base-to-new generalisation (balanced or long-tailed)
on the CoOp-layout datasets, and transfer from one dataset to others (domain
generalisation to the ImageNet variants, cross-dataset transfer), for Candle, CLIP
zero-shot, a linear probe and the peers of :mod:`candle_sklearn.baselines`, over seeds.

Every image is embedded once, through the embedder's on-disk cache; each seed then
draws its split, fits the methods on cached features and scores the test set.
"""

import json
import os
import sys
import time

import numpy as np
from sklearn.utils import Bunch

from ..datasets import (BASE_TO_NEW_DATASETS, IMAGENET_VARIANTS, DatasetError, base_to_new_split,
                        check_coop_dataset, dataset_spec, find_coop_datasets,
                        imbalanced_fewshot_indices, load_coop_dataset)
from .embedding import embed_files
from .scores import LinearProbe, zero_shot_scores
from .tables import (COLUMNS, average_over_datasets, fitted_scores, format_table, mean_std,
                     timed_row, write_csv)

# The peers by their names on the command line and in the results.
PEERS = {"linear-adapter": "LinearAdapterClassifier", "clap": "ClapClassifier",
         "gda": "GDAClassifier", "tip-adapter": "TipAdapterClassifier",
         "tip-adapter-f": "TipAdapterClassifier", "cross-modal": "CrossModalLinearProbe",
         "lift": "LogitAdjustedCosineClassifier"}
METHODS = ("candle", "zero-shot", "linear-probe", *PEERS)
RESULT_FIELDS = ("dataset", "method", "seed", *COLUMNS, "n_train", "n_test")
TRANSFER_FIELDS = ("source", "target", "method", "seed", "accuracy", "seconds", "n_train",
                   "n_test")


def default_imbalance_ratio(dataset):
    """0.02, and 0.01 for ImageNet, as in the paper."""
    return 0.01 if dataset_spec(dataset).name == "imagenet" else 0.02


def _say(verbose, message):
    if verbose:
        print(message, file=sys.stderr, flush=True)


def _embedder(model_name, pretrained, cache_dir, device, batch_size, num_workers):
    from ..embedder import ClipEmbedder

    return ClipEmbedder(model_name, pretrained, device=device, batch_size=batch_size,
                        num_workers=num_workers, cache=os.fspath(cache_dir))


def _text(embedder, data):
    prompts = [data.template.format(n) for n in data.class_names]
    return embedder.encode_text(prompts)


class _Features:
    """Embeddings of some of a split's images, looked up by index into the split."""

    def __init__(self, embedder, paths, indices, on_error, verbose, desc):
        self.row = np.full(len(paths), -1)
        indices = np.asarray(indices, dtype=int)
        if len(indices) == 0:
            raise DatasetError(f"{desc}: no images to embed")
        self.X, kept = embed_files(embedder, paths[indices], on_error=on_error, desc=desc,
                                   verbose=verbose)
        self.row[indices[kept]] = np.arange(kept.sum())

    def take(self, indices):
        """``(features, indices kept)``: unreadable (skipped) images are left out."""
        indices = np.asarray(indices, dtype=int)
        indices = indices[self.row[indices] >= 0]
        return self.X[self.row[indices]], indices


def _candle(classes, text, seed, device, candle_params, verbose):
    from ..classifier import CandleClassifier

    return CandleClassifier(classes=classes, text_features=text, random_state=seed,
                            device=device, verbose=max(verbose - 1, 0),
                            **(candle_params or {}))


def _peer(method, classes, text, seed):
    """The peer ``method`` (a name of :data:`PEERS`) at its defaults."""
    from .. import baselines

    extra = {"fine_tune": True} if method == "tip-adapter-f" else {}
    return getattr(baselines, PEERS[method])(classes=classes, text_features=text,
                                             random_state=seed, **extra)


def check_methods(methods):
    """``methods`` as a tuple, or an error that names the unknown ones."""
    methods = tuple(METHODS if methods is None else methods)
    if unknown := [m for m in methods if m not in METHODS]:
        raise ValueError(f"unknown method(s) {unknown}; choose among {', '.join(METHODS)}")
    if not methods:
        raise ValueError("no method to run")
    return methods


# ------------------------------------------------------------------ base to new
def _run_seed(name, data, split, train, X_te, y_te, text, seed, device, candle_params,
              verbose, methods):
    X_tr, idx = train.take(split.train)
    y_tr = data.train.labels[idx]
    classes = data.classes
    counts = np.bincount(y_tr, minlength=len(classes))
    scored = Bunch(y_test=y_te, classes=classes, new_classes=split.new_classes,
                   train_counts=counts)
    rows = {}

    for method in methods:
        if method == "candle":
            _say(verbose, f"{name}, seed {seed}: Candle on {len(y_tr)} training images")
            make = fitted_scores(_candle(classes, text, seed, device, candle_params,
                                         verbose), X_tr, y_tr, X_te)
        elif method == "zero-shot":
            def make():
                return zero_shot_scores(X_te, text)
        elif method == "linear-probe":
            def make():
                return LinearProbe().fit(X_tr, y_tr).scores(X_te, classes)
        else:
            make = fitted_scores(_peer(method, classes, text, seed), X_tr, y_tr, X_te)
        timed_row(rows, method, scored, make)
    return [{"dataset": name, "method": m, "seed": seed, **r, "n_train": len(y_tr),
             "n_test": len(y_te)} for m, r in rows.items()]


def base_to_new(dataset, root, *, model_name="ViT-B-16", pretrained="openai", shots=100,
                imbalance_ratio=None, seeds=(1, 2, 3), cache_dir="candle_cache",
                device="auto", batch_size=64, num_workers=2, candle_params=None,
                on_error="stop", verbose=1, methods=None):
    """Base-to-new results of one dataset: one row per (method, seed).

    Parameters
    ----------
    dataset : str
        A name of :data:`candle_sklearn.datasets.DATASETS` (not a variant).
    root : str or path
        The folder that holds the datasets in the CoOp layout.
    model_name, pretrained : str
        The CLIP model (see :class:`~candle_sklearn.ClipEmbedder`).
    shots : int, default=100
        At most this many training images per class (16 for the balanced setting).
    imbalance_ratio : float, default=None
        Long-tail ratio ``r``; None: 0.02, or 0.01 for ImageNet; 1: balanced.
    seeds : sequence of int, default=(1, 2, 3)
    cache_dir : str or path, default="candle_cache"
        The embedding cache (SQLite): a second run embeds nothing.
    device, batch_size, num_workers : embedder and classifier settings
    candle_params : dict, optional
        More :class:`~candle_sklearn.CandleClassifier` parameters (e.g.
        :data:`candle_sklearn.REFERENCE_RECIPE`).
    on_error : {"stop", "skip"}, default="stop"
        Unreadable images stop the run, or are left out with a warning.
    verbose : int, default=1
        Progress on stderr.
    methods : sequence of str, default=None
        Names of :data:`METHODS` to run; None runs every one: Candle, zero-shot CLIP, a
        linear probe and every peer.

    Returns
    -------
    records : list of dict
        Keys ``dataset, method, seed, base, new, hm, joint_hm, many, medium, few, seconds,
        n_train, n_test``. Base / new / HM use each method's uncalibrated scores (the
        reference protocol), joint HM the calibrated ones.
    """
    methods = check_methods(methods)
    spec = dataset_spec(dataset)
    if spec.kind == "variant":
        raise DatasetError(f"{spec.name} has no training set: use it as a transfer target "
                           "(--train imagenet --test ...)")
    ratio = default_imbalance_ratio(spec.name) if imbalance_ratio is None else imbalance_ratio
    start = time.perf_counter()
    data = load_coop_dataset(spec.name, root)
    _say(verbose, f"{spec.name}: {len(data.classes)} classes, {len(data.train.labels)} "
                  f"training and {len(data.test.labels)} test images listed in "
                  f"{time.perf_counter() - start:.1f} s")
    if len(data.classes) != spec.n_classes:
        _say(verbose, f"note: the paper's {spec.name} has {spec.n_classes} classes; results "
                      "on this copy are not comparable with its table")
    splits = {seed: base_to_new_split(data.train.labels, data.test.labels, data.classes,
                                      shots=shots, imbalance_ratio=ratio, random_state=seed)
              for seed in seeds}
    _check_splits(spec.name, data, splits)
    embedder = _embedder(model_name, pretrained, cache_dir, device, batch_size, num_workers)
    embedder.fit(list(data.test.paths[:1]))
    needed = np.unique(np.concatenate([s.train for s in splits.values()]))
    train = _Features(embedder, data.train.paths, needed, on_error, verbose,
                      f"{spec.name} train")
    test = _Features(embedder, data.test.paths, np.arange(len(data.test.labels)), on_error,
                     verbose, f"{spec.name} test")
    X_te, idx = test.take(np.arange(len(data.test.labels)))
    y_te = data.test.labels[idx]
    text = _text(embedder, data)
    # every method once on two images a class first: one-off start-up costs (thread
    # pools, first calls of kernels) stay out of the first seed's seconds
    first = splits[seeds[0]]
    warm = Bunch(**{**first, "train": _two_per_class(first.train, data.train.labels)})
    few = _two_per_class(np.arange(len(y_te)), y_te)
    _run_seed(spec.name, data, warm, train, X_te[few], y_te[few], text, seeds[0], device,
              candle_params, 0, methods)
    records = []
    for seed in seeds:
        records += _run_seed(spec.name, data, splits[seed], train, X_te, y_te, text, seed,
                             device, candle_params, verbose, methods)
    return records


def _two_per_class(indices, labels):
    """The first two of ``indices`` (into ``labels``) of each class."""
    labels = labels[indices]
    return np.concatenate([indices[labels == c][:2] for c in np.unique(labels)])


def _check_splits(name, data, splits):
    """Refuse, before any image is embedded, splits that no method can be scored on."""
    if not len(data.test.labels):
        raise DatasetError(f"{name}: the test split lists no image, so there is nothing to "
                           "score")
    for seed, split in splits.items():
        n_base = len(np.unique(data.train.labels[split.train]))
        if n_base < 2 or not len(split.new_classes):
            raise DatasetError(
                f"{name}, seed {seed}: the base-to-new split has {n_base} base class(es) "
                f"with training images and {len(split.new_classes)} new one(s); it needs "
                f"two base classes (the linear probe, the peers and the calibration compare "
                f"them) and a new class: this copy has {len(data.classes)} classes")


def summarize(records, key="dataset"):
    """``{dataset: {method: {column: (mean, std)}}}`` over seeds."""
    out = {}
    for r in records:
        out.setdefault(r[key], {}).setdefault(r["method"], []).append(r)
    return {d: {m: mean_std(rs) for m, rs in by_method.items()} for d, by_method in out.items()}


def base_to_new_report(records, seeds):
    """The printed report: per dataset, the rows of every seed, then mean ± std over the
    seeds; with several datasets, the average over datasets (the paper's last column)."""
    summary = summarize(records)
    parts = []
    for dataset, by_method in summary.items():
        per_seed = {f"{r['method']} (seed {r['seed']})": r for r in records
                    if r["dataset"] == dataset}
        parts.append(f"{dataset}: per seed\n{format_table(per_seed)}")
        seeds_txt = ", ".join(str(s) for s in seeds)
        parts.append(f"{dataset}: mean ± std over seeds {seeds_txt}\n"
                     f"{format_table(by_method)}")
    if len(summary) > 1:
        methods = list(dict.fromkeys(r["method"] for r in records))
        average = {m: average_over_datasets([s[m] for s in summary.values() if m in s])
                   for m in methods}
        parts.append(f"average over {len(summary)} datasets ({', '.join(summary)}); hm is "
                     f"the harmonic mean of the average base and new\n{format_table(average)}")
    return "\n\n".join(parts)


def summary_records(records):
    """Rows of ``summary.csv``: per dataset and method, the mean and std of every column
    over seeds, and the average over datasets when there are several."""
    summary = summarize(records)
    rows = []
    for dataset, by_method in summary.items():
        for method, stats in by_method.items():
            row = {"dataset": dataset, "method": method,
                   "n_seeds": sum(r["dataset"] == dataset and r["method"] == method
                                  for r in records)}
            for c, (mean, std) in stats.items():
                row[c], row[f"{c}_std"] = mean, std
            rows.append(row)
    if len(summary) > 1:
        for method in dict.fromkeys(r["method"] for r in records):
            stats = [s[method] for s in summary.values() if method in s]
            rows.append({"dataset": "average", "method": method, "n_seeds": "",
                         **average_over_datasets(stats)})
    return rows


SUMMARY_FIELDS = ("dataset", "method", "n_seeds",
                  *(f for c in COLUMNS for f in (c, f"{c}_std")))


# ------------------------------------------------------------------ transfer


def _source_columns(source, target):
    """For each target class, its column among the source classes (matched by class id:
    WordNet ids for the ImageNet family), or None when some target class is not one."""
    col_of = {c: i for i, c in enumerate(source.class_ids.tolist())}
    ids = target.class_ids.tolist()
    return np.array([col_of[c] for c in ids]) if all(c in col_of for c in ids) else None


def transfer(source, targets, root, *, model_name="ViT-B-16", pretrained="openai",
             shots=100, imbalance_ratio=None, seeds=(1, 2, 3), cache_dir="candle_cache",
             device="auto", batch_size=64, num_workers=2, candle_params=None,
             on_error="stop", verbose=1, methods=None):
    """Fit on ``source`` (every class, few-shot and long-tailed), test on ``targets``.

    As in the reference (``TRAINER.TASK XD``), for every target Candle is fitted with the
    target's class names appended as new classes (virtual prototypes) and scored among
    them: method ``candle``. This holds for cross-dataset targets and for the ImageNet
    variants alike. A target whose classes are source classes (the ImageNet variants for
    an ImageNet source, matched by WordNet id; -A and -R hold 200 of the 1000) is also
    scored by the source-only model among the matching source classes:
    ``candle-source-classes``, and the linear probe likewise; the linear probe cannot
    score other targets. The peers are fitted and scored as Candle is. Zero-shot uses
    the target's own prompts. The source's own test set comes first, scored by the
    source-only model. Parameters as :func:`base_to_new`.

    Returns
    -------
    records : list of dict
        Keys ``source, target, method, seed, accuracy, seconds, n_train, n_test``.
    """
    methods = check_methods(methods)
    src_spec = dataset_spec(source)
    if src_spec.kind == "variant":
        raise DatasetError(f"{src_spec.name} has no training set; train on imagenet")
    ratio = default_imbalance_ratio(source) if imbalance_ratio is None else imbalance_ratio
    src = load_coop_dataset(source, root)
    tgts = {dataset_spec(t).name: load_coop_dataset(t, root) for t in targets}
    tgts.pop(src.name, None)
    embedder = _embedder(model_name, pretrained, cache_dir, device, batch_size, num_workers)
    embedder.fit(list(src.test.paths[:1]))
    train_idx = {seed: imbalanced_fewshot_indices(src.train.labels, shots, ratio,
                                                  random_state=seed) for seed in seeds}
    train = _Features(embedder, src.train.paths, np.unique(np.concatenate(
        list(train_idx.values()))), on_error, verbose, f"{src.name} train")
    tests = {}
    for name, data in {src.name: src, **tgts}.items():
        feats = _Features(embedder, data.test.paths, np.arange(len(data.test.labels)),
                          on_error, verbose, f"{name} test")
        X, idx = feats.take(np.arange(len(data.test.labels)))
        tests[name] = Bunch(data=data, X=X, y=data.test.labels[idx],
                            text=_text(embedder, data))
    records = []
    for seed in seeds:
        X_tr, idx = train.take(train_idx[seed])
        y_tr = src.train.labels[idx]
        _say(verbose, f"{src.name}, seed {seed}: Candle on {len(y_tr)} training images")
        fit = _TransferFits(src, X_tr, y_tr, tests[src.name].text, seed, device,
                            candle_params, verbose, methods)
        for name, test in tests.items():
            for method, acc, seconds in fit.scores(name == src.name, test):
                records.append({"source": src.name, "target": name, "method": method,
                                "seed": seed, "accuracy": acc, "seconds": seconds,
                                "n_train": len(y_tr), "n_test": len(test.y)})
    return records


def _accuracy(scores, y, columns):
    """Accuracy of the argmax over ``columns`` (target label ``i`` is column
    ``columns[i]``)."""
    return float(np.mean(np.argmax(scores[:, columns], axis=1) == y))


def _timed(method, score):
    start = time.perf_counter()
    acc = score()
    return method, acc, time.perf_counter() - start


class _TransferFits:
    """The models of one seed: the source-only models (fitted at first use), and Candle
    and the peers with a target's classes as new classes (fitted per target)."""

    def __init__(self, src, X, y, text, seed, device, candle_params, verbose, methods):
        self.src, self.X, self.y, self.text = src, X, y, text
        self.seed, self.methods = seed, methods
        self.args = (seed, device, candle_params, verbose)
        self._source = {}

    def model(self, method, classes, text):
        if method == "candle":
            return _candle(classes, text, *self.args)
        return _peer(method, classes, text, self.seed)

    def source_model(self, kind):
        if kind not in self._source:
            self._source[kind] = (LinearProbe() if kind == "linear-probe" else self.model(
                kind, self.src.classes, self.text)).fit(self.X, self.y)
        return self._source[kind]

    def with_new_classes(self, method, test):
        n_src = len(self.src.classes)
        classes = np.arange(n_src + len(test.data.classes))
        clf = self.model(method, classes, np.concatenate([self.text, test.text]))
        return clf.fit(self.X, self.y), n_src + np.arange(len(test.data.classes))

    def scores(self, is_source, test):
        """``(method, accuracy, seconds)`` of every method that can score ``test``."""
        X, y, classes = test.X, test.y, self.src.classes
        columns = np.arange(len(classes)) if is_source else _source_columns(self.src, test.data)
        for method in self.methods:
            if method == "zero-shot":
                yield _timed(method, lambda: _accuracy(zero_shot_scores(X, test.text), y,
                                                       np.arange(len(test.data.classes))))
            elif method == "linear-probe":
                if columns is not None:
                    yield _timed(method, lambda: _accuracy(
                        self.source_model(method).scores(X, classes), y, columns))
            elif is_source:
                yield _timed(method, lambda m=method: _accuracy(self.source_model(
                    m).decision_function(X, calibrated=False), y, columns))
            else:
                def with_new(m=method):
                    clf, cols = self.with_new_classes(m, test)
                    return _accuracy(clf.decision_function(X, calibrated=False), y, cols)

                yield _timed(method, with_new)
                if method == "candle" and columns is not None:
                    yield _timed("candle-source-classes", lambda: _accuracy(
                        self.source_model("candle").decision_function(X, calibrated=False),
                        y, columns))


TRANSFER_SUMMARY_FIELDS = ("source", "target", "method", "n_seeds", "accuracy",
                           "accuracy_std")


def _target_groups(source, targets):
    """``{column name: targets}`` of the averages over targets, as the paper's tables
    report them: domain generalisation (the ImageNet variants) and cross-dataset
    transfer (other datasets) apart; ``"average"`` when only one kind is there."""
    groups = {"dg": [t for t in targets if t != source and t in IMAGENET_VARIANTS],
              "xd": [t for t in targets if t != source and t not in IMAGENET_VARIANTS]}
    groups = {k: v for k, v in groups.items() if v}
    if len(groups) == 1:
        return {"average": next(iter(groups.values()))}
    return {f"average ({k})": v for k, v in groups.items()}


def _with_averages(records):
    """``records`` plus, per (method, seed), one row per average over targets
    (:func:`_target_groups`): the mean accuracy over the group's targets, NaN when the
    method cannot score all of them (the linear probe on other datasets)."""
    if not records:
        return []
    source = records[0]["source"]
    targets = list(dict.fromkeys(r["target"] for r in records))
    acc = {(r["method"], r["seed"], r["target"]): r["accuracy"] for r in records}
    keys = list(dict.fromkeys((r["method"], r["seed"]) for r in records))
    out = list(records)
    for name, group in _target_groups(source, targets).items():
        for method, seed in keys:
            values = [acc.get((method, seed, t)) for t in group]
            mean = (float("nan") if any(v is None for v in values)
                    else float(np.mean(values)))
            out.append({"source": source, "target": name, "method": method, "seed": seed,
                        "accuracy": mean})
    return out


def _transfer_methods(records):
    return list(dict.fromkeys(r["method"] for r in records))


def transfer_report(records, seeds):
    """The printed report of a transfer run: accuracy on every test set (the source's
    own first) and the average over the targets, per seed, then mean ± std over seeds."""
    rows = _with_averages(records)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    acc = {(r["method"], r["seed"], r["target"]): r["accuracy"] for r in rows}
    methods = _transfer_methods(records)
    per_seed = {f"{m} (seed {s})": {t: acc.get((m, s, t), float("nan")) for t in targets}
                for s in seeds for m in methods}
    table = {}
    for method in methods:
        table[method] = {}
        for t in targets:
            values = [{"acc": acc[(method, s, t)]} for s in seeds if (method, s, t) in acc]
            table[method][t] = (mean_std(values, ("acc",))["acc"] if values
                                else (float("nan"), float("nan")))
    source = records[0]["source"] if records else ""
    seeds_txt = ", ".join(str(s) for s in seeds)
    return (f"fitted on {source}; accuracy on each test set: per seed\n"
            f"{format_table(per_seed, targets)}\n\n"
            f"fitted on {source}; accuracy on each test set: mean ± std over seeds "
            f"{seeds_txt}\n{format_table(table, targets)}")


def transfer_summary_records(records):
    """Rows of a transfer run's ``summary.csv``: per target (and average over targets)
    and method, the mean and std of the accuracy over seeds."""
    rows = _with_averages(records)
    out = []
    for target in dict.fromkeys(r["target"] for r in rows):
        for method in _transfer_methods(records):
            rs = [r for r in rows if r["target"] == target and r["method"] == method]
            if not rs:
                continue
            mean, std = mean_std([{"acc": r["accuracy"]} for r in rs], ("acc",))["acc"]
            out.append({"source": rs[0]["source"], "target": target, "method": method,
                        "n_seeds": len(rs), "accuracy": mean, "accuracy_std": std})
    return out


# ------------------------------------------------------------------ one command
def _write_settings(output, **settings):
    """``output/run.json``: what was run, with which versions."""
    import sklearn
    import torch

    from .._version import __version__

    settings["candle_params"] = settings.get("candle_params") or {}
    settings["versions"] = {"candle_sklearn": __version__, "torch": torch.__version__,
                            "scikit-learn": sklearn.__version__}
    with open(os.path.join(output, "run.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2, default=str)


def _check_model(options):
    """Load the CLIP model (kept for the run: the loaded model is shared in the process)
    and check the Candle parameters' names."""
    from ..embedder import ClipEmbedder
    from .folders import check_candle_params

    check_candle_params(options.get("candle_params"))
    check_methods(options.get("methods"))
    ClipEmbedder(options.get("model_name", "ViT-B-16"), options.get("pretrained", "openai"),
                 device=options.get("device", "auto")).load_model()


def reproduce(dataset=None, root=".", *, train=None, test=(), output="candle_reproduce",
              cache_dir=None, seeds=(1, 2, 3), verbose=1, **options):
    """Run a setting of the paper and write its files; returns the printed report.

    ``dataset`` (a name, or ``"all"``: every base-to-new dataset found under ``root``)
    runs base-to-new; ``train`` and ``test`` run transfer. Writes ``output/results.csv``
    (one row per method, seed and dataset or target), ``output/summary.csv`` (mean and std
    over seeds, plus the average over datasets, or over the targets), ``output/report.txt``
    (the report) and ``output/run.json`` (the settings). The embedding cache is
    ``cache_dir`` (default ``output/cache``). ``options``: see :func:`base_to_new`.

    Unknown names, missing folders or index files, a variant as a training set, weights
    that cannot be loaded and unknown Candle parameters raise before anything is written.
    """
    if (dataset is None) == (train is None):
        raise DatasetError("give either a dataset (base to new) or --train with --test "
                           "(transfer)")
    if train is not None and not test:
        raise DatasetError("--train needs --test: the datasets to test on")
    if not os.path.isdir(os.path.expanduser(os.fspath(root))):
        raise DatasetError(f"data root {root} is not a folder")
    if train is None:  # names first: a typo fails before anything is written
        names = (find_coop_datasets(root) if str(dataset).lower() == "all"
                 else [dataset_spec(dataset).name])
        if not names:
            raise DatasetError(f"no dataset of {', '.join(BASE_TO_NEW_DATASETS)} found under "
                               f"{os.path.abspath(root)}")
    for name in ([train] if train is not None else names):
        if dataset_spec(name).kind == "variant":
            raise DatasetError(f"{dataset_spec(name).name} has no training set: use it as a "
                               "transfer target (--train imagenet --test ...)")
    for name in ([train, *test] if train is not None else names):
        check_coop_dataset(name, root)  # a missing file fails before anything is written
    _check_model(options)  # so do unavailable weights, a bad device or Candle parameter
    os.makedirs(output, exist_ok=True)
    cache_dir = os.path.join(output, "cache") if cache_dir is None else cache_dir
    _say(verbose, f"embedding cache: {os.path.abspath(cache_dir)}")
    if train is not None:
        records = transfer(train, test, root, seeds=seeds, cache_dir=cache_dir,
                           verbose=verbose, **options)
        write_csv(os.path.join(output, "results.csv"), records, TRANSFER_FIELDS)
        write_csv(os.path.join(output, "summary.csv"), transfer_summary_records(records),
                  TRANSFER_SUMMARY_FIELDS)
        report = transfer_report(records, seeds)
    else:
        records = []
        for name in names:
            records += base_to_new(name, root, seeds=seeds, cache_dir=cache_dir,
                                   verbose=verbose, **options)
        write_csv(os.path.join(output, "results.csv"), records, RESULT_FIELDS)
        write_csv(os.path.join(output, "summary.csv"), summary_records(records),
                  SUMMARY_FIELDS)
        report = base_to_new_report(records, seeds)
    with open(os.path.join(output, "report.txt"), "w", encoding="utf-8") as f:
        f.write(report + "\n")
    _write_settings(output, dataset=dataset, train=train, test=list(test), root=root,
                    seeds=list(seeds), cache_dir=cache_dir, **options)
    return report


__all__ = ["base_to_new", "reproduce", "transfer"]
