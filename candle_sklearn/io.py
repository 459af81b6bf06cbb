"""Save and load fitted models without pickle: tensors in safetensors, the rest in JSON.

A model file is one safetensors file. Its header metadata holds, under the key
``"candle_sklearn"``, a JSON document that describes the estimator (class names from an
allow-list, parameters, fitted attributes, the head's configuration); every numeric array
is a tensor of the file, referenced from the JSON by name, shape and dtype. Loading parses
JSON and reads tensors: no pickle, no ``eval``, no import of a name read from the file.

CLIP weights are never stored. A :class:`~candle_sklearn.ClipEmbedder` is stored by
reference: model name, ``pretrained`` (tag, file or folder) and a fingerprint of the
weights, which :func:`load` checks against the weights found on the loading machine.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from ._devices import nearest_device
from ._head import CandleHead
from .baselines import PEERS, ZeroShotClassifier
from .classifier import CandleClassifier
from .embedder import ClipEmbedder
from .exceptions import InvalidModelFileError, WeightsMismatchError
from .pipeline import CandlePipeline
from .templates import as_format_string

__all__ = ["FORMAT_VERSION", "save", "load", "read_header", "head_to_state", "head_from_state"]

FORMAT = "candle_sklearn"
FORMAT_VERSION = 1
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
                    "calibration_", "n_features_in_", "feature_names_in_")
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

# File-format upgrades: _MIGRATIONS[v] turns a version-v document into version v + 1.
_MIGRATIONS: dict[int, Any] = {}


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
    except Exception as exc:  # noqa: BLE001 - missing file, offline tag, unknown model...
        raise WeightsMismatchError(
            f"{where}: {saved}; these weights cannot be loaded here "
            f"({type(exc).__name__}: {exc}). Pass load(..., pretrained=<the same weights "
            "here>) or check_weights=False to load without the embedder's weights."
        ) from exc
    if reference["fingerprint"] is not None and here != reference["fingerprint"]:
        hint = (" pretrained=None means random weights, which differ in every process."
                if reference["pretrained"] is None else "")
        raise WeightsMismatchError(
            f"{where}: {saved}, but ClipEmbedder(model_name={embedder.model_name!r}, "
            f"pretrained={embedder.pretrained!r}) here has weights {here}: its image "
            f"features would not match what the classifier was trained on.{hint}")


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
        return {attr: self.value(getattr(est, attr), f"{path}.{attr}")
                for attr in (*_FITTED[name], *_SKLEARN_PRIVATE) if attr in vars(est)}


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
        return InvalidModelFileError(f"{self.where}: {message}")

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
            raise self.fail(f"{path}: {exc}") from None
        self.estimators[path] = est
        fitted = node.get("fitted", {})
        if not isinstance(fitted, dict):
            raise self.fail(f"{path}: bad fitted attributes")
        allowed = set(_FITTED[name]) | set(_SKLEARN_PRIVATE)
        if unknown := sorted(set(fitted) - allowed):
            raise self.fail(f"{path}: {name} has no fitted attribute(s) {unknown} in this "
                            "version of candle_sklearn")
        for attr, enc in fitted.items():
            setattr(est, attr, self.value(enc, f"{path}.{attr}"))
        if isinstance(est, CandleClassifier) and fitted and "zero_shot_weight_" not in fitted:
            est.zero_shot_weight_ = 0.0  # written before the blend existed: none
        if "head" in node:
            est.head_ = self.head(node["head"], path)
        if isinstance(est, CandleClassifier) and fitted:
            self.check_classifier(est, path)
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
        try:
            return head_from_state({"config": head["config"], "state": state})
        except Exception as exc:  # noqa: BLE001 - config and tensors disagree
            raise self.fail(f"{path}: the head's configuration and tensors do not fit "
                            f"together: {exc}") from None

    def check_classifier(self, clf, path):
        """The fitted attributes agree with each other and with the head."""
        try:
            n = len(clf.classes_)
            problems = [
                (clf.class_counts_.shape != (n,), "class_counts_ and classes_ differ in length"),
                (sorted(clf.head_order_.tolist()) != list(range(n)),
                 "head_order_ is not a permutation of the classes"),
                (clf.head_.n_classes != n, f"the head has {clf.head_.n_classes} classes, "
                 f"classes_ has {n}"),
                (clf.head_.visual_prototypes.shape[1] != clf.n_features_in_,
                 "the head's dimension differs from n_features_in_"),
                (clf.text_features_ is not None
                 and clf.text_features_.shape != (n, clf.n_features_in_),
                 "text_features_ does not have shape (n_classes, n_features_in_)"),
                (not np.array_equal(clf.new_classes_, clf.classes_[clf.class_counts_ == 0]),
                 "new_classes_ disagrees with class_counts_"),
            ]
        except (AttributeError, TypeError, ValueError) as exc:
            raise self.fail(f"{path}: incomplete fitted state ({exc})") from None
        if bad := [msg for wrong, msg in problems if wrong]:
            raise self.fail(f"{path}: inconsistent fitted state: {'; '.join(bad)}")


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
    """
    import sklearn

    from ._version import __version__

    writer = _Writer()
    node = writer.value(estimator, "estimator")
    if not isinstance(node, dict) or "__estimator__" not in node:
        raise TypeError(f"candle_sklearn.save saves estimators, got {type(estimator).__name__}")
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "written_by": {"candle_sklearn": __version__,
                          "scikit-learn": sklearn.__version__, "torch": torch.__version__},
           "estimator": node["__estimator__"]}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        safetensors.numpy.save_file(writer.tensors, tmp,
                                    metadata={_METADATA_KEY: json.dumps(doc, allow_nan=False)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
        saving (a moved checkpoint file or ``local-dir:`` folder). They must be the same
        weights: their fingerprint is checked.
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
        parameter or attribute, or tensors that do not match their description.
    WeightsMismatchError
        See ``check_weights``.
    """
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
