"""The command line's work on image folders, as functions: fit a pipeline on a class
folder (plus names of classes without images), save and load it, predict files, folders
and globs, and evaluate on a test folder (per-class table and long-tail plot)."""

import os
import sys
import warnings

import numpy as np
from sklearn.utils import Bunch

from ..datasets import clean_class_name, find_images, load_image_folder, read_class_names
from ..exceptions import DatasetError, ModelFileError
from ..templates import DEFAULT_TEMPLATE
from .embedding import embed_files
from .scores import zero_shot_scores
from .tables import evaluate, figure_and_axes


# --------------------------------------------------------------- save / load
def save_model(model, path):
    """Save a fitted pipeline to ``path`` in the package's safe format
    (:func:`candle_sklearn.save`: safetensors + JSON, no pickle, CLIP weights by
    reference)."""
    from ..io import save

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save(model, path)


def load_model(path, device=None, pretrained=None, cache_dir=None):
    """Load a pipeline saved by :func:`save_model` (or ``candle-sklearn fit``);
    ``device`` overrides the saved one, ``pretrained`` where the CLIP weights are on this
    machine (:func:`candle_sklearn.load`), ``cache_dir`` the on-disk embedding cache.
    Without ``cache_dir``, a cache folder saved with the model that does not exist here
    becomes a cache in memory, with a warning: the model never creates the folders of the
    machine that fitted it. Never executes code from the file."""
    from ..io import load

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path} not found")
    model = load(path, device=device, pretrained=pretrained)
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise ModelFileError(f"{path} holds a {type(model).__name__}, not a fitted classifier")
    embedder, _ = _steps(model)
    if embedder is not None:
        if cache_dir is not None:
            embedder.set_params(cache=os.path.abspath(os.path.expanduser(cache_dir)))
        elif isinstance(embedder.cache, str) and not os.path.isdir(embedder.cache):
            warnings.warn(f"the embedding cache {embedder.cache} that the model was fitted "
                          "with is not here: embeddings are cached in memory only (pass "
                          "--cache-dir to keep them on disk)", UserWarning, stacklevel=2)
            embedder.set_params(cache=True)
    return model


# --------------------------------------------------------------- fit
#: CandleClassifier parameters that the commands set themselves (from the data, --seed,
#: --device, --template, -q), so not through ``candle_params`` / ``--param``.
SET_BY_COMMAND = ("classes", "class_names", "text_features", "templates", "encoder",
                  "random_state", "device", "verbose")


def check_candle_params(params):
    """Raise ``ValueError`` naming any key of ``params`` that is not a
    :class:`~candle_sklearn.CandleClassifier` parameter, or one the commands set, or any
    value that the classifier would reject: before any image is embedded."""
    from ..classifier import CandleClassifier

    known = set(CandleClassifier().get_params(deep=False)) - set(SET_BY_COMMAND)
    if unknown := sorted(set(params or {}) - known):
        raise ValueError(f"--param {', '.join(unknown)}: not a CandleClassifier parameter "
                         f"that can be set here; these can: {', '.join(sorted(known))}")
    try:
        CandleClassifier(**(params or {}))._validate_params()
    except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is both
        raise ValueError(f"--param: {exc}") from None


def _format_strings(templates):
    """Format strings (storable by :func:`candle_sklearn.save`), presets expanded."""
    from ..templates import preset, resolve_templates

    if templates is None or isinstance(templates, str):
        templates = [DEFAULT_TEMPLATE if templates is None else templates]
    out = [s for t in templates for s in ((t,) if "{" in t else preset(t))]
    resolve_templates(out)  # a bad template fails here, naming it
    return tuple(out)


def _class_table(folder_classes, new_classes):
    """All classes (folders, then new ones) and their prompt names, checked."""
    if clash := sorted(set(new_classes) & set(folder_classes)):
        raise DatasetError(f"new classes {clash[:5]} already have an image folder")
    classes = [*folder_classes, *new_classes]
    names = [clean_class_name(c) for c in classes]
    seen = {}
    for c, n in zip(classes, names):
        if n in seen:
            raise DatasetError(f"classes {seen[n]!r} and {c!r} have the same name {n!r} "
                               "once underscores become spaces")
        seen[n] = c
    return np.array(classes, dtype=object), np.array(names, dtype=object)


def fit_image_folder(train_dir, *, new_classes=(), model_name="ViT-B-16",
                     pretrained="openai", templates=None, output=None,
                     cache_dir=None, device="auto", batch_size=64, num_workers=2,
                     on_error="stop", random_state=0, candle_params=None, verbose=1):
    """Fit ``ClipEmbedder`` + ``CandleClassifier`` on an image folder.

    Parameters
    ----------
    train_dir : str or path
        One sub-folder of images per class (:func:`~candle_sklearn.datasets.load_image_folder`).
    new_classes : sequence of str or path, default=()
        Classes without images (names used in prompts), or a text file of them, one per
        line.
    model_name, pretrained : str
        The CLIP model (see :class:`~candle_sklearn.ClipEmbedder`).
    templates : str or list of str, default=None
        Prompts with ``{}`` for the class name (underscores become spaces), or preset
        names of :mod:`candle_sklearn.templates` (``"openai_imagenet"``, a reference
        dataset's name, ...); several are averaged. None: ``"a photo of a {}."``.
    output : str or path, optional
        Where to save the fitted pipeline.
    cache_dir : str or path, optional
        An on-disk embedding cache (else embeddings are cached in memory only).
    on_error : {"stop", "skip"}, default="stop"
        What an unreadable image does: stop the fit, or be left out with a warning.
    random_state : int, default=0
    candle_params : dict, optional
        More :class:`~candle_sklearn.CandleClassifier` parameters.

    Returns
    -------
    pipeline : fitted Pipeline
    """
    from .._clip import absolute_pretrained
    from ..pipeline import make_candle_pipeline

    templates = _format_strings(templates)
    check_candle_params(candle_params)
    data = load_image_folder(train_dir)
    if isinstance(new_classes, (str, os.PathLike)):
        new_classes = read_class_names(new_classes)
    classes, names = _class_table(list(data.classes), list(new_classes))
    # absolute paths: the saved model is used from other working directories
    cache = True if cache_dir is None else os.path.abspath(os.path.expanduser(cache_dir))
    pipe = make_candle_pipeline(
        model_name, absolute_pretrained(pretrained), classes=classes, class_names=names,
        templates=templates,
        embedder_params=dict(device=device, batch_size=batch_size, num_workers=num_workers,
                             cache=cache),
        device=device, random_state=random_state, verbose=verbose,
        **(candle_params or {}))
    embedder = pipe.named_steps["clip"].fit(list(data.paths[:1]))
    # Embed first (progress, unreadable images); the pipeline then reads the cache.
    _, kept = embed_files(embedder, data.paths, on_error=on_error, desc="embedding",
                          verbose=verbose)
    if emptied := sorted(set(data.classes) - set(data.labels[kept])):
        warnings.warn(f"no image of class folders {emptied} could be read: they are "
                      "trained as new classes, known by name only", UserWarning, stacklevel=2)
    if verbose:
        print(f"fitting Candle: {kept.sum()} images of {len(data.classes) - len(emptied)} "
              f"classes, {len(new_classes) + len(emptied)} new classes", file=sys.stderr,
              flush=True)
    pipe.fit(list(data.paths[kept]), data.labels[kept])
    if verbose:
        print(fit_summary(pipe.named_steps["candle"]), file=sys.stderr, flush=True)
    _warn_if_zero_shot(pipe.named_steps["candle"])
    if output is not None:
        save_model(pipe, output)
    return pipe


def fit_summary(clf):
    """One line on a fitted CandleClassifier: steps, last loss, calibration."""
    how = (clf.calibration_ or {}).get("method", "fixed" if clf.new_classes_.size else "none")
    return (f"fitted in {clf.n_iter_} steps (lr {clf.lr_:.3g}), last epoch's loss "
            f"{clf.history_[-1]:.4g}; new-class bias {clf.new_class_bias_:.3g} and zero-shot "
            f"weight {clf.zero_shot_weight_:g} ({how})")


def _warn_if_zero_shot(clf):
    """Say so when predictions are zero-shot CLIP's: the training images changed nothing
    that ``predict`` uses."""
    if clf.zero_shot_weight_ == 1:
        why = {"few images per class": "too few images per class to calibrate the trained "
                                       "head against new classes",
               "held-out classes": "on held-out classes zero-shot CLIP predicted better "
                                   "than the trained head"}.get(
            (clf.calibration_ or {}).get("method"), "the calibration chose it")
        warnings.warn(f"the fitted model predicts as zero-shot CLIP does (zero_shot_weight_ "
                      f"= 1: {why}); to predict with the trained head, fix the new-class "
                      "bias (new_class_bias; --param new_class_bias=0 on the command line)",
                      UserWarning, stacklevel=3)


# --------------------------------------------------------------- predict
def _steps(model):
    """``(embedder or None, final estimator)`` of a pipeline."""
    from ..embedder import ClipEmbedder

    steps = getattr(model, "steps", None)
    if steps and isinstance(steps[0][1], ClipEmbedder) and len(steps) == 2:
        return steps[0][1], steps[1][1]
    return None, model


def _probabilities(model, paths, on_error, verbose):
    """``(probabilities, kept)`` of image files: through the pipeline's embedder, so
    that unreadable files are skipped or stop the run."""
    embedder, final = _steps(model)
    if embedder is None:
        return model.predict_proba(list(paths)), np.ones(len(paths), bool)
    features, kept = embed_files(embedder, paths, on_error=on_error, verbose=verbose)
    return final.predict_proba(features), kept


def predict_images(model, inputs, *, top_k=5, on_error="stop", verbose=1):
    """Predictions for image files, folders (recursively) and glob patterns.

    Returns
    -------
    rows : list of dict
        Per readable image: ``path``, ``label`` and, for the ``top_k`` most probable
        classes, ``class_i`` and ``proba_i`` (i = 1..top_k).
    """
    paths = find_images(inputs)
    proba, kept = _probabilities(model, paths, on_error, verbose)
    classes = np.asarray(model.classes_)
    k = max(1, min(int(top_k), len(classes)))
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    rows = []
    for path, p, order in zip(np.asarray(paths, dtype=object)[kept], proba, top):
        row = {"path": path, "label": classes[order[0]]}
        for i, c in enumerate(order, 1):
            row[f"class_{i}"], row[f"proba_{i}"] = classes[c], float(p[c])
        rows.append(row)
    return rows


def prediction_fields(top_k, n_classes):
    k = max(1, min(int(top_k), n_classes))
    return ["path", "label", *(f for i in range(1, k + 1) for f in (f"class_{i}", f"proba_{i}"))]


# --------------------------------------------------------------- evaluate
def evaluate_image_folder(model, test_dir, *, on_error="stop", plot=None, verbose=1):
    """Accuracy of a fitted pipeline on a test folder (one sub-folder per class), with
    CLIP zero-shot on the same features for comparison.

    Returns
    -------
    result : Bunch
        ``summary``: {method: base, new, hm (reference protocol), joint_hm, many,
        medium, few}; ``per_class``: list of dicts (class, kind, n_train, n_test,
        accuracy of each method, joint prediction); ``plot``: the path of the long-tail
        plot, or None.
    """
    embedder, final = _steps(model)
    test = load_image_folder(test_dir)
    classes = np.asarray(final.classes_)
    if unknown := sorted(set(test.classes) - set(classes.tolist())):
        raise DatasetError(f"test folders {unknown[:5]} are not classes of the model")
    if embedder is None:
        raise ModelFileError("evaluate needs a ClipEmbedder + classifier pipeline")
    features, kept = embed_files(embedder, test.paths, on_error=on_error, verbose=verbose)
    y = test.labels[kept]
    counts = final.class_counts_
    data = Bunch(y_test=y, new_classes=classes[counts == 0])
    scores = {"candle": (final.predict_proba(features),
                         final.predict_proba(features, calibrated=False))}
    if getattr(final, "text_features_", None) is not None:
        scores["zero-shot"] = (zero_shot_scores(features, final.text_features_), None)
    summary = {m: evaluate(s, data, classes, counts, raw) for m, (s, raw) in scores.items()}
    present = np.isin(classes, y)
    predicted = {m: classes[np.argmax(s, axis=1)] for m, (s, _) in scores.items()}
    per_class = [{"class": c, "kind": "base" if n else "new", "n_train": int(n),
                  "n_test": int(np.sum(y == c)),
                  **{m: float(np.mean(p[y == c] == c)) for m, p in predicted.items()}}
                 for c, n in zip(classes[present], counts[present])]
    per_class.sort(key=lambda r: (-r["n_train"], str(r["class"])))
    if plot:  # every class of the model: images may be predicted as a class not in the folder
        plot = os.fspath(plot)
        if not os.path.splitext(plot)[1]:
            plot += ".png"  # as matplotlib would save it: say the file it wrote
        _plot_long_tail(y, predicted, classes, counts, plot)
    return Bunch(summary=summary, per_class=per_class, plot=plot or None,
                 methods=list(scores))


def _plot_long_tail(y, predicted, classes, counts, path):
    from ..metrics import LongTailDisplay

    (name, pred), *others = predicted.items()
    figure, ax = figure_and_axes()
    LongTailDisplay.from_predictions(y, pred, class_counts=counts, classes=classes,
                                     y_pred_baseline=dict(others), name=name, ax=ax)
    figure.tight_layout()
    figure.savefig(path)


def per_class_table(rows, methods):
    """Text table of :func:`evaluate_image_folder`'s ``per_class`` rows."""
    width = max([5, *(len(str(r["class"])) for r in rows)]) + 2
    head = (f"{'class':<{width}}{'kind':>6}{'n_train':>9}{'n_test':>8}"
            + "".join(f"{m:>12}" for m in methods))
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{str(r['class']):<{width}}{r['kind']:>6}{r['n_train']:>9}{r['n_test']:>8}"
                     + "".join(f"{r[m]:>12.3f}" for m in methods))
    return "\n".join(lines)
