"""Save and load fitted models without pickle: tensors in safetensors, the rest in JSON.

A model file is one safetensors file. Its header metadata holds, under the key
``"candle_sklearn"``, a JSON document that describes the estimator (class names from an
allow-list, parameters, fitted attributes, the head's configuration); every numeric array
is a tensor of the file, referenced from the JSON by name, shape and dtype. Loading parses
JSON and reads tensors: no pickle, no ``eval``, no import of a name read from the file.
A file is input from outside: every fitted value is checked (type, dtype, shape, finite,
in range, in agreement with the others) and one that no fit could have written is refused
with the file and the field; :func:`save` refuses to write such a value.

CLIP weights are never stored. A :class:`~candle_sklearn.ClipEmbedder` is stored by
reference: model name, ``pretrained`` (tag, file or folder) and a fingerprint of the
weights, which :func:`load` checks against the weights found on the loading machine.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from ._attenuation import MAX_ATTENUATION
from ._devices import nearest_device, resolve_device
from ._head import CONTEXTS, CandleHead
from .baselines import PEERS, ZeroShotClassifier
from .classifier import CandleClassifier
from .embedder import ClipEmbedder
from .exceptions import InvalidModelFileError, WeightsMismatchError, WeightsNotFoundError
from .pipeline import CandlePipeline
from .templates import as_format_string

__all__ = ["FORMAT_VERSION", "save", "load", "read_header", "head_to_state", "head_from_state"]

FORMAT = "candle_sklearn"
FORMAT_VERSION = 3
"""Version of the file layout written by :func:`save`. A change that older readers would
misread increments it; :func:`load` reads every version from ``MIN_FORMAT_VERSION`` on,
upgrading older documents through ``_MIGRATIONS``, and refuses newer ones."""
MIN_FORMAT_VERSION = 1
_METADATA_KEY = "candle_sklearn"

# The only classes a file may name. Loading maps these strings to classes; any other
# name is refused, so a file cannot make load() import or call anything else.
_CLASSES: dict[str, type] = {
    "CandleClassifier": CandleClassifier,
    "ClipEmbedder": ClipEmbedder,
    "ZeroShotClassifier": ZeroShotClassifier,
    "Pipeline": Pipeline,
    "CandlePipeline": CandlePipeline,
    **{peer.__name__: peer for peer in PEERS},
}

# Fitted attributes stored per class. A new fitted attribute made of arrays, numbers,
# strings, lists, tuples and dicts of those needs one entry here; save() refuses any
# attribute that is not listed (or handled below), so none is dropped silently.
# What every classifier of the shared base (candle_sklearn._base.TextClassifier) fits.
_TEXT_CLASSIFIER = ("classes_", "class_counts_", "base_classes_", "new_classes_",
                    "class_names_", "text_features_", "new_class_bias_", "zero_shot_weight_",
                    "temperature_", "calibration_", "n_features_in_", "feature_names_in_")
_PEER_FITTED = {"LinearAdapterClassifier": ("adapter_", "reg_", "n_iter_"),
                "ClapClassifier": ("weights_", "multipliers_"),
                "GDAClassifier": ("coef_", "intercept_"),
                "TipAdapterClassifier": ("cache_keys_", "cache_labels_"),
                "CrossModalLinearProbe": ("weights_", "n_iter_"),
                "LogitAdjustedCosineClassifier": ("weights_",)}
_FITTED: dict[str, tuple[str, ...]] = {
    "CandleClassifier": (*_TEXT_CLASSIFIER, "head_order_", "feature_scale_", "history_",
                         "lr_", "n_iter_"),
    **{name: (*_TEXT_CLASSIFIER, "class_vectors_", *more)
       for name, more in _PEER_FITTED.items()},
    "ClipEmbedder": ("embed_dim_",),
    "ZeroShotClassifier": ("classes_", "class_names_", "text_features_", "n_features_in_",
                           "feature_names_in_"),
    "Pipeline": (),
    "CandlePipeline": (),
}
# Attributes with their own encoding: the torch head (config in JSON, state as tensors).
_SPECIAL: dict[str, tuple[str, ...]] = {"CandleClassifier": ("head_",)}
# scikit-learn's own bookkeeping, stored like fitted attributes when present.
_SKLEARN_PRIVATE = ("_sklearn_output_config",)

def _candle_nodes(value):
    """Every CandleClassifier node of a document, however deep in pipelines."""
    if isinstance(value, dict):
        if value.get("class") == "CandleClassifier" and isinstance(value.get("params"), dict):
            yield value
        for child in value.values():
            yield from _candle_nodes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _candle_nodes(child)


def _v1_to_v2(doc):
    """Version 2 adds ``visual_weight`` (the weight of the visual logits in prediction)
    and the head's ``inference_visual_scale``: a version-1 model predicts with its
    training scale, as it did when it was saved (``visual_weight=1``)."""
    for node in _candle_nodes(doc):
        node["params"].setdefault("visual_weight", 1.0)
        head = node.get("head")
        if isinstance(head, dict) and isinstance(head.get("config"), dict):
            config = head["config"]
            config.setdefault("inference_visual_scale", config.get("visual_scale", 1.0))
    return {**doc, "format_version": 2}


def _v2_to_v3(doc):
    """Version 3 adds ``attenuation_correction`` and the head's ``visual_gain`` tensor: a
    version-2 model predicts without the correction, as it did when it was saved (its
    head loads with gains of one)."""
    for node in _candle_nodes(doc):
        node["params"].setdefault("attenuation_correction", False)
        if isinstance(node.get("head"), dict):
            node["head"]["before_visual_gain"] = True  # its head has no gain tensor
    return {**doc, "format_version": 3}


# File-format upgrades: _MIGRATIONS[v] turns a version-v document into version v + 1.
_MIGRATIONS: dict[int, Any] = {1: _v1_to_v2, 2: _v2_to_v3}


# ------------------------------------------------------------------ weights reference
def _weights_fingerprint(embedder: ClipEmbedder) -> str:
    """Fingerprint of the weights ``embedder`` loads on this machine.

    FINGERPRINT HOOK: the one place where io asks for it. The loaded model's own
    ``fingerprint`` (the weights file's content, config and options; "random:<id>" for
    random weights) is used when _clip provides one; until then, a digest of the
    loaded parameters and buffers.
    """
    loaded = embedder._loaded()
    fingerprint = getattr(loaded, "fingerprint", None)
    return fingerprint if fingerprint is not None else _state_dict_digest(loaded.model)


def _state_dict_digest(model) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(arr.view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
    return "sha256:" + digest.hexdigest()


def _weights_reference(embedder: ClipEmbedder) -> dict:
    pretrained = embedder.pretrained
    return {"model_name": embedder.model_name,
            "pretrained": None if pretrained is None else os.fspath(pretrained),
            "fingerprint": _weights_fingerprint(embedder)}


def _check_weights(embedder: ClipEmbedder, reference: dict, where: str) -> None:
    saved = (f"saved with ClipEmbedder(model_name={reference['model_name']!r}, "
             f"pretrained={reference['pretrained']!r}), weights {reference['fingerprint']}")
    try:
        here = _weights_fingerprint(embedder)
    except FileNotFoundError as exc:  # a checkpoint file or folder that is not here
        raise WeightsNotFoundError(
            f"{where}: the embedder's weights are not on this machine: "
            f"{_line(exc)}. The model was {saved}; pass load(..., "
            "pretrained=<where these weights are here>), or check_weights=False to load "
            "without the embedder's weights.") from None
    except Exception as exc:  # noqa: BLE001 - offline tag, unknown model, corrupt file...
        raise WeightsMismatchError(
            f"{where}: {saved}; these weights cannot be loaded here "
            f"({type(exc).__name__}: {_line(exc)}). Pass load(..., "
            "pretrained=<the same weights here>) or check_weights=False to load without "
            "the embedder's weights.") from exc
    if reference["fingerprint"] is not None and here != reference["fingerprint"]:
        hint = (" pretrained=None means random weights, which differ in every process."
                if reference["pretrained"] is None else "")
        raise WeightsMismatchError(
            f"{where}: {saved}, but ClipEmbedder(model_name={embedder.model_name!r}, "
            f"pretrained={embedder.pretrained!r}) here has weights {here}: its image "
            f"features would not match what the classifier was trained on.{hint}")


# ------------------------------------------------------------------ fitted values
# Every fitted value is checked at load (and at save, so that a file save() writes
# always loads): its type, dtype, shape, finiteness and range here, per attribute, then
# its agreement with the others (_RULES). A model file is input from outside: a value an
# estimator could not have fitted is refused with the field it is in, never predicted
# with. Shapes are tuples of sizes and names: "n" is the number of classes, "d" the
# number of features, any other name a size that the first array using it fixes.
_DIMS = {"n": "len(classes_)", "d": "n_features_in_", "k": "len(cache_keys_)"}
# Largest |new_class_bias_|: scores are cosines times logit scales (hundreds); beyond
# 1e9 the bias no longer just shifts the new classes, float64 sums start to erase the
# differences between their own scores (and with 1e308, every image goes to the first
# new class).
MAX_NEW_CLASS_BIAS = 1e9
# Largest scale factor of the head's float32 scores (logit scale, visual weights).
_MAX_HEAD_SCALE = 1e15
# Largest values of the head's tensors: its learned weights (near 1 when trained; the
# learning rate keeps them there) and its prototypes and text rows (prototypes are
# features over feature_scale_, at most 1e6; text as given). Beyond these, the head's
# float32 products can overflow to NaN before its layer norm.
_MAX_HEAD_WEIGHT = 1e4
_MAX_HEAD_ROW = 1e8
_HEAD_ROWS = ("visual_prototypes", "text_features", "virtual_prototypes")
# Largest values of the float64 arrays that scores are products with (GDA's).
_MAX_FLOAT64 = 1e30
_F32, _F64 = ("float32",), ("float64",)


class _Bad(Exception):
    """A fitted value that no fit could have produced; ``field`` names it."""

    def __init__(self, field, message):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, " ".join(str(message).split())


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return _short(value, 60)


def _number(low=-math.inf, high=math.inf, *, integer=False, low_open=False,
            high_open=False, size=None):
    """A real number (an integer with ``integer``) in the interval, never bool or NaN;
    an integer fixes the name ``size``."""
    what = "an integer" if integer else "a finite number"
    if low > -math.inf and high < math.inf:
        what += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low > -math.inf:
        what += f" {'>' if low_open else '>='} {low:g}"

    def check(value, dims):
        types = (int, np.integer) if integer else (int, float, np.integer, np.floating)
        if not isinstance(value, types) or isinstance(value, (bool, np.bool_)):
            raise TypeError(f"must be {what}, got {_describe(value)}")
        try:
            x = float(value)
        except OverflowError:
            x = math.inf
        if (not math.isfinite(x) or x < low or x > high or (low_open and x == low)
                or (high_open and x == high)):
            raise ValueError(f"must be {what}, got {_short(value, 60)}")
        if size:
            dims[size] = int(value)
        return int(value) if integer else float(value)
    return check


def _boolean(value, dims):
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, got {_describe(value)}")
    return value


def _choice(options):
    def check(value, dims):
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"must be one of {sorted(options)}, got {_short(value, 60)}")
        return value
    return check


def _shape(arr, shape, dims):
    """Check ``arr.shape`` against ``shape`` (sizes and names), fixing unknown names."""
    if arr.ndim == len(shape):
        for size, want in zip(arr.shape, shape):
            if isinstance(want, str):
                want = dims.setdefault(want, size)
            if size != want:
                break
        else:
            return
    names = ", ".join(_DIMS.get(s, s) if isinstance(s, str) else str(s) for s in shape)
    sizes = tuple(dims.get(s, "?") if isinstance(s, str) else s for s in shape)
    raise ValueError(f"does not have shape ({names}) = {sizes}: it has {arr.shape}")


_KINDS = {"f": "floats", "iu": "integers"}


def _array(kinds, shape, *, dtypes=None, low=None, high=None, nonzero_rows=False,
           unit_rows=False):
    """A numeric array of one of ``kinds`` (numpy dtype kinds; of one of ``dtypes``,
    where fit gives those only), finite, of ``shape``, within ``[low, high]``; rows
    not all zero, or of norm 1 (or 0)."""
    def check(value, dims):
        if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
            raise ValueError(f"must be an array of {_KINDS[kinds]}, got {_describe(value)}")
        if dtypes and value.dtype.name not in dtypes:
            raise ValueError(f"must be of dtype {' or '.join(dtypes)} (as fit makes it), "
                             f"got {value.dtype}")
        _shape(value, shape, dims)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError("contains NaN or infinity")
        if value.size and low is not None and value.min() < low:
            raise ValueError(f"has values below {low:g} (minimum {value.min():g})")
        if value.size and high is not None and value.max() > high:
            raise ValueError(f"has values above {high:g} (maximum {value.max():g})")
        if nonzero_rows and not np.any(value != 0, axis=1).all():
            raise ValueError(f"row {int(np.argmin(np.any(value != 0, axis=1)))} is all "
                             "zeros: a zero vector has no direction")
        if unit_rows:
            norms = np.linalg.norm(value.astype(np.float64), axis=1)
            if not np.all((np.abs(norms - 1) < 1e-4) | (norms == 0)):
                raise ValueError("rows must have norm 1 (they are normalised when fitted)")
        return value
    return check


def _strings(shape, *, unique=False):
    def check(value, dims):
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "UO" or not all(
                isinstance(v, str) for v in value.flat):
            raise ValueError(f"must be an array of strings, got {_describe(value)}")
        _shape(value, shape, dims)
        if unique and len(np.unique(value)) != value.size:
            raise ValueError("has duplicates")
        return value
    return check


def _labels(*, min_len=0, size=None):
    """Sorted unique labels (numbers, or strings), as fit's ``np.unique`` gives; their
    number fixes the name ``size``."""
    def check(value, dims):
        if (not isinstance(value, np.ndarray) or value.dtype.kind not in "biufUO"
                or (value.dtype.kind == "O"
                    and not all(isinstance(v, str) for v in value.flat))):
            raise ValueError(f"must be an array of labels (numbers or strings), got "
                             f"{_describe(value)}")
        _shape(value, (size or "labels",), dims if size else {})
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError("contains NaN or infinity")
        if len(value) < min_len:
            raise ValueError(f"has {len(value)} label(s); a fitted model has at least "
                             f"{min_len}")
        if not np.all(value[1:] > value[:-1]):
            raise ValueError("must be sorted and without duplicates (as np.unique gives)")
        return value
    return check


def _optional(check):
    return lambda value, dims: None if value is None else check(value, dims)


def _losses(value, dims):
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        raise ValueError(f"must be a list of finite numbers, got {_describe(value)}")
    return value


_CALIBRATION_METHODS = ("held-out classes", "few images per class", "zero-shot rate")


def _calibration(value, dims):
    if value is not None and (not isinstance(value, dict)
                              or value.get("method") not in _CALIBRATION_METHODS):
        raise ValueError(f"must be None or a dict whose 'method' is one of "
                         f"{list(_CALIBRATION_METHODS)}, got {_short(value, 60)}")
    return value


def _output_config(value, dims):
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"must be a dict of strings, got {_short(value, 60)}")
    return value


# What each fitted attribute must be, by name (the same name means the same thing in
# every estimator; _CHECKS_OF overrides a few per class). Checked in this order, so that
# n_features_in_ and classes_ fix "d" and "n" for the arrays after them.
_CHECKS: dict[str, Any] = {
    "n_features_in_": _number(1, integer=True, size="d"),
    "classes_": _labels(min_len=2, size="n"),
    "class_counts_": _array("iu", ("n",), low=0),
    "base_classes_": _labels(),
    "new_classes_": _labels(),
    "class_names_": _optional(_strings(("n",), unique=True)),
    "text_features_": _optional(_array("f", ("n", "d"), dtypes=_F32, nonzero_rows=True)),
    "new_class_bias_": _number(-MAX_NEW_CLASS_BIAS, MAX_NEW_CLASS_BIAS),
    "zero_shot_weight_": _number(0, 1),
    "temperature_": _number(0, low_open=True),
    "calibration_": _calibration,
    "feature_names_in_": _strings(("d",), unique=True),
    # CandleClassifier
    "head_order_": _array("iu", ("n",)),
    "feature_scale_": _number(0, low_open=True),
    "history_": _losses,
    "lr_": _number(0, low_open=True),
    "n_iter_": _number(1, integer=True),
    # the peers
    "class_vectors_": _array("f", ("n", "d"), dtypes=_F64, unit_rows=True),
    "adapter_": _array("f", ("d", "d"), dtypes=_F32),
    "reg_": _number(0),
    "weights_": _array("f", ("n", "d"), dtypes=_F32),
    "multipliers_": _array("f", ("n",), dtypes=_F64, low=0, high=1),
    "coef_": _array("f", ("n", "d"), dtypes=_F64, low=-_MAX_FLOAT64, high=_MAX_FLOAT64),
    "intercept_": _array("f", ("n",), dtypes=_F64, low=-_MAX_FLOAT64, high=_MAX_FLOAT64),
    "cache_keys_": _array("f", ("k", "d"), dtypes=(*_F32, *_F64)),
    "cache_labels_": _array("iu", ("k",), low=0),
    # ClipEmbedder
    "embed_dim_": _number(1, integer=True),
    # scikit-learn's set_output
    "_sklearn_output_config": _output_config,
}
_CHECKS_OF: dict[str, dict[str, Any]] = {
    # its attention layer-normalises feature vectors: fit refuses a single feature
    "CandleClassifier": {"n_features_in_": _number(2, integer=True, size="d")},
    # no training images: one class is a model; the text is normalised
    "ZeroShotClassifier": {"classes_": _labels(min_len=1, size="n"),
                           "text_features_": _array("f", ("n", "d"), dtypes=_F32,
                                                    unit_rows=True)},
}
# Fitted attributes a file may lack, with the value they then take (None: left unset).
_OPTIONAL = {"feature_names_in_": None, "_sklearn_output_config": None,
             "zero_shot_weight_": 0.0,  # written before the zero-shot blend: none
             "temperature_": 1.0}  # written before calibrated probabilities: softmax


def _same_labels(a, b):
    return a.dtype.kind == b.dtype.kind and np.array_equal(a, b)


def _is_permutation(order, n):
    return np.array_equal(np.sort(order), np.arange(n))


def _base_first(v):
    """The head's order lists the classes with images first, as many as its prototypes."""
    counts = v.class_counts_[v.head_order_]
    n_base = v.head_.visual_prototypes.shape[0]
    return bool((counts[:n_base] > 0).all() and (counts[n_base:] == 0).all())


def _head_text(v):
    if v.text_features_ is None:
        return not v.head_.has_text
    return v.head_.has_text and np.array_equal(v.head_.text_features.numpy(),
                                               v.text_features_[v.head_order_])


def _cache_in_range(v):
    longest = np.linalg.norm(v.cache_keys_.astype(np.float64), axis=1).max(initial=0)
    return v.beta * max(longest - 1, 0) < 700  # exp(709) is float64's largest


def _unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-300)


# How the fitted values of a class agree with each other: (field, holds, what is wrong),
# checked in order once every value has passed _CHECKS; "field" is the value named.
_TEXT_CLASSIFIER_RULES = [
    ("base_classes_", lambda v: _same_labels(v.base_classes_, v.classes_[v.class_counts_ > 0]),
     "must be the classes_ with training images (class_counts_ > 0)"),
    ("new_classes_", lambda v: _same_labels(v.new_classes_, v.classes_[v.class_counts_ == 0]),
     "disagrees with class_counts_: it must be the classes_ without training images"),
    ("class_counts_", lambda v: (v.class_counts_ > 0).any(), "has no class with training images"),
    ("text_features_", lambda v: v.text_features_ is not None or not len(v.new_classes_),
     "is None, but new_classes_ have no images: they need text"),
    ("zero_shot_weight_", lambda v: v.zero_shot_weight_ == 0 or v.text_features_ is not None,
     "is above 0 without text_features_ to score zero-shot"),
]
_RULES: dict[str, list] = {
    "CandleClassifier": [
        *_TEXT_CLASSIFIER_RULES,
        ("head_order_", lambda v: _is_permutation(v.head_order_, len(v.classes_)),
         "is not a permutation of the classes"),
        ("head_", lambda v: v.head_.n_classes == len(v.classes_),
         "has another number of classes than classes_"),
        ("head_", lambda v: v.head_.visual_prototypes.shape[1] == v.n_features_in_,
         "has another dimension than n_features_in_"),
        ("head_order_", _base_first, ("must list the classes with training images "
                                      "(class_counts_ > 0) first, as many as the head's "
                                      "visual prototypes")),
        ("text_features_", _head_text, ("differs from the head's text features "
                                        "(head_.text_features, in head_order_)")),
    ],
    "peer": [
        *_TEXT_CLASSIFIER_RULES,
        ("class_vectors_", lambda v: v.text_features_ is None or np.allclose(
            v.class_vectors_, _unit(v.text_features_), atol=1e-5),
         "must be the rows of text_features_, normalised"),
    ],
    "TipAdapterClassifier": [
        ("cache_keys_", _cache_in_range, ("are too long for beta: the cache's exp(-beta "
                                          "(1 - x k)) overflows (float64) for an image x "
                                          "along a key k")),
        ("cache_labels_", lambda v: v.cache_labels_.max(initial=0) < len(v.classes_)
         and np.array_equal(np.bincount(v.cache_labels_, minlength=len(v.classes_)),
                            v.class_counts_),
         "must be the class index of each training image (counted by class_counts_)"),
    ],
}

# The head's configuration (CandleHead.get_config); "tied_text" and
# "inference_visual_scale" may be absent (files from before they existed).
_HEAD_CONFIG = {
    "n_base": _number(1, integer=True),
    "n_new": _number(0, integer=True),
    "dim": _number(2, integer=True),
    "has_text": _boolean,
    "context": _choice(CONTEXTS),
    "num_heads": _number(1, integer=True),
    "dropout": _number(0, 1, high_open=True),
    "visual_scale": _number(0, _MAX_HEAD_SCALE, low_open=True),
    "logit_scale": _number(0, _MAX_HEAD_SCALE, low_open=True),
    "tied_text": _boolean,
    "inference_visual_scale": _number(0, _MAX_HEAD_SCALE),
}
_HEAD_CONFIG_OPTIONAL = ("tied_text", "inference_visual_scale")


def _head_from_data(config, state, before_visual_gain=False):
    """The head from its configuration and tensors (numpy arrays), each checked: a
    value that the configuration does not allow, or a tensor missing, extra, of another
    shape or dtype than the configured head's, or not finite, raises _Bad. A head saved
    ``before_visual_gain`` (format 2 or older) predicted without gains: ones."""
    if unknown := sorted(set(config) - set(_HEAD_CONFIG)):
        raise _Bad(f"head.config.{unknown[0]}", "is not a setting of the head")
    checked = {}
    for key, check in _HEAD_CONFIG.items():
        if key not in config:
            if key in _HEAD_CONFIG_OPTIONAL:
                continue
            raise _Bad(f"head.config.{key}", "is missing")
        try:
            checked[key] = check(config[key], {})
        except (TypeError, ValueError) as exc:
            raise _Bad(f"head.config.{key}", str(exc)) from None
    if checked["dim"] % checked["num_heads"]:
        raise _Bad("head.config.num_heads", f"({checked['num_heads']}) does not divide the "
                   f"dimension ({checked['dim']})")
    if checked.get("tied_text") and not checked["has_text"]:
        raise _Bad("head.config.tied_text", "is true, but has_text is false: the text rows "
                   "it ties to the virtual prototypes are missing")
    if checked["n_new"] and not checked["has_text"]:
        raise _Bad("head.config.has_text", f"is false, but the head has new classes "
                   f"(n_new={checked['n_new']}), which need text")
    # the sizes come from the tensors: a configuration is never built larger than they are
    protos, virtual = state.get("visual_prototypes"), state.get("virtual_prototypes")
    if not isinstance(protos, np.ndarray) or protos.ndim != 2:
        raise _Bad("head_.visual_prototypes", "is missing or not a matrix (n_base, dim)")
    n_new = virtual.shape[0] if isinstance(virtual, np.ndarray) and virtual.ndim else 0
    for key, size in (("n_base", protos.shape[0]), ("dim", protos.shape[1]),
                      ("n_new", n_new)):
        if checked[key] != size:
            raise _Bad(f"head.config.{key}", f"({checked[key]}) disagrees with the head's "
                       f"tensors (head_.visual_prototypes {protos.shape}, "
                       f"head_.virtual_prototypes {None if virtual is None else virtual.shape}"
                       "): the head's configuration and tensors do not fit together")
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten below
        empty = CandleHead.from_config(checked)
    expected = empty.state_dict()
    configured = ("the head's configuration (" + ", ".join(
        f"{k}={checked[k]}" for k in ("n_base", "n_new", "dim", "has_text")) + ")")
    for name in state:
        if name not in expected:
            raise _Bad(f"head_.{name}", f"is not a tensor of {configured}")
    if before_visual_gain:
        state = {"visual_gain": expected["visual_gain"].numpy(), **state}
    for name, tensor in expected.items():
        if name not in state:
            raise _Bad(f"head_.{name}", f"is missing; {configured} has it")
        arr = state[name]
        if arr.shape != tuple(tensor.shape):
            raise _Bad(f"head_.{name}", f"has shape {arr.shape}; {configured} needs "
                       f"{tuple(tensor.shape)} (the head's configuration and tensors do "
                       "not fit together)")
        if arr.dtype != np.float32:
            raise _Bad(f"head_.{name}", f"has dtype {arr.dtype}; the head's tensors are "
                       "float32")
        if not np.isfinite(arr).all():
            raise _Bad(f"head_.{name}", "contains NaN or infinity")
        limit = _MAX_HEAD_ROW if name in _HEAD_ROWS else _MAX_HEAD_WEIGHT
        if arr.size and np.abs(arr).max() > limit:
            raise _Bad(f"head_.{name}", f"has values beyond +-{limit:g} (up to "
                       f"{np.abs(arr).max():.3g}), more than a fitted head holds")
    gain = state["visual_gain"]
    if gain.size and not (gain.min() == 1 and gain.max() <= MAX_ATTENUATION):
        raise _Bad("head_.visual_gain", f"ranges from {gain.min():.3g} to {gain.max():.3g}; "
                   f"a fitted head's gains are attenuations relative to the smallest: from "
                   f"exactly 1 to at most {MAX_ATTENUATION:g}")
    empty.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return empty.eval()


def _rules_of(name):
    if name == "CandleClassifier":
        return _RULES["CandleClassifier"]
    if name in _PEER_FITTED:
        return [*_RULES["peer"], *_RULES.get(name, [])]
    return []


def _checked_fitted(name, values, params):
    """``values`` (fitted attribute -> value) as the estimator ``name`` would have
    fitted them with ``params``, or _Bad naming the first that is not: a missing
    attribute, one of the wrong type, dtype, shape or range (_CHECKS), or one that
    disagrees with the others (_RULES). Returns the values, numbers as Python numbers,
    defaults filled in."""
    attrs = _FITTED[name]
    if not any(a in values for a in attrs) and "head_" not in values:
        return dict(values)  # not fitted
    out = dict(values)
    for attr, default in _OPTIONAL.items():
        if attr in attrs and attr not in out and default is not None:
            out[attr] = default
    checks = {**_CHECKS, **_CHECKS_OF.get(name, {})}
    dims: dict[str, int] = {}
    for attr in sorted(set(attrs) | set(_SKLEARN_PRIVATE), key=list(_CHECKS).index):
        if attr not in out:
            if attr in _OPTIONAL:
                continue
            raise _Bad(attr, "is missing (the file holds a fitted estimator without it)")
        try:
            out[attr] = checks[attr](out[attr], dims)
        except (TypeError, ValueError) as exc:
            raise _Bad(attr, str(exc)) from None
    if name in _SPECIAL and any(a not in values for a in _SPECIAL[name]):
        missing = [a for a in _SPECIAL[name] if a not in values]
        raise _Bad(missing[0], "is missing (the file holds a fitted estimator without it)")
    namespace = SimpleNamespace(**params, **out)
    for field, holds, message in _rules_of(name):
        if not holds(namespace):
            raise _Bad(field, message)
    return out


# ------------------------------------------------------------------ the head as data
def head_to_state(head: CandleHead) -> dict:
    """The head as plain data: ``{"config": <JSON-able dict>, "state": {name: ndarray}}``.

    What :func:`save` writes for ``head_``; a ``__getstate__`` that swaps the torch module
    for this makes the classifier storable by ``skops.io`` (numpy arrays and dicts only).
    """
    return {"config": head.get_config(),
            "state": {k: v.detach().cpu().numpy() for k, v in head.state_dict().items()}}


def head_from_state(state: dict) -> CandleHead:
    """The head back from :func:`head_to_state`'s output (on CPU, in eval mode)."""
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state["state"].items()}
    return CandleHead.from_config(state["config"], tensors)


# ------------------------------------------------------------------ values
class _Writer:
    """Encodes values as JSON, numeric arrays as named tensors."""

    def __init__(self):
        self.tensors: dict[str, np.ndarray] = {}
        self.estimators: dict[int, str] = {}  # id(estimator) -> path of its node

    def value(self, value, path):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
            return int(value)
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else {"__float__": repr(float(value))}
        if isinstance(value, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"__tuple__": [self.value(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"cannot store {path}: a dict with non-string keys")
            return {"__dict__": {k: self.value(v, f"{path}[{k!r}]") for k, v in value.items()}}
        if isinstance(value, np.ndarray):
            return self.array(value, path)
        if isinstance(value, BaseEstimator):
            if id(value) in self.estimators:  # shared, e.g. the pipeline's embedder
                return {"__ref__": self.estimators[id(value)]}
            return {"__estimator__": self.estimator(value, path)}
        raise TypeError(f"cannot store {path} of type {type(value).__module__}."
                        f"{type(value).__qualname__}; candle_sklearn.save stores arrays, "
                        "numbers, strings, lists, tuples, dicts and the package's estimators")

    def array(self, arr, path):
        if arr.dtype.kind in "biuf":
            self.tensors[path] = np.require(arr, requirements="C")  # keeps 0-d arrays 0-d
            return {"__tensor__": path, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        if arr.dtype.kind == "U" or (arr.dtype.kind == "O"
                                     and all(isinstance(v, str) for v in arr.flat)):
            return {"__strings__": arr.ravel().tolist(), "dtype": arr.dtype.str,
                    "shape": list(arr.shape)}
        raise TypeError(f"cannot store {path}: an array of dtype {arr.dtype} (numbers and "
                        "strings only)")

    def estimator(self, est, path):
        name = type(est).__name__
        if _CLASSES.get(name) is not type(est):
            raise TypeError(f"cannot store {path}: {type(est).__qualname__} is not one of "
                            f"the estimators candle_sklearn.save supports: {sorted(_CLASSES)}")
        self.estimators[id(est)] = path
        node: dict[str, Any] = {"class": name}
        if isinstance(est, Pipeline):
            node["steps"] = [[step, self.value(s, f"{path}.steps.{step}")]
                             for step, s in est.steps]
            params = {k: v for k, v in est.get_params(deep=False).items() if k != "steps"}
        else:
            params = est.get_params(deep=False)
            if "templates" in params:
                params["templates"] = _templates_as_text(params["templates"], path)
        node["params"] = {k: self.value(v, f"{path}.{k}") for k, v in params.items()}
        node["fitted"] = self.fitted(est, name, path)
        if isinstance(est, CandleClassifier) and hasattr(est, "head_"):
            head = head_to_state(est.head_)
            node["head"] = {"config": head["config"],
                            "state": {k: self.array(v, f"{path}.head_.{k}")
                                      for k, v in head["state"].items()}}
        if isinstance(est, ClipEmbedder):
            node["weights"] = _weights_reference(est)
        return node

    def fitted(self, est, name, path):
        params = set(est.get_params(deep=False))
        known = set(_FITTED[name]) | set(_SPECIAL.get(name, ())) | set(_SKLEARN_PRIVATE)
        if unknown := sorted(set(vars(est)) - params - known):
            raise TypeError(f"cannot store {path}: candle_sklearn.io does not know the "
                            f"{name} attribute(s) {unknown}; add them to io._FITTED")
        values = {attr: getattr(est, attr)
                  for attr in (*_FITTED[name], *_SKLEARN_PRIVATE) if attr in vars(est)}
        try:  # what load would refuse is not written
            if "head_" in vars(est) and name in _SPECIAL:
                values["head_"] = _head_from_data(**head_to_state(est.head_))
            _checked_fitted(name, values, est.get_params(deep=False))
        except _Bad as bad:
            raise ValueError(f"cannot store {path}: {path}.{bad.field} {bad.message}"
                             ) from None
        values.pop("head_", None)
        return {attr: self.value(value, f"{path}.{attr}") for attr, value in values.items()}


def _templates_as_text(templates, path):
    """Callables (open_clip's lambdas) become the format strings they are equivalent to."""
    try:
        if templates is None or isinstance(templates, str):
            return templates
        if callable(templates):
            return as_format_string(templates)
        return type(templates)(as_format_string(t) for t in templates)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot store {path}.templates: {exc}; set templates to format "
                        "strings (or a preset name) before saving") from exc


class _Reader:
    def __init__(self, tensors, where, device, pretrained, check_weights):
        self.tensors = tensors
        self.where = where
        self.device = device
        self.pretrained = pretrained
        self.check_weights = check_weights
        self.estimators: dict[str, BaseEstimator] = {}
        self.used: set[str] = set()

    def fail(self, message):
        """The one-line error for ``message`` (which names the field), in this file."""
        return InvalidModelFileError(f"{self.where}: {' '.join(str(message).split())}")

    def value(self, enc, path):
        if enc is None or isinstance(enc, (bool, int, float, str)):
            return enc
        if isinstance(enc, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(enc)]
        if not isinstance(enc, dict):
            raise self.fail(f"{path}: unexpected entry {_short(enc)}")
        if "__tensor__" in enc or "__strings__" in enc:
            return self.array(enc, path)
        if len(enc) == 1:
            (tag, body), = enc.items()
            if tag == "__float__" and body in ("nan", "inf", "-inf"):
                return float(body)
            if tag == "__tuple__" and isinstance(body, list):
                return tuple(self.value(v, f"{path}[{i}]") for i, v in enumerate(body))
            if tag == "__dict__" and isinstance(body, dict):
                return {k: self.value(v, f"{path}[{k!r}]") for k, v in body.items()}
            if tag == "__estimator__":
                return self.estimator(body, path)
            if tag == "__ref__" and isinstance(body, str) and body in self.estimators:
                return self.estimators[body]
        raise self.fail(f"{path}: unknown entry {_short(enc)}")

    def array(self, enc, path):
        try:
            shape, dtype = tuple(int(s) for s in enc["shape"]), np.dtype(enc["dtype"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(f"{path}: bad array description {_short(enc)} ({exc})") from None
        if "__tensor__" in enc:
            name = enc["__tensor__"]
            if name not in self.tensors:
                raise self.fail(f"{path}: tensor {name!r} is missing from the file")
            arr = self.tensors[name]
            self.used.add(name)
            if arr.shape != shape or arr.dtype != dtype:
                raise self.fail(f"{path}: tensor {name!r} has shape {arr.shape} and dtype "
                                f"{arr.dtype}, the description says {shape} and {dtype}")
            return arr
        values = enc["__strings__"]
        if (dtype.kind not in "UO" or not isinstance(values, list)
                or not all(isinstance(v, str) for v in values)
                or len(values) != math.prod(shape)
                or (dtype.kind == "U" and max(map(len, values), default=0) > dtype.itemsize // 4)):
            raise self.fail(f"{path}: bad string array {_short(enc)}")
        out = np.empty(len(values), dtype=dtype)
        out[:] = values
        return out.reshape(shape)

    def estimator(self, node, path):
        if not isinstance(node, dict) or not isinstance(node.get("params"), dict):
            raise self.fail(f"{path}: bad estimator entry {_short(node)}")
        name = node.get("class")
        if name not in _CLASSES:
            raise self.fail(f"{path}: class {name!r} is not one this version loads "
                            f"({sorted(_CLASSES)})")
        cls = _CLASSES[name]
        params = {k: self.value(v, f"{path}.{k}") for k, v in node["params"].items()}
        if unknown := sorted(set(params) - set(cls._get_param_names())):
            raise self.fail(f"{path}: {name} has no parameter(s) {unknown} in this version "
                            "of candle_sklearn (the file may come from a newer one)")
        if issubclass(cls, Pipeline):
            steps = node.get("steps")
            if not isinstance(steps, list) or not all(
                    isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) for s in steps):
                raise self.fail(f"{path}: bad pipeline steps")
            params["steps"] = [(step, self.value(s, f"{path}.steps.{step}"))
                               for step, s in steps]
        if self.device is not None and "device" in params:
            params["device"] = self.device
        elif isinstance(params.get("device"), str):
            device, why = nearest_device(params["device"])
            if why:
                warnings.warn(f"{self.where}: {path} was saved with device="
                              f"{params['device']!r}; this machine has {why}, so it uses "
                              f"device={device!r} (pass load(..., device=...) to choose)",
                              UserWarning, stacklevel=4)
                params["device"] = device
        if cls is ClipEmbedder and self.pretrained is not None:
            params["pretrained"] = self.pretrained
        est = cls(**params)
        try:
            est._validate_params()
        except (TypeError, ValueError) as exc:
            raise self.fail(f"{path}: {_line(exc)}") from None
        self.estimators[path] = est
        if bad := sorted(k for k, v in params.items()
                         if isinstance(v, float) and not math.isfinite(v)):
            raise self.fail(f"{path}.{bad[0]} must be finite, got {params[bad[0]]}")
        n_jobs = params.get("n_jobs")
        if n_jobs is not None and not 0 < abs(n_jobs) < 2**31:  # what fit refuses
            raise self.fail(f"{path}.n_jobs must be None, a thread count or negative (-1: "
                            f"every core), got {_short(n_jobs, 40)}")
        if isinstance(params.get("device"), str):
            try:
                resolve_device(params["device"])
            except ValueError as exc:
                raise self.fail(f"{path}.device is not usable here: {_line(exc)}") from None
        fitted = node.get("fitted", {})
        if not isinstance(fitted, dict):
            raise self.fail(f"{path}: bad fitted attributes")
        allowed = set(_FITTED[name]) | set(_SKLEARN_PRIVATE)
        if unknown := sorted(set(fitted) - allowed):
            raise self.fail(f"{path}: {name} has no fitted attribute(s) {unknown} in this "
                            "version of candle_sklearn")
        values = {attr: self.value(enc, f"{path}.{attr}") for attr, enc in fitted.items()}
        try:
            if "head" in node and name in _SPECIAL:
                values["head_"] = self.head(node["head"], path)
            values = _checked_fitted(name, values, est.get_params(deep=False))
        except _Bad as bad:
            raise self.fail(f"{path}.{bad.field} {bad.message}") from None
        for attr, value in values.items():
            setattr(est, attr, value)
        if isinstance(est, Pipeline):
            self.check_steps(est, path)
        if isinstance(est, ClipEmbedder) and self.check_weights:
            reference = node.get("weights")
            if not isinstance(reference, dict) or set(reference) != {
                    "model_name", "pretrained", "fingerprint"}:
                raise self.fail(f"{path}: bad weights reference {_short(reference)}")
            _check_weights(est, reference, self.where)
        return est

    def head(self, head, path):
        if not isinstance(head, dict) or not isinstance(head.get("config"), dict) \
                or not isinstance(head.get("state"), dict):
            raise self.fail(f"{path}: bad head entry")
        state = {k: self.array(v, f"{path}.head_.{k}") for k, v in head["state"].items()}
        return _head_from_data(head["config"], state, head.get("before_visual_gain") is True)

    def check_steps(self, pipe, path):
        """Each step's input is as wide as the previous step's output."""
        steps = [(name, s) for name, s in pipe.steps if s not in (None, "passthrough")]
        for (_, before), (name, after) in itertools.pairwise(steps):
            width = getattr(before, "embed_dim_", None)
            if width is not None and getattr(after, "n_features_in_", width) != width:
                raise self.fail(f"{path}.steps.{name}.n_features_in_: "
                                f"{after.n_features_in_} differs from the embed_dim_ "
                                f"({width}) of the step before it")


def _line(exc, limit=300):
    """An exception's message on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------ public API
def save(estimator: BaseEstimator, path: str | os.PathLike) -> None:
    """Save a fitted estimator to ``path`` without pickle (safetensors + JSON).

    Parameters
    ----------
    estimator : CandleClassifier, ZeroShotClassifier, ClipEmbedder, or a Pipeline of them
        (such as :func:`~candle_sklearn.make_candle_pipeline`'s). CLIP weights are stored
        by reference (model name, ``pretrained``, fingerprint), never copied.
    path : str or path-like
        The file to write (conventionally ``*.safetensors``); replaced atomically.

    Raises
    ------
    TypeError
        Naming the first value that cannot be stored without pickle (for instance an
        ``encoder`` that is not a :class:`~candle_sklearn.ClipEmbedder`, or a template
        callable that is not equivalent to a format string).
    ValueError
        Naming a fitted value that :func:`load` would refuse (not finite, out of its
        range, or disagreeing with the others).
    OSError
        Naming ``path`` and what is wrong with it (a folder, in a folder that does not
        exist, not writable), before anything is written.
    """
    import sklearn

    from ._version import __version__

    path, given = _save_target(path)
    writer = _Writer()
    node = writer.value(estimator, "estimator")
    if not isinstance(node, dict) or "__estimator__" not in node:
        raise TypeError(f"candle_sklearn.save saves estimators, got {type(estimator).__name__}")
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "written_by": {"candle_sklearn": __version__,
                          "scikit-learn": sklearn.__version__, "torch": torch.__version__},
           "estimator": node["__estimator__"]}
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as exc:
        raise type(exc)(f"cannot save to {given}: cannot create a file in the folder "
                        f"{os.fspath(path.parent)!r} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        safetensors.numpy.save_file(writer.tensors, tmp,
                                    metadata={_METADATA_KEY: json.dumps(doc, allow_nan=False)})
        # the mode open() would give: an existing file's own, else the umask's (mkstemp
        # makes 0600)
        os.chmod(tmp, (os.stat(path).st_mode & 0o777) if path.exists()
                 else 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise type(exc)(f"cannot save to {given}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    """The process's umask: from /proc on Linux, else read by setting it and setting it
    back at once (a moment in which another thread's new files would get 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _save_target(path):
    """``path`` as a Path, and the path as the caller gave it; or an OSError that names
    it and says what is wrong with it, before anything is written."""
    given = repr(os.fspath(path))
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot save to {given}: it is a folder; give the path of "
                                f"the file to write, such as "
                                f"{os.fspath(target / 'model.safetensors')!r}")
    folder = target.parent
    if not folder.exists():
        raise FileNotFoundError(f"cannot save to {given}: the folder {os.fspath(folder)!r} "
                                "does not exist; create it first")
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot save to {given}: {os.fspath(folder)!r} is a "
                                 "file, not a folder")
    return target, given


def read_header(path: str | os.PathLike) -> dict:
    """The JSON document of a model file (format version, writer versions, estimator
    description), upgraded to the current format version; reads no tensor data."""
    return _read(path)[0]


def _read(path):
    where = os.fspath(path)
    try:
        with safetensors.safe_open(where, "np") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors' own error type
        raise InvalidModelFileError(f"{where}: not a readable safetensors file ({exc})") from None
    if _METADATA_KEY not in metadata:
        raise InvalidModelFileError(f"{where}: a safetensors file, but not a candle_sklearn "
                                    "model (no 'candle_sklearn' entry in its metadata)")
    try:
        doc = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise InvalidModelFileError(f"{where}: the model description is not valid JSON "
                                    f"({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidModelFileError(f"{where}: not a candle_sklearn model description")
    return _upgrade(doc, where), names


def _upgrade(doc, where):
    version = doc.get("format_version")
    writer = (doc.get("written_by") or {}).get("candle_sklearn", "an unknown version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidModelFileError(f"{where}: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise InvalidModelFileError(
            f"{where}: written by candle_sklearn {writer} in file format {version}; this "
            f"version reads formats {MIN_FORMAT_VERSION} to {FORMAT_VERSION}: upgrade "
            "candle_sklearn to load it")
    if version < MIN_FORMAT_VERSION:
        raise InvalidModelFileError(
            f"{where}: file format {version} (candle_sklearn {writer}) is no longer "
            f"supported; the oldest this version reads is {MIN_FORMAT_VERSION}: load it "
            "with an older candle_sklearn and refit or save it again")
    while version < FORMAT_VERSION:
        doc = _MIGRATIONS[version](doc)
        version = doc["format_version"]
    return doc


def load(path: str | os.PathLike, *, device: str | None = None,
         pretrained: str | os.PathLike | None = None, check_weights: bool = True):
    """Load an estimator saved by :func:`save`; never executes code from the file.

    Parameters
    ----------
    path : str or path-like
    device : str, default=None
        Sets the ``device`` of every loaded estimator (e.g. ``"cpu"``). None keeps the
        saved one, except that a CUDA device on a machine without CUDA becomes ``"cpu"``
        (with a warning).
    pretrained : str or path-like, default=None
        Where the embedder's weights are on this machine, when not where they were at
        saving (a moved checkpoint file, or an open_clip folder with or without
        ``local-dir:``; for a bundled model, ``"bundled"``, its folder or a checkpoint
        file of its architecture). They must be the same weights: their fingerprint is
        checked.
    check_weights : bool, default=True
        Load the embedder's weights now and check their fingerprint; raises
        :class:`WeightsMismatchError` when they differ or cannot be loaded. False skips
        the check (the embedder then loads its weights at first use, unchecked).

    Returns
    -------
    estimator : the saved estimator, fitted as it was saved

    Raises
    ------
    InvalidModelFileError
        Not a model file, a format version this package cannot read, an unknown class,
        parameter or attribute, tensors that do not match their description, or a
        fitted value that no fit could have given (not finite, out of its range, of
        another type, dtype or shape, missing, or disagreeing with the others): the
        message names the file and the field.
    WeightsMismatchError
        See ``check_weights``; :class:`WeightsNotFoundError`, a subclass (and a
        ``FileNotFoundError``), when the weights' file or folder is not here.
    ValueError
        ``device`` is not one this machine can run on.
    """
    if device is not None:
        try:
            resolve_device(device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"load(device={device!r}): {_line(exc)}") from None
    doc, _ = _read(path)
    where = os.fspath(path)
    tensors = safetensors.numpy.load_file(where)  # (safe_open's get_tensor turns 0-d into 1-d)
    reader = _Reader(tensors, where, device, pretrained, check_weights)
    try:
        est = reader.value({"__estimator__": doc.get("estimator")}, "estimator")
    except RecursionError:
        raise InvalidModelFileError(f"{where}: the model description nests too deeply") from None
    if extra := sorted(set(tensors) - reader.used):
        raise InvalidModelFileError(f"{where}: tensors {extra[:5]} are not described in the "
                                    "model description")
    return est
