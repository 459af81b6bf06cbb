"""Property-based tests of the classifier side (issue 10): shapes, dtypes and containers
of the features, label kinds, class tables, extreme but legal parameters, predictions on
any input, and add_classes.

The invariant everywhere: a correct result or a clean error (a ValueError or
TrainingDivergedError raised on purpose by candle_sklearn or scikit-learn's validation),
never a raw error from torch or numpy. A result has finite probabilities whose rows sum
to 1 and whose columns follow ``classes_``, ``classes_`` of the labels' kind, labels of
that type from ``predict``, and per-sample scores (a row predicted alone gets bitwise
what it gets in a batch). Where an input is valid by a small written-down specification
(``valid_*`` below), an error is a failure too. Fits are tiny (two steps, a few samples).
660 generated cases, ~30-60 s on 2 cores. Runs are reproducible (derandomized);
CANDLE_FUZZ_RANDOM=1 explores new cases.
"""

import copy
import functools
import os
import traceback
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from candle_sklearn import CandleClassifier  # noqa: E402
from candle_sklearn.exceptions import TrainingDivergedError  # noqa: E402

from ._fuzz import fuzz  # noqa: E402


TINY = dict(max_steps=2, batch_size=8, device="cpu", n_jobs=1, calibration_repeats=1,
            random_state=0)


def tiny(**params):
    return CandleClassifier(**{**TINY, **params})


def fit_quietly(clf, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. auto bias with one base class, names
        return clf.fit(X, y)


def _ours(filename):
    return "candle_sklearn" in filename or f"{os.sep}sklearn{os.sep}" in filename


def assert_clean(exc):
    """A deliberate error, raised by candle_sklearn or by scikit-learn's validation, that
    says something: not one from torch or numpy internals."""
    event(f"refused: {type(exc).__name__}")  # --hypothesis-show-statistics counts them
    assert isinstance(exc, (ValueError, TypeError, TrainingDivergedError, NotFittedError)), \
        f"raw error: {exc!r}"
    where = traceback.extract_tb(exc.__traceback__)[-1].filename
    assert _ours(where), f"raw error from {where}: {exc!r}"
    if isinstance(exc, TypeError):  # scikit-learn's type checks only, never ours
        assert "candle_sklearn" not in where, f"raw TypeError: {exc!r}"
    assert len(str(exc)) > 15, f"error says nothing: {exc!r}"


def rows(X, idx):
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    return np.asarray(X, dtype=object)[idx].tolist() if isinstance(X, list) else X[idx]


def check_result(clf, X, kind=None):
    """The invariants of a fitted model's predictions on ``X``; returns the probabilities."""
    n, n_classes = len(X), len(clf.classes_)
    if kind is not None:
        assert clf.classes_.dtype.kind == kind, (clf.classes_.dtype, kind)
    proba = clf.predict_proba(X)
    assert proba.shape == (n, n_classes) and proba.dtype == np.float64
    assert np.isfinite(proba).all(), "non-finite probabilities"
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=0, atol=1e-9)
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype and pred.shape == (n,)
    col = np.searchsorted(clf.classes_, pred)
    assert (clf.classes_[col] == pred).all()
    assert (proba[np.arange(n), col] == proba.max(axis=1)).all()
    assert np.isfinite(clf.new_class_bias_)
    for i in sorted({0, n - 1, n // 2}):  # a row alone gets what it gets in the batch
        alone = clf.predict_proba(rows(X, [i]))
        assert alone[0].tobytes() == proba[i].tobytes(), f"row {i} depends on the batch"
    event("result")
    return proba


# ---------------------------------------------------------------- features and labels
LABELS = {
    "int": np.array([-5, 0, 2, 7]),
    "uint8": np.array([0, 255, 1, 2], np.uint8),
    "str": np.array(["b", "a", "zebra", "é"]),
    "object str": np.array(["b", "a", "zebra", "é"], dtype=object),
    "bool": np.array([True, False]),
    "integral float": np.array([0.0, 1.0, -3.0, 2.0]),
    "mixed": np.array(["a", 0, "b", 1], dtype=object),
    "continuous": np.array([0.5, 1.5, 2.5, 3.25]),
    "object int": np.array([0, 1, 2, 3], dtype=object),
}
# drawn uniformly: the usual cases are listed more than once
X_DTYPES = ["float64", "float64", "float32", "float32", "float16", "int64", "int8", "uint8",
            "bool", "object", "complex128"]
X_REGIMES = ["normal", "normal", "normal", "constant columns", "duplicate rows", "constant",
             "zero", "nan", "inf", "one-hot"]


def valid_labels(y):
    """True: a classifier must accept these labels (as numpy reads them); False: refuse
    them; None: either."""
    if y.dtype.kind == "f":
        return bool(np.all(y == np.round(y)))
    if y.dtype.kind != "O":
        return True
    kinds = {isinstance(v, str) for v in y.tolist()}
    if kinds == {False}:
        return None  # numbers as objects: scikit-learn calls them "unknown"; either is fine
    return kinds == {True}  # mixed strings and numbers: a clean error


@st.composite
def features(draw, n, dim):
    """(X as given, X as float64 or None where it is not numeric)."""
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = np.dtype(draw(st.sampled_from(X_DTYPES)))
    regime = draw(st.sampled_from(X_REGIMES))
    exponent = draw(st.one_of(st.integers(-30, 30), st.sampled_from([-300, 300])))
    values = gen.normal(size=(n, dim)) * 10.0 ** exponent
    if regime == "constant columns" and dim:
        values[:, gen.integers(0, dim, max(1, dim // 2))] = 3.0
    elif regime == "duplicate rows" and n:
        values = values[gen.integers(0, n, n)]
    elif regime == "constant":
        values[:] = 0.5
    elif regime == "zero":
        values[:] = 0.0
    elif regime in ("nan", "inf") and values.size:
        values.flat[gen.integers(0, values.size)] = np.nan if regime == "nan" else -np.inf
    elif regime == "one-hot" and dim:
        values = np.eye(dim)[gen.integers(0, dim, n)]
    if dtype.kind in "iu":
        values = np.clip(np.nan_to_num(np.round(values)), np.iinfo(dtype).min,
                         np.iinfo(dtype).max)
    if dtype.kind == "b":
        values = values > 0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        X = values.astype(dtype)
    as_float = None if dtype.kind == "c" else X.astype(np.float64)
    container = draw(st.sampled_from(["array", "frame", "list"]))
    if container == "frame":
        X = pd.DataFrame(X, columns=[f"f{j}" for j in range(dim)])
    elif container == "list":
        X = X.tolist()
    return X, as_float


def valid_features(X, min_rows=1):
    return (X is not None and X.ndim == 2 and X.shape[0] >= min_rows and X.shape[1] >= 2
            and np.isfinite(X).all() and np.abs(X).max() > 0)


@fuzz(180)
@given(data=st.data(), n=st.integers(0, 14), dim=st.integers(0, 48),
       kind=st.sampled_from(sorted(LABELS) + ["int", "str", "object str", "bool"]),
       with_text=st.booleans(),
       context=st.sampled_from(["isolated", "batch"]),
       y_container=st.sampled_from(["array", "list", "series"]))
def test_any_features_and_labels_give_a_result_or_a_clean_error(data, n, dim, kind,
                                                                 with_text, context,
                                                                 y_container):
    X, as_float = data.draw(features(n, dim))
    palette = LABELS[kind]
    y = palette[data.draw(st.lists(st.integers(0, len(palette) - 1), min_size=n,
                                   max_size=n))] if n else palette[:0]
    n_classes = len(set(y.tolist()))
    text = (np.random.default_rng(n).normal(size=(n_classes, dim)) if with_text and dim
            else None)
    y_in = {"array": y, "list": y.tolist(), "series": pd.Series(y)}[y_container]
    y = np.asarray(y_in)  # what the labels are, once read (a list of mixed items: strings)
    want = valid_labels(y)
    if want is not None:
        want = want and n_classes >= 2 and valid_features(as_float)
    clf = tiny(context=context, text_features=text, new_class_bias=0.0)
    try:
        fit_quietly(clf, X, y_in)
    except Exception as exc:  # noqa: BLE001 - judged below
        assert_clean(exc)
        assert want is not True, f"refused valid input: {exc!r}"
        mixed = y.dtype.kind == "O" and len({isinstance(v, str) for v in y.tolist()}) > 1
        if mixed and valid_features(as_float):  # the features are checked first
            assert "mix strings and numbers" in str(exc)
        return
    assert want is not False, f"accepted invalid input ({kind} labels, X {dim} wide)"
    check_result(clf, X, kind=y.dtype.kind)
    np.testing.assert_array_equal(np.sort(clf.classes_), clf.classes_)
    assert set(clf.classes_.tolist()) == set(y.tolist())
    if hasattr(X, "columns"):
        assert list(clf.feature_names_in_) == list(X.columns)


# ---------------------------------------------------------------- class tables
def label_values(kind, gen, count):
    picks = gen.choice(60, count, replace=False)
    if kind == "int":
        return picks.astype(np.int64)
    if kind == "negative int":
        return (-picks - 1).astype(np.int32)
    words = np.array([f"class {p}" if p % 3 else f"ü{p}" for p in picks])
    return words.astype(object) if kind == "object str" else words


@fuzz(130)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["int", "negative int", "str",
                                                             "object str"]),
       counts=st.lists(st.integers(1, 4), min_size=1, max_size=5),
       n_new=st.integers(0, 3), dim=st.integers(2, 32), names=st.booleans(),
       as_list=st.booleans(), context=st.sampled_from(["isolated", "batch"]),
       bias=st.sampled_from(["auto", "auto", 0.0, 2.5, -4.0]),
       init=st.sampled_from(["text", "text", "visual"]), tied=st.booleans(),
       zero_shot=st.sampled_from(["auto", "auto", 0.0, 0.5, 1.0]))
def test_class_tables_in_any_order(seed, kind, counts, n_new, dim, names, as_list,
                                   context, bias, init, tied, zero_shot):
    gen = np.random.default_rng(seed)
    labels = label_values(kind, gen, len(counts) + n_new)
    base, new = labels[:len(counts)], labels[len(counts):]
    y = np.repeat(base, counts)
    y = y[gen.permutation(len(y))]
    centres = gen.normal(size=(len(base), dim))
    X = centres[[base.tolist().index(v) for v in y.tolist()]] + 0.3 * gen.normal(
        size=(len(y), dim))
    given_order = labels[gen.permutation(len(labels))]
    text = gen.normal(size=(len(labels), dim)).astype(np.float32)
    class_names = [f"name of {v}" for v in given_order] if names else None
    clf = tiny(classes=given_order.tolist() if as_list else given_order,
               text_features=text, class_names=class_names, context=context,
               new_class_bias=bias, virtual_init=init, tied_text=tied,
               zero_shot_weight=zero_shot)
    try:
        fit_quietly(clf, X, y)
    except Exception as exc:  # noqa: BLE001 - judged below
        assert_clean(exc)
        assert len(labels) < 2 or (tied and init == "visual"), f"refused: {exc!r}"
        return
    assert len(labels) >= 2 and not (tied and init == "visual")
    kind_given = np.asarray(given_order.tolist() if as_list else given_order).dtype.kind
    check_result(clf, X, kind=kind_given)
    assert clf.classes_.tolist() == sorted(labels.tolist())
    at = [given_order.tolist().index(c) for c in clf.classes_.tolist()]
    assert clf.text_features_.tobytes() == text[at].tobytes()  # rows follow their class
    if names:
        assert clf.class_names_.tolist() == [class_names[i] for i in at]
    assert clf.class_counts_.tolist() == [int(np.sum(y == c)) for c in clf.classes_]
    assert sorted(clf.new_classes_.tolist()) == sorted(new.tolist())
    assert sorted(clf.base_classes_.tolist()) == sorted(base.tolist())
    if zero_shot != "auto":
        assert clf.zero_shot_weight_ == zero_shot
    assert 0 <= clf.zero_shot_weight_ <= 1
    if bias != "auto":
        assert clf.new_class_bias_ == bias
    elif (n_new and len(base) >= 2 and zero_shot == "auto" and max(counts) >= 2
          and np.median([c for c in counts if c >= 2]) < 4):
        # too few images per class to stand for the model in refits: zero-shot CLIP
        assert clf.calibration_ == {"method": "few images per class", "median_images":
                                    float(np.median([c for c in counts if c >= 2]))}
        assert (clf.zero_shot_weight_, clf.new_class_bias_) == (1.0, 0.0)
    elif n_new and len(base) >= 2 and clf.calibration_["method"] == "held-out classes":
        assert len(clf.calibration_["held_out"]) == 1
    elif n_new:  # nothing to hold back: one base class, or no second image of any
        assert clf.calibration_["method"] == "zero-shot rate"
    else:
        assert clf.new_class_bias_ == 0.0


# ---------------------------------------------------------------- extreme parameters
MODERATE = dict(tau=(0.0, 10.0), visual_scale=(1e-3, 1e3), lr=(0.0, 1e-2),
                weight_decay=(0.0, 1.0))


@fuzz(120)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(2, 24),
       tau=st.sampled_from([0.0, 1e-3, 1.0, 10.0, 1e3, 1e300]),
       visual_scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]),
       lr=st.sampled_from(["auto", 1e-12, 1e-3, 1e-2, 1.0, 1e3]),
       weight_decay=st.sampled_from([0.0, 1e-4, 1.0, 1e30]),
       optimizer=st.sampled_from(["adamw", "adam", "sgd"]),
       exponent=st.one_of(st.integers(-30, 30), st.sampled_from([-300, 300])),
       context=st.sampled_from(["isolated", "batch"]),
       bias=st.sampled_from(["auto", 0.0, 1e6]), num_heads=st.integers(1, 16),
       dropout=st.sampled_from([0.0, 0.5, 0.99]), steps=st.integers(1, 3),
       batch_size=st.integers(1, 16), warmup_epochs=st.integers(0, 2),
       x_dtype=st.sampled_from(["float32", "float64"]),
       zero_shot=st.sampled_from(["auto", 0.0, 1.0]))
def test_extreme_but_legal_parameters(seed, dim, tau, visual_scale, lr, weight_decay,
                                      optimizer, exponent, context, bias, num_heads,
                                      dropout, steps, batch_size, warmup_epochs, x_dtype,
                                      zero_shot):
    gen = np.random.default_rng(seed)
    y = np.array([0, 0, 0, 1, 1, 2, 0, 1, 2, 0])
    X = gen.normal(size=(len(y), dim)) + 2 * gen.normal(size=(3, dim))[y]
    with np.errstate(over="ignore", under="ignore"):
        X = (X * 10.0 ** exponent).astype(x_dtype)
    params = dict(tau=tau, visual_scale=visual_scale, lr=lr, weight_decay=weight_decay)
    clf = tiny(classes=[0, 1, 2, 3], text_features=gen.normal(size=(4, dim)),
               optimizer=optimizer, context=context, new_class_bias=bias,
               num_heads=num_heads, dropout=dropout, max_steps=steps,
               batch_size=batch_size, warmup_epochs=warmup_epochs,
               zero_shot_weight=zero_shot, **params)
    moderate = all(lo <= (1e-3 if params[k] == "auto" else params[k]) <= hi
                   for k, (lo, hi) in MODERATE.items())
    try:
        fit_quietly(clf, X, y)
    except Exception as exc:  # noqa: BLE001 - judged below
        assert_clean(exc)
        if not valid_features(X.astype(np.float64)):  # float32 under- or overflowed
            return
        assert isinstance(exc, TrainingDivergedError), f"refused: {exc!r}"
        assert not moderate, f"diverged with moderate parameters {params}: {exc}"
        assert "lr" in str(exc) and "weight_decay" in str(exc), exc
        return
    assert valid_features(X.astype(np.float64))
    check_result(clf, X, kind="i")


# ---------------------------------------------------------------- predictions
@functools.lru_cache(maxsize=None)
def fitted(context, kind):
    """A model on 6 features with the first (two or three) labels of ``LABELS[kind]``
    and, for "int", one new class (7); shared: copy it before changing it."""
    gen = np.random.default_rng(0)
    base = LABELS[kind][:3]
    which = np.arange(12) % len(base)
    X = gen.normal(size=(12, 6)) + 2 * gen.normal(size=(3, 6))[which]
    classes = np.append(np.sort(base), 7) if kind == "int" else None
    text = gen.normal(size=(len(base) + (kind == "int"), 6))
    return fit_quietly(tiny(classes=classes, text_features=text, context=context,
                            new_class_bias=1.0), X, base[which])


@fuzz(100)
@given(data=st.data(), n=st.integers(0, 9), dim=st.sampled_from([6] * 8 + [5, 7, 0]),
       context=st.sampled_from(["isolated", "batch"]))
def test_predict_on_any_input(data, n, dim, context):
    clf = fitted(context, "int")
    X, as_float = data.draw(features(n, dim))
    valid = (as_float is not None and as_float.shape == (n, 6) and n >= 1
             and np.isfinite(as_float).all())  # all-zero rows are fine here
    try:
        proba = check_result(clf, X, kind="i")
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - judged below
        assert_clean(exc)
        assert not valid, f"refused valid input: {exc!r}"
        return
    assert valid, "accepted invalid input"
    # the head is nearly scale-invariant: far beyond the training scale, a row's
    # probabilities no longer change with its scale
    norms = np.linalg.norm(as_float / 1e200, axis=1) * 1e200  # no overflow at 1e300
    far = np.flatnonzero(norms > 1e4 * clf.feature_scale_)
    if len(far):
        near = as_float[far] / norms[far, None] * 1e4 * clf.feature_scale_
        np.testing.assert_allclose(proba[far], clf.predict_proba(near), atol=1e-4)


# ---------------------------------------------------------------- add_classes
@fuzz(100)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["int", "str", "object str",
                                                             "integral float", "bool"]),
       added=st.sampled_from(["fresh", "fresh", "present", "duplicates", "empty",
                              "other kind", "integral float", "fractional float",
                              "fresh object"]),
       text=st.sampled_from(["right", "right", "wrong width", "wrong rows", "nan", "none"]),
       count=st.integers(1, 3), context=st.sampled_from(["isolated", "batch"]))
def test_add_classes_keeps_the_label_type_or_refuses_cleanly(seed, kind, added, text, count,
                                                             context):
    clf = copy.deepcopy(fitted(context, kind))
    old = clf.classes_.copy()
    gen = np.random.default_rng(seed)
    is_text = old.dtype.kind in "OU"
    fresh = (np.array([f"new {i}" for i in range(count)]) if is_text
             else np.arange(count) + 100)
    labels = {"fresh": fresh, "present": old[:count], "empty": old[:0],
              "duplicates": np.repeat(fresh[:1], 2),
              "other kind": np.arange(count) + 100 if is_text else fresh.astype(str),
              "integral float": np.arange(count) + 100.0,
              "fractional float": np.arange(count) + 100.5,
              "fresh object": fresh.astype(object)}[added]
    m = len(labels)
    tf = {"right": gen.normal(size=(m, 6)), "wrong width": gen.normal(size=(m, 5)),
          "wrong rows": gen.normal(size=(m + 1, 6)), "nan": np.full((m, 6), np.nan),
          "none": None}[text]
    X = gen.normal(size=(5, 6))
    before = clf.predict_proba(X)
    # labels that classes_ can hold: new, unique, of its kind and representable in it
    fits = {"b": (), "f": ("fresh", "fresh object", "integral float", "fractional float"),
            "U": ("fresh", "fresh object"), "O": ("fresh", "fresh object")}.get(
        old.dtype.kind, ("fresh", "fresh object", "integral float"))
    valid = m == 0 or (added in fits and text == "right")
    try:
        clf.add_classes(labels, text_features=tf)
    except Exception as exc:  # noqa: BLE001 - judged below
        assert_clean(exc)
        assert not valid, f"refused {labels!r} for classes_ {old!r}: {exc!r}"
        assert clf.classes_.tobytes() == old.tobytes()  # nothing half-added
        assert clf.predict_proba(X).tobytes() == before.tobytes()
        return
    if old.dtype.kind == "U":  # longer strings widen the dtype, of the same kind
        assert clf.classes_.dtype.kind == "U", "add_classes changed the type of classes_"
    else:
        assert clf.classes_.dtype == old.dtype, "add_classes changed the type of classes_"
    assert valid, f"accepted {labels!r} ({text} text) for classes_ {old!r}"
    check_result(clf, X)
    assert len(clf.classes_) == len(old) + m
    if m:
        assert set(clf.new_classes_.tolist()) >= set(labels.tolist())
    else:
        assert clf.predict_proba(X).tobytes() == before.tobytes()


# ---------------------------------------------------------------- unusable parameters
@fuzz(30)
@given(device=st.sampled_from(["meta", "xla", "bogus", "", "cuda:99", "mps", "cpu:0",
                               "CPU", "cpu"]),
       n_jobs=st.sampled_from([None, 1, 2, -1, 0]),
       budget=st.sampled_from([(None, None), (2, None), (None, 1), (1, 1)]))
def test_unusable_devices_and_budgets_are_clean_errors(device, n_jobs, budget):
    X = np.random.default_rng(0).normal(size=(6, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    clf = tiny(device=device, n_jobs=n_jobs, max_steps=budget[0], max_epochs=budget[1])
    usable = (device in ("cpu", "cpu:0") or (device == "cuda:99"
                                             and torch.cuda.device_count() > 99)
              or (device == "mps" and torch.backends.mps.is_available()))
    try:
        fit_quietly(clf, X, y)
    except Exception as exc:  # noqa: BLE001 - judged below
        assert_clean(exc)
        assert not usable or n_jobs == 0 or budget == (None, None), exc
        if not usable and n_jobs != 0:
            assert repr(device) in str(exc) or "device" in str(exc), exc
        return
    assert usable and n_jobs != 0 and budget != (None, None)
    check_result(clf, X, kind="i")
