"""CandleClassifier: fitting and prediction, the class table, bad input; regression tests
for the reliability issue (10) and for what the fuzz found; predict_log_proba; and the
property-based tests (hypothesis) of features, labels, class tables, parameters and
add_classes."""

import copy
import functools
import hashlib
import io
import os
import re
import traceback
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from candle_sklearn import CandleClassifier
from candle_sklearn._inference import BATCH_TOLERANCE
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.exceptions import TrainingDivergedError
from candle_sklearn.metrics import base_new_accuracy
from candle_sklearn.pipeline import CandlePipeline

from ._fuzz import event, fuzz, given, st
from .conftest import FAST, rng


def _fit(data, **params):
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           **{**FAST, **params})
    return clf.fit(data.X_train, data.y_train)


class FakeEncoder:
    """Deterministic text encoder: a hash of the prompt seeds a vector."""

    def __init__(self, dim):
        self.dim = dim
        self.calls = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        rows = [np.random.default_rng(s).standard_normal(self.dim) for s in seeds]
        return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("context", ["isolated", "batch"])
def test_predictions_do_not_depend_on_the_batch(small_data, context):
    clf = _fit(small_data, context=context)
    X = small_data.X_test
    full = clf.predict_proba(X)
    perm = np.random.default_rng(0).permutation(len(X))
    # bitwise among inputs of one size: every row meets the same kernels, whatever its
    # chunk-mates (other rows, other magnitudes)
    np.testing.assert_array_equal(clf.predict_proba(X[perm]), full[perm])
    others = np.vstack([X[:3], 100 * X[::-1][:len(X) - 3]])
    np.testing.assert_array_equal(clf.predict_proba(others)[:3], full[:3])
    np.testing.assert_array_equal(clf.predict_proba(X[[5, 0]])[1], clf.predict_proba(X[:2])[0])
    # a small input and a bulk one: float32 rounding at most
    scores = clf.decision_function(X)
    alone = np.vstack([clf.decision_function(X[i:i + 1]) for i in range(0, len(X), 17)])
    np.testing.assert_allclose(alone, scores[::17], **BATCH_TOLERANCE)
    np.testing.assert_array_equal(alone.argmax(1), scores[::17].argmax(1))


@pytest.mark.parametrize("dim", [48, 80])  # 8 heads of 6 or 10 floats
@pytest.mark.parametrize("context", ["isolated", "batch"])
def test_predictions_do_not_depend_on_the_batch_at_odd_head_sizes(context, dim):
    """A head of dim / 8 floats, not a multiple of 4, puts a sample's per-head rows at
    addresses that vary with its place in a chunk (and BLAS rounds by address) unless
    samples are spaced by the head size too."""
    data = make_clip_like_features(n_base=5, n_new=2, dim=dim, max_per_class=6,
                                   imbalance_ratio=1.0, n_test_per_class=20, random_state=0)
    clf = _fit(data, context=context, max_steps=3)
    X = data.X_test[:60]
    alone = np.vstack([clf.decision_function(X[i:i + 1]) for i in range(len(X))])
    for i in range(0, 30, 3):  # inputs of one size: bitwise, whatever the chunk-mates
        np.testing.assert_array_equal(clf.decision_function(X[[i, 40, 41]])[0],
                                      clf.decision_function(X[[i, 50, 51]])[0])
        np.testing.assert_array_equal(clf.decision_function(X[[40, i]])[1],
                                      clf.decision_function(X[[50, i]])[1])
    np.testing.assert_allclose(alone, clf.decision_function(X), **BATCH_TOLERANCE)


def test_fitted_attributes_and_new_classes(small_data):
    clf = _fit(small_data)
    np.testing.assert_array_equal(clf.classes_, small_data.classes)
    np.testing.assert_array_equal(clf.new_classes_, small_data.new_classes)
    np.testing.assert_array_equal(clf.base_classes_, small_data.base_classes)
    np.testing.assert_array_equal(clf.class_counts_, small_data.train_counts)
    assert clf.n_features_in_ == small_data.X_train.shape[1]
    assert len(clf.history_) == FAST["max_epochs"]
    assert clf.history_[-1] < clf.history_[0]
    assert clf.predict_proba(small_data.X_test).shape == (len(small_data.X_test), 12)


def test_learns_beyond_chance_on_base_and_new(small_data):
    clf = _fit(small_data, max_epochs=10)
    acc = base_new_accuracy(small_data.y_test, clf.predict_proba(small_data.X_test),
                            clf.classes_, clf.new_classes_)
    assert acc["base"] > 0.6 and acc["new"] > 0.5  # chance: 1/12 and 1/4


def test_fit_is_deterministic_on_cpu(small_data):
    a = _fit(small_data).predict_proba(small_data.X_test)
    b = _fit(small_data).predict_proba(small_data.X_test)
    np.testing.assert_array_equal(a, b)
    c = _fit(small_data, random_state=1).predict_proba(small_data.X_test)
    assert not np.array_equal(a, c)


def test_pickle_round_trip(small_data):
    clf = _fit(small_data, context="batch")
    buf = io.BytesIO()
    joblib.dump(clf, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    np.testing.assert_array_equal(loaded.predict_proba(small_data.X_test),
                                  clf.predict_proba(small_data.X_test))
    assert all(p.device.type == "cpu" for p in loaded.head_.parameters())


def test_a_pickle_from_before_the_attenuation_correction_predicts_as_it_did(small_data):
    """A model pickled before visual_weight and attenuation_correction existed predicted
    with neither: it loads with visual_weight=1 and no correction, and its parameters
    work (get_params, clone, add_classes)."""
    import torch
    from sklearn.base import clone

    clf = _fit(small_data, visual_weight=1.0, attenuation_correction=False)
    want = clf.decision_function(small_data.X_test)
    del clf.visual_weight, clf.attenuation_correction
    del clf.head_._buffers["visual_gain"]
    loaded = joblib.load(_dumped(clf))
    assert loaded.get_params()["attenuation_correction"] is False
    assert loaded.visual_weight == 1.0
    torch.testing.assert_close(loaded.head_.visual_gain,
                               torch.ones(len(loaded.head_.visual_prototypes)))
    np.testing.assert_array_equal(loaded.decision_function(small_data.X_test), want)
    clone(loaded)
    loaded.add_classes([99], text_features=small_data.text_features[:1])


def test_grid_search_over_tau_in_a_pipeline(small_data):
    keep = np.isin(small_data.y_train, np.flatnonzero(small_data.train_counts >= 3))
    X, y = small_data.X_train[keep], small_data.y_train[keep]
    pipe = make_pipeline(StandardScaler(), CandleClassifier(**FAST))
    search = GridSearchCV(pipe, {"candleclassifier__tau": [0.0, 1.0, 2.0]}, cv=2)
    search.fit(X, y)
    # the chosen tau reached the refitted classifier through the pipeline's parameters
    assert search.best_estimator_[-1].tau == search.best_params_["candleclassifier__tau"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # the refitted pipeline recognises test images of the classes it was fitted on
    known = np.isin(small_data.y_test, y)
    assert search.score(small_data.X_test[known], small_data.y_test[known]) > 0.8  # chance 1/5


def test_string_labels_with_encoder_and_templates(small_data):
    names = np.array([f"thing_{c}" for c in small_data.classes])
    y = names[small_data.y_train]
    enc = FakeEncoder(small_data.X_train.shape[1])
    clf = CandleClassifier(classes=names, encoder=enc,
                           templates=["a photo of a {}.", "a drawing of a {}."], **FAST)
    clf.fit(small_data.X_train, y)
    assert enc.calls[0][0] == "a photo of a thing 0."  # underscores become spaces
    assert len(enc.calls) == 2
    np.testing.assert_array_equal(clf.classes_, np.sort(names))
    np.testing.assert_allclose(np.linalg.norm(clf.text_features_, axis=1), 1, rtol=1e-5)
    assert set(clf.predict(small_data.X_test)) <= set(names)


def test_classes_given_in_any_order_follow_text_rows(small_data):
    order = np.random.default_rng(1).permutation(len(small_data.classes))
    a = _fit(small_data)
    b = CandleClassifier(classes=small_data.classes[order],
                         text_features=small_data.text_features[order], **FAST)
    b.fit(small_data.X_train, small_data.y_train)
    np.testing.assert_array_equal(a.classes_, b.classes_)
    np.testing.assert_allclose(a.text_features_, b.text_features_)


def test_visual_only_mode_without_text(small_data):
    base = np.isin(small_data.y_train, small_data.base_classes)
    clf = CandleClassifier(**FAST).fit(small_data.X_train[base], small_data.y_train[base])
    assert clf.text_features_ is None and len(clf.new_classes_) == 0
    assert clf.score(small_data.X_test[small_data.y_test < 8],
                     small_data.y_test[small_data.y_test < 8]) > 0.5


def test_binary_decision_function(small_data):
    keep = np.isin(small_data.y_train, [0, 1])
    clf = CandleClassifier(**FAST).fit(small_data.X_train[keep], small_data.y_train[keep])
    d = clf.decision_function(small_data.X_test[:5])
    assert d.shape == (5,)
    np.testing.assert_array_equal(clf.predict(small_data.X_test[:5]),
                                  clf.classes_[(d > 0).astype(int)])


def test_verbose_progress_bar(small_data, capsys):
    _fit(small_data, verbose=1, max_epochs=2)
    err = capsys.readouterr().err
    assert "CandleClassifier.fit" in err and "loss=" in err
    # one refit per held-out draw (calibration_repeats=3 by default)
    assert "new_class_bias='auto'" in err and "3/3" in err


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad, message", [
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), "NaN"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), "infinity"),
    (lambda X: X[:, 0], "2D array"),
])
def test_bad_features_in_fit(small_data, bad, message):
    with pytest.raises(ValueError, match=message):
        CandleClassifier(**FAST).fit(bad(small_data.X_train), small_data.y_train)


def test_wrong_number_of_features_at_predict(small_data):
    clf = _fit(small_data)
    with pytest.raises(ValueError, match="features"):
        clf.predict(small_data.X_test[:, :-1])


def test_single_class(small_data):
    X = small_data.X_train[:5]
    with pytest.raises(ValueError, match="at least two classes"):
        CandleClassifier(**FAST).fit(X, np.zeros(5, dtype=int))


def test_label_not_in_classes(small_data):
    with pytest.raises(ValueError, match=r"not in classes: \[7\]"):
        CandleClassifier(classes=[0, 1, 2, 3, 4, 5, 6], **FAST).fit(
            small_data.X_train, np.minimum(small_data.y_train, 7))


def test_new_class_without_text(small_data):
    with pytest.raises(ValueError, match=r"classes \[8, 9, 10, 11\] have no training"):
        CandleClassifier(classes=small_data.classes, **FAST).fit(
            small_data.X_train, small_data.y_train)


@pytest.mark.parametrize("shape", [(12, 31), (11, 32), (12,)])
def test_text_features_of_wrong_shape(small_data, shape):
    text = np.ones(shape, dtype=np.float32)
    with pytest.raises(ValueError, match="text features must have shape"):
        CandleClassifier(classes=small_data.classes, text_features=text, **FAST).fit(
            small_data.X_train, small_data.y_train)


def test_non_finite_text_features(small_data):
    text = small_data.text_features.copy()
    text[2, 3] = np.nan
    with pytest.raises(ValueError, match="text features contain NaN"):
        CandleClassifier(classes=small_data.classes, text_features=text, **FAST).fit(
            small_data.X_train, small_data.y_train)


def test_duplicates_in_classes_and_names(small_data):
    with pytest.raises(ValueError, match=r"classes contains duplicates: \[3\]"):
        CandleClassifier(classes=[0, 1, 2, 3, 3, 4, 5, 6, 7], **FAST).fit(
            small_data.X_train, small_data.y_train)
    names = [f"c{i}" for i in range(12)]
    names[5] = "c4"
    with pytest.raises(ValueError, match=r"class_names contains duplicates: \['c4'\]"):
        CandleClassifier(classes=small_data.classes, class_names=names,
                         encoder=FakeEncoder(32), **FAST).fit(
            small_data.X_train, small_data.y_train)


class UncopyableEncoder(FakeEncoder):
    """Stands for an encoder holding a GPU model, a session or a lock."""

    def __deepcopy__(self, memo):
        raise TypeError("this encoder cannot be copied")


def test_encoder_is_shared_never_copied(small_data):
    """The calibration refits and add_classes use the encoder (or drop it) without
    copying it: clone() deep-copied it, a whole CLIP model three times per fit."""
    names = np.array([f"thing_{c}" for c in small_data.classes])
    enc = UncopyableEncoder(small_data.X_train.shape[1])
    clf = CandleClassifier(classes=names, encoder=enc, **{**FAST, "max_epochs": 2})
    clf.fit(small_data.X_train, names[small_data.y_train])
    assert clf.calibration_["method"] == "held-out classes"
    clf.add_classes(["thing_new"])
    assert clf.encoder is enc and "thing_new" in clf.classes_


def test_a_zero_text_feature_row_is_an_error(small_data):
    text = small_data.text_features.copy()
    text[6] = 0
    with pytest.raises(ValueError, match=r"text features of classes \[6\] are all zeros"):
        CandleClassifier(classes=small_data.classes, text_features=text, **FAST).fit(
            small_data.X_train, small_data.y_train)


def test_encoder_without_names(small_data):
    with pytest.raises(ValueError, match="encoder needs class names"):
        CandleClassifier(encoder=FakeEncoder(32), **FAST).fit(
            small_data.X_train, small_data.y_train)
    # numbers held in an object array are numbers, not names ("a photo of a 0."; a review)
    as_objects = np.array(small_data.classes, dtype=object)
    with pytest.raises(ValueError, match="encoder needs class names"):
        CandleClassifier(classes=as_objects, encoder=FakeEncoder(32), **FAST).fit(
            small_data.X_train, small_data.y_train)
    clf = CandleClassifier(classes=as_objects, text_features=small_data.text_features,
                           **FAST).fit(small_data.X_train, small_data.y_train)
    assert clf.classes_.dtype.kind == "i" and clf.class_names_ is None


def test_failed_fit_leaves_nothing_half_fitted(small_data):
    clf = _fit(small_data)
    clf.set_params(text_features=np.ones((3, 3)))
    with pytest.raises(ValueError):
        clf.fit(small_data.X_train, small_data.y_train)
    # the earlier fitted state is untouched (nothing new assigned before validation ends)
    assert clf.predict(small_data.X_test[:2]).shape == (2,)
    fresh = CandleClassifier(classes=small_data.classes, **FAST)
    with pytest.raises(ValueError):
        fresh.fit(small_data.X_train, small_data.y_train)
    assert not hasattr(fresh, "classes_") and not hasattr(fresh, "head_")


def test_cuda_requested_without_cuda(small_data):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        CandleClassifier(device="cuda").fit(small_data.X_train, small_data.y_train)


@pytest.mark.gpu
def test_fit_on_gpu_predict_on_cpu_after_pickle(small_data):
    """A model fitted on CUDA pickles with CPU tensors and predicts the same on CPU."""
    gpu = _fit(small_data, device="cuda")
    assert all(p.device.type == "cpu" for p in gpu.head_.parameters())
    on_gpu = gpu.predict_proba(small_data.X_test)
    buf = io.BytesIO()
    joblib.dump(gpu, buf)
    buf.seek(0)
    cpu = joblib.load(buf).set_params(device="cpu")
    np.testing.assert_allclose(cpu.predict_proba(small_data.X_test), on_gpu, atol=1e-3)
    np.testing.assert_array_equal(cpu.predict(small_data.X_test),
                                  gpu.predict(small_data.X_test))


def test_fitted_class_context_is_reused_dropped_on_change_and_never_pickled(small_data):
    from candle_sklearn._inference import HeadScorer

    clf = _fit(small_data)
    before = clf.predict_proba(small_data.X_test)
    scorer = clf.head_._scorers["cpu"]
    clf.predict(small_data.X_test[:2])
    assert clf.head_._scorers["cpu"] is scorer  # computed once, reused
    loaded = joblib.load(_dumped(clf))
    assert "_scorers" not in vars(loaded.head_)
    np.testing.assert_array_equal(loaded.predict_proba(small_data.X_test), before)
    assert "_scorers" in vars(clf.head_)  # pickling did not strip the live model
    clf.add_classes([100], text_features=small_data.text_features[:1])
    assert "_scorers" not in vars(clf.head_)  # the old context is gone
    assert clf.predict_proba(small_data.X_test).shape[1] == len(small_data.classes) + 1
    assert clf.head_._scorers["cpu"] is not scorer
    assert isinstance(scorer, HeadScorer)


def _dumped(obj):
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("context", ["isolated", "batch"])
@pytest.mark.parametrize("weight", [0.5, 1.0, 0.0])
def test_visual_weight_weighs_the_visual_logits_in_prediction(small_data, context, weight):
    """Scores are z^vt + visual_weight * gain * z^vv (gain: the base classes' attenuation
    correction, 1 for new classes); training is the same whatever the weight."""
    import torch

    from candle_sklearn.classifier import _for_head

    d = small_data
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                           new_class_bias=0.0, visual_weight=weight, context=context,
                           **FAST).fit(d.X_train, d.y_train)
    with torch.no_grad():  # a batch of one: both contexts score one image alone
        parts = [clf.head_.training_logits(torch.as_tensor(_for_head(x[None],
                                                                     clf.feature_scale_)))
                 for x in d.X_test[:5]]
    zvt = np.stack([p[1][0].numpy() for p in parts])
    zvv = np.stack([p[2][0].numpy() for p in parts])
    gain = np.ones(clf.head_.n_classes, np.float32)  # base classes first, new ones after
    gain[:len(clf.head_.visual_gain)] = clf.head_.visual_gain.numpy()
    assert gain.max() > 1  # the long-tailed data gives the correction something to do
    want = (zvt + weight * gain * zvv)[:, np.argsort(clf.head_order_)]
    np.testing.assert_allclose(clf.decision_function(d.X_test[:5], calibrated=False), want,
                               rtol=1e-4, atol=1e-3)
    other = CandleClassifier(classes=d.classes, text_features=d.text_features,
                             new_class_bias=0.0, context=context, visual_weight=0.25,
                             **FAST).fit(d.X_train, d.y_train)
    np.testing.assert_array_equal(other.history_, clf.history_)


# ======================================================================= predict_log_proba
# predict_log_proba(X, calibrated=...) agrees with predict_proba and decision_function.


@pytest.fixture(scope="module")
def fitted_biased(small_data):
    from tests.conftest import FAST
    clf = CandleClassifier(classes=small_data.classes, text_features=small_data.text_features,
                           new_class_bias=1.5, **FAST)
    return clf.fit(small_data.X_train, small_data.y_train)


@pytest.mark.parametrize("calibrated", [True, False])
def test_log_proba_is_log_of_proba(fitted_biased, small_data, calibrated):
    X = small_data.X_test
    log_proba = fitted_biased.predict_log_proba(X, calibrated=calibrated)
    assert log_proba.shape == (len(X), len(fitted_biased.classes_))
    assert np.isfinite(log_proba).all()
    np.testing.assert_allclose(np.exp(log_proba), fitted_biased.predict_proba(X, calibrated=calibrated),
                               rtol=1e-5, atol=1e-7)
    # the same as a log-softmax of the scores with or without the bias
    scores = fitted_biased.decision_function(X, calibrated=calibrated)
    np.testing.assert_allclose(log_proba - log_proba[:, :1], scores - scores[:, :1], atol=1e-5)


def test_calibrated_moves_only_new_class_columns(fitted_biased, small_data):
    X = small_data.X_test
    shift = (fitted_biased.predict_log_proba(X) - fitted_biased.predict_log_proba(X, calibrated=False))
    is_new = fitted_biased.class_counts_ == 0
    assert is_new.any() and fitted_biased.new_class_bias_ == 1.5
    # before renormalisation, the new-class columns move by the bias and base ones not at all
    np.testing.assert_allclose(shift[:, is_new] - shift[:, ~is_new][:, :1], 1.5, atol=1e-5)
    np.testing.assert_allclose(shift[:, ~is_new] - shift[:, ~is_new][:, :1], 0.0, atol=1e-5)
    # the default is calibrated, as for predict_proba
    np.testing.assert_array_equal(fitted_biased.predict_log_proba(X),
                                  fitted_biased.predict_log_proba(X, calibrated=True))


def test_keyword_only_and_through_a_pipeline(fitted_biased, small_data):
    X = small_data.X_test
    with pytest.raises(TypeError):
        fitted_biased.predict_log_proba(X, False)
    from sklearn.preprocessing import FunctionTransformer
    pipe = CandlePipeline([("id", FunctionTransformer()), ("candle", fitted_biased)])
    np.testing.assert_array_equal(pipe.predict_log_proba(X, calibrated=False),
                                  fitted_biased.predict_log_proba(X, calibrated=False))


# ============================================================ reliability (issue 10)
# Regression tests for the classifier items of issue 10 (one test per item), and for the
# bugs the classifier fuzz (the property-based tests below) found.


@pytest.fixture(scope="module")
def data():
    """6 base and 3 new classes, 32-dim."""
    return make_clip_like_features(n_base=6, n_new=3, dim=32, max_per_class=20,
                                   n_test_per_class=8, random_state=0)


# one torch thread: these fits are tiny, and the cores may be shared
QUICK = {**FAST, "max_epochs": 3, "calibration_repeats": 1, "n_jobs": 1}


def _clf(data, **params):
    return CandleClassifier(**{"classes": data.classes, "text_features": data.text_features,
                               **QUICK, **params})


@pytest.fixture(scope="module")
def fitted(data):
    return _clf(data, new_class_bias=0.0).fit(data.X_train, data.y_train)


# ---------------------------------------------- silent garbage 5: a diverged fit
@pytest.mark.parametrize("param, value", [("lr", 1e3), ("weight_decay", 1e30),
                                          ("tau", 1e300)])
def test_diverged_fit_is_an_error_that_says_what_to_lower(param, value):
    d = make_clip_like_features(n_base=4, n_new=2, dim=16, max_per_class=10,
                                n_test_per_class=3, random_state=0)
    for seed in range(3):
        clf = _clf(d, random_state=seed, **{param: value})
        with pytest.raises(TrainingDivergedError,
                           match=rf"diverged: .*{param} \((now )?{re.escape(f'{value:g}')}\)"):
            clf.fit(d.X_train, d.y_train)
        assert not hasattr(clf, "classes_")  # nothing half-fitted, no NaN bias to find
    assert issubclass(TrainingDivergedError, FloatingPointError)
    good = _clf(d, new_class_bias=0.0).fit(d.X_train, d.y_train)
    before = good.predict_proba(d.X_test)
    with pytest.raises(TrainingDivergedError):
        good.set_params(**{param: value}).fit(d.X_train, d.y_train)
    np.testing.assert_array_equal(good.predict_proba(d.X_test), before)  # earlier fit kept


def test_a_failed_fit_on_other_features_keeps_the_earlier_fit(data, fitted):
    """validate_data resets n_features_in_ before anything can fail: a failed refit on
    features of another width used to leave the old head with the new width. Found by a
    review."""
    clf = copy.deepcopy(fitted)
    before = clf.predict_proba(data.X_test)
    narrow = data.X_train[:, :24]
    with pytest.raises(ValueError, match="text features must have shape"):
        clf.fit(narrow, data.y_train)
    with pytest.raises(ValueError, match="have no training sample"):
        clf.set_params(text_features=None).fit(narrow, np.full(len(narrow), data.y_train[0]))
    assert clf.n_features_in_ == data.X_train.shape[1]
    np.testing.assert_array_equal(clf.predict_proba(data.X_test), before)


def test_a_huge_learning_rate_never_gives_nan(data):
    """On other data lr=1e3 stays finite: a poor model, but never NaN probabilities."""
    for seed in range(2):
        try:
            clf = _clf(data, lr=1e3, random_state=seed).fit(data.X_train, data.y_train)
        except TrainingDivergedError:
            continue
        assert np.isfinite(clf.predict_proba(data.X_test)).all()
        assert np.isfinite(clf.new_class_bias_)


def test_finite_but_useless_parameters_are_caught_too(data):
    """One AdamW step with weight decay 1e30 scales the weights by -1e18: every
    parameter is finite, but float32 scores overflow. Found by the fuzz."""
    clf = _clf(data, weight_decay=1e30, lr=1e-12, max_steps=1)
    with pytest.raises(TrainingDivergedError, match="scores are not finite"):
        clf.fit(data.X_train, data.y_train)


def test_inputs_times_1e30_give_the_same_model(data, fitted):
    huge = _clf(data, new_class_bias=0.0).fit(data.X_train * np.float32(1e30),
                                              data.y_train)
    proba = huge.predict_proba(data.X_test * np.float32(1e30))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba, fitted.predict_proba(data.X_test), atol=1e-3)
    assert np.isfinite(huge.new_class_bias_)


def test_rows_far_beyond_the_training_scale_score_as_large_rows(data, fitted):
    """Predicting rows 1e30 or 1e300 times the training scale used to overflow float32
    inside the head (NaN probabilities, predict answering classes_[0]). Found by the fuzz.
    """
    X = data.X_test.astype(np.float64)
    want = fitted.predict_proba(X * 1e4)
    for factor in (1e30, 1e300):
        got = fitted.predict_proba(X * factor)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_one_feature_is_refused_in_either_context(data):
    for context in ("isolated", "batch"):
        with pytest.raises(ValueError, match="at least 2 features, got 1"):
            _clf(data, context=context, text_features=data.text_features[:, :1]).fit(
                data.X_train[:, :1], data.y_train)


def test_constant_feature_rows_give_finite_scores_in_batch_context():
    """A constant row is layer-normed to zero; the batch-of-one closed form took 0/0 for
    its cosine (NaN probabilities). Found by the fuzz."""
    X = np.vstack([np.full((4, 2), 0.5), np.random.default_rng(0).normal(size=(4, 2))])
    for context in ("isolated", "batch"):
        clf = CandleClassifier(**{**QUICK, "context": context}).fit(X, [0, 1] * 4)
        proba = clf.predict_proba(X)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1)


@pytest.mark.parametrize("dim", [6, 50])
def test_per_sample_scores_whatever_the_feature_count(dim):
    """MKL rounds a row of a float32 product differently by its memory alignment when
    the row length is not a multiple of 4: with 6 or 50 features, a row's scores
    depended on its position in the batch. Found by the fuzz. Bitwise at any position
    among inputs of one size; within float32 rounding alone (other product shapes)."""
    gen = np.random.default_rng(dim)
    y = np.arange(40) % 5
    X = gen.normal(size=(40, dim)) + 2 * gen.normal(size=(5, dim))[y]
    for context in ("isolated", "batch"):
        clf = CandleClassifier(**{**QUICK, "context": context}).fit(X, y)
        full = clf.decision_function(X)
        for i in range(8):
            moved = clf.decision_function(np.roll(X, 3 - i, axis=0))  # row i now at 3
            assert moved[3].tobytes() == full[i].tobytes()
            np.testing.assert_allclose(clf.decision_function(X[i:i + 1])[0], full[i],
                                       **BATCH_TOLERANCE)


# ---------------------------------------------- silent garbage 6: auto bias, 2 base classes
def test_auto_bias_with_two_base_classes_lets_new_classes_be_predicted():
    d = make_clip_like_features(n_base=2, n_new=3, dim=32, max_per_class=20,
                                imbalance_ratio=1, n_test_per_class=20, random_state=0)

    def joint_hm(bias):
        clf = _clf(d, max_epochs=4, calibration_repeats=3, new_class_bias=bias)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a fallback may warn: allowed
            clf.fit(d.X_train, d.y_train)
        return clf, base_new_accuracy(d.y_test, clf.decision_function(d.X_test),
                                      clf.classes_, d.new_classes, protocol="joint")["hm"]

    auto, hm_auto = joint_hm("auto")
    _, hm_zero = joint_hm(0.0)
    assert np.isfinite(auto.new_class_bias_) and auto.new_class_bias_ > 0  # not 0.0
    assert np.isin(auto.predict(d.X_test), d.new_classes).any()
    assert hm_auto > hm_zero + 0.2


def test_auto_bias_with_one_base_class_warns_and_predicts_new_classes():
    d = make_clip_like_features(n_base=1, n_new=3, dim=32, max_per_class=20,
                                n_test_per_class=10, random_state=0)
    with pytest.warns(UserWarning, match="new_class_bias"):
        clf = _clf(d).fit(d.X_train, d.y_train)
    # nothing to hold out: the calibrated scores are zero-shot CLIP's own
    assert clf.zero_shot_weight_ == 1.0 and clf.new_class_bias_ == 0.0
    assert clf.calibration_["method"] == "zero-shot rate"
    assert np.isin(clf.predict(d.X_test), d.new_classes).any()


# ---------------------------------------------- silent garbage 7: add_classes keeps types
def test_add_classes_keeps_the_type_of_classes(data, fitted):
    clf = copy.deepcopy(fitted)
    dtype = clf.classes_.dtype
    clf.add_classes([], text_features=np.zeros((0, 32)))
    assert clf.classes_.dtype == dtype
    with pytest.raises(ValueError, match=r"\[9.5\] cannot be represented as int64"):
        clf.add_classes([9.5], text_features=np.ones((1, 32)))
    clf.add_classes([20.0], text_features=np.ones((1, 32)))  # integral: an int label
    assert clf.classes_.dtype == dtype and clf.classes_[-1] == 20
    assert clf.predict(data.X_test[:3]).dtype == dtype
    assert isinstance(clf.predict(data.X_test[:1]).tolist()[0], int)


def test_add_classes_keeps_str_labels_str(data):
    names = np.array([f"c{i}" for i in data.classes])
    clf = _clf(data, classes=names, new_class_bias=0.0).fit(data.X_train,
                                                            names[data.y_train])
    added = np.array(["zebra"], dtype=object)
    clf.add_classes(added, text_features=np.ones((1, 32)))
    assert clf.classes_.dtype.kind == "U" and "zebra" in clf.classes_
    assert clf.predict(data.X_test[:3]).dtype.kind == "U"


def test_add_classes_without_names_keeps_the_names_of_the_others(data):
    """Numeric classes with names, then a class added by its text features alone: it
    goes by its label, and the others keep theirs (they all became None; a review)."""
    names = [f"class {i}" for i in data.classes]
    clf = _clf(data, class_names=names, new_class_bias=0.0).fit(data.X_train, data.y_train)
    clf.add_classes([40], text_features=np.ones((1, 32)))
    assert clf.class_names_.tolist() == names + ["40"]
    with pytest.raises(ValueError, match=r"class_names already in use: \['class 3'\]"):
        clf.add_classes([41], class_names=["class 3"], text_features=np.ones((1, 32)))
    clf.add_classes([42], class_names=["41"], text_features=np.ones((1, 32)))
    with pytest.raises(ValueError, match=r"class_names already in use: \['41'\]"):
        clf.add_classes([41], text_features=np.ones((1, 32)))  # its label as its name


# ---------------------------------------------- errors 1: auto calibration, one-image classes
def test_auto_calibration_with_one_image_base_classes_never_fails():
    gen = np.random.default_rng(0)
    dim = 16
    centres = gen.normal(size=(5, dim))
    y = np.array([0, 0, 1, 2])  # counts (2, 1, 1); classes 3 and 4 are new
    X = centres[y] + 0.1 * gen.normal(size=(len(y), dim))
    text = centres + 0.5 * gen.normal(size=(5, dim))
    for seed in range(20):
        # a fixed weight: with "auto", two images per class use zero-shot CLIP, no refits
        clf = CandleClassifier(classes=np.arange(5), text_features=text, max_epochs=2,
                               zero_shot_weight=0.0, device="cpu", n_jobs=1,
                               random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a fallback may warn: allowed
            clf.fit(X, y)
        assert np.isfinite(clf.new_class_bias_), seed
        assert np.isfinite(clf.predict_proba(X)).all()


# ---------------------------------------------- errors 3: add_classes needs text
def test_add_classes_by_name_without_encoder_is_a_clear_error(data):
    names = np.array([f"c{i}" for i in data.classes])
    clf = _clf(data, classes=names, new_class_bias=0.0).fit(data.X_train,
                                                            names[data.y_train])
    before = clf.classes_.copy()
    with pytest.raises(ValueError, match="add_classes needs text .*text_features=.*encoder"):
        clf.add_classes(["zebra"])
    np.testing.assert_array_equal(clf.classes_, before)


# ---------------------------------------------- errors 7: mixed labels
def test_mixed_int_and_str_labels_are_a_clear_error(data):
    y = np.array(["a", 0, 1, "b"] * 5, dtype=object)
    with pytest.raises(ValueError, match=r"mix strings and numbers .*'a'.*0"):
        CandleClassifier(**QUICK).fit(data.X_train[:20], y)
    with pytest.raises(ValueError, match="mix strings and numbers"):
        CandleClassifier(classes=np.array(["a", "b", 0, 1], dtype=object), **QUICK).fit(
            data.X_train[:20], np.array(["a", "b"] * 10, dtype=object))


# ---------------------------------------------- errors 8: unusable devices
@pytest.mark.parametrize("device, message", [
    ("meta", "use 'auto', 'cpu', 'cuda'"),
    ("xla", "use 'auto', 'cpu', 'cuda'"),
    ("bogus", "is not a torch device"),
    ("", "is not a torch device"),
    ("cuda:99", "CUDA"),
])
def test_unusable_device_is_a_clear_error(data, fitted, device, message):
    clf = _clf(data, device=device)
    with pytest.raises(ValueError, match=rf"device={device!r}.*{message}"):
        clf.fit(data.X_train, data.y_train)
    with pytest.raises(ValueError, match=rf"device={device!r}"):  # and at prediction
        copy.deepcopy(fitted).set_params(device=device).predict(data.X_test[:2])


# ---------------------------------------------- review: seeding touches only what it restores
def test_fit_leaves_the_callers_rng_alone_and_seeds_no_gpu_it_does_not_restore(data,
                                                                                 monkeypatch):
    import torch

    def every_gpu(seed):  # torch.manual_seed calls this: it would reseed GPUs not forked
        raise AssertionError("a seeded fit reseeded every GPU")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", every_gpu)
    torch.default_generator.manual_seed(123)
    before = torch.get_rng_state()
    first = _clf(data, random_state=3, new_class_bias=0.0).fit(data.X_train, data.y_train)
    assert torch.equal(torch.get_rng_state(), before)
    again = _clf(data, random_state=3, new_class_bias=0.0).fit(data.X_train, data.y_train)
    np.testing.assert_array_equal(first.predict_proba(data.X_test),
                                  again.predict_proba(data.X_test))


def test_one_shot_data_is_not_called_a_regression_problem():
    # scikit-learn warns when more than half of 20+ samples are distinct classes
    one_shot = make_clip_like_features(n_base=24, n_new=2, dim=16, max_per_class=1,
                                       imbalance_ratio=1.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _clf(one_shot, new_class_bias=0.0).fit(one_shot.X_train, one_shot.y_train)


# ================================================================ property-based tests
# Property-based tests of the classifier side (issue 10): shapes, dtypes and containers
# of the features, label kinds, class tables, extreme but legal parameters, predictions on
# any input, and add_classes.
#
# The invariant everywhere: a correct result or a clean error (a ValueError or
# TrainingDivergedError raised on purpose by candle_sklearn or scikit-learn's validation),
# never a raw error from torch or numpy. A result has finite probabilities whose rows sum
# to 1 and whose columns follow ``classes_``, ``classes_`` of the labels' kind, labels of
# that type from ``predict``, and per-sample scores (a row predicted alone gets bitwise
# what it gets in a batch). Where an input is valid by a small written-down specification
# (``valid_*`` below), an error is a failure too. Fits are tiny (two steps, a few samples).
# 660 generated cases, ~30-60 s on 2 cores (the runs of 100 cases or more are marked
# slow). Runs are reproducible (derandomized); CANDLE_FUZZ_RANDOM=1 explores new cases.
# Without hypothesis these tests skip and the rest of the file runs (see _fuzz.py).
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


def assert_refused_untouched(exc, clf, old_classes, X, proba_before):
    """An add_classes that was refused: a clean error, and nothing half-added."""
    assert_clean(exc)
    assert clf.classes_.tobytes() == old_classes.tobytes()
    assert clf.predict_proba(X).tobytes() == proba_before.tobytes()


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
    scores = clf.decision_function(X)
    for i in sorted({0, n - 1, n // 2}):  # a row alone gets what it gets in the batch,
        # within float32 rounding (BATCH_TOLERANCE: a small input takes smaller chunks)
        alone = clf.decision_function(rows(X, [i]))
        np.testing.assert_allclose(alone[0], scores[i], **BATCH_TOLERANCE,
                                   err_msg=f"row {i} depends on the batch")
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


@pytest.mark.slow  # 180 generated cases
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


@pytest.mark.slow  # 130 generated cases
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


@pytest.mark.slow  # 120 generated cases
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
def fitted_model(context, kind):
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


@pytest.mark.slow  # 100 generated cases
@fuzz(100)
@given(data=st.data(), n=st.integers(0, 9), dim=st.sampled_from([6] * 8 + [5, 7, 0]),
       context=st.sampled_from(["isolated", "batch"]))
def test_predict_on_any_input(data, n, dim, context):
    clf = fitted_model(context, "int")
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
@pytest.mark.slow  # 100 generated cases
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
    clf = copy.deepcopy(fitted_model(context, kind))
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
        assert not valid, f"refused {labels!r} for classes_ {old!r}: {exc!r}"
        assert_refused_untouched(exc, clf, old, X, before)
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


def test_reference_recipe_trains_as_the_deprecated_parameters_did(small_data, monkeypatch):
    """recipe="reference" is the reference's settings; the parameters it replaced still
    work, with a FutureWarning, and give the same model (the default recipe's whitened
    start, which no deprecated parameter ever set, switched off, and its attenuation
    correction, which REFERENCE_RECIPE switches off)."""
    import warnings

    from candle_sklearn import REFERENCE_RECIPE
    from candle_sklearn.classifier import RECIPES

    monkeypatch.setitem(RECIPES, "default", {**RECIPES["default"], "whiten": False})

    d = small_data
    common = dict(classes=d.classes, text_features=d.text_features, new_class_bias=0.0,
                  max_epochs=2, max_steps=None, batch_size=64, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recipe itself warns of nothing
        recipe = CandleClassifier(**{**REFERENCE_RECIPE, **common}).fit(d.X_train, d.y_train)
    with pytest.warns(FutureWarning, match="optimizer is deprecated"):
        old = CandleClassifier(**common, optimizer="sgd", lr=3e-4, momentum=0.9,
                               weight_decay=5e-4, warmup_epochs=1, warmup_lr=1e-5,
                               dropout=0.1, context="batch", visual_weight=1.0,
                               attenuation_correction=False).fit(d.X_train, d.y_train)
    assert recipe.lr_ == old.lr_ == 3e-4
    assert recipe.head_.context == "batch" and recipe.head_.fusion.attn.dropout == 0.1
    np.testing.assert_array_equal(recipe.history_, old.history_)
    np.testing.assert_array_equal(recipe.decision_function(d.X_test),
                                  old.decision_function(d.X_test))


def test_a_deprecated_parameter_overrides_the_recipe(small_data):
    d = small_data
    with pytest.warns(FutureWarning, match="weight_decay is deprecated"):
        clf = CandleClassifier(recipe="reference", weight_decay=0.0, max_epochs=1,
                               device="cpu", random_state=0).fit(d.X_train, d.y_train)
    assert clf._train_config(10, 32, clf._settings()).weight_decay == 0.0


def test_precision_is_renamed_train_precision(small_data):
    d = small_data
    with pytest.warns(FutureWarning, match="renamed train_precision"):
        CandleClassifier(precision="fp32", max_epochs=1, device="cpu").fit(d.X_train,
                                                                          d.y_train)
    with pytest.raises(ValueError, match="train_precision"):
        CandleClassifier(train_precision="fp64").fit(d.X_train, d.y_train)


# ---------------------------------------------- add_classes: text of any scale (issue 25)
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-8, 3.0, 1e8, 1e20, 1e30, 1e300])
def test_add_classes_treats_a_text_row_at_any_scale_as_at_the_fitted_scale(data, fitted,
                                                                           scale):
    """The head uses a text row's direction only: a row of any magnitude is the same new
    class (at 1e30 every probability was NaN; at 1e20 a third of the predictions of the
    other classes changed)."""
    row = data.text_features[data.new_classes[:1]].astype(np.float64)
    reference = copy.deepcopy(fitted).add_classes([99], text_features=row)
    clf = copy.deepcopy(fitted).add_classes([99], text_features=row * scale)
    X = data.X_test
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba, reference.predict_proba(X), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(X), reference.predict(X))
    norms = np.linalg.norm(clf.text_features_, axis=1)
    assert norms.max() / norms.min() < 2  # stored as the head uses it


def _assert_unchanged(clf, before, X):
    np.testing.assert_array_equal(clf.classes_, before.classes_)
    assert clf.predict_proba(X).tobytes() == before.predict_proba(X).tobytes()
    assert clf.head_.n_classes == before.head_.n_classes


@pytest.mark.parametrize("labels, text, match", [
    ([99], np.full((1, 32), np.nan), "NaN or infinity"),
    ([99], np.full((1, 32), -np.inf), "NaN or infinity"),
    ([99], np.full((1, 32), "a"), "text_features must be numbers"),
    ([99], np.ones((1, 32)) * (1 + 1j), "text_features must be numbers"),
    ([99], np.array([[None] * 32]), "text_features must be numbers"),
    ([99], np.ones((1, 31)), r"text features must have shape \(n_classes, n_features\)"),
    ([99], np.ones(32), r"text features must have shape"),
    ([99, 98], np.ones((1, 32)), r"text features must have shape"),
    ([99], np.zeros((1, 32)), "all zeros"),
    ([99, 99], np.ones((2, 32)), "duplicates"),
    ([99, 99.0], np.ones((2, 32)), "duplicates"),
    ([0], np.ones((1, 32)), "already present"),
    (["zebra"], np.ones((1, 32)), "same kind"),
    (np.array([None], dtype=object), np.ones((1, 32)), "must be numbers"),
    ([True], np.ones((1, 32)), "must be numbers"),
    ([np.nan], np.ones((1, 32)), "finite numbers"),
    ([1 + 2j], np.ones((1, 32)), "must be numbers"),
    (np.array(["2024-01-01"], dtype="datetime64[D]"), np.ones((1, 32)), "must be numbers"),
])
def test_add_classes_refuses_bad_input_clearly(data, fitted, labels, text, match):
    clf = copy.deepcopy(fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning or cast warning on the way
        with pytest.raises(ValueError, match=match) as refused:
            clf.add_classes(labels, text_features=text)
    where = traceback.extract_tb(refused.value.__traceback__)[-1].filename
    assert "candle_sklearn" in where, f"raw error from {where}: {refused.value!r}"
    _assert_unchanged(clf, fitted, data.X_test)


# ---------------------------------------------- add_classes: fuzz of its inputs
ADD_SCALES = [1e-38, 1e-30, 1e-8, 1.0, 7.0, 1e8, 1e30, 1e38, 1e300]
ADD_DTYPES = ["float64"] * 4 + ["float32"] * 2 + ["float16", "int64", "bool", "object",
                                                 "str", "complex"]
ADD_TEXT = ["right"] * 8 + ["nan", "inf", "zero row", "wrong width", "wrong rows",
                            "one-dimensional"]
ADD_LABELS = ["fresh"] * 8 + ["present", "duplicates", "other kind", "bool", "none", "nan",
                              "fractional float", "integral float", "fresh object"]


def _valid_text(text, m, dim):
    """Whether fit would take ``text`` as the text features of m classes."""
    if text.dtype.kind not in "biufO" or text.shape != (m, dim):
        return False
    try:
        as_float = text.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(as_float).all() and np.any(as_float != 0, axis=1).all())


def _add_classes_or_refuse_clearly(data, context, kind):
    clf = copy.deepcopy(fitted_model(context, kind))
    old = clf.classes_.copy()
    X = np.random.default_rng(1).normal(size=(5, 6))
    before = clf.predict_proba(X)
    m = data.draw(st.integers(1, 3), label="count")
    is_str = old.dtype.kind in "OU"
    fresh = np.array([f"new {i}" for i in range(m)]) if is_str else np.arange(m) + 100
    how = data.draw(st.sampled_from(ADD_LABELS), label="labels")
    labels = {"fresh": fresh, "present": old[:m], "duplicates": np.repeat(fresh[:1], max(m, 2)),
              "other kind": np.arange(m) + 100 if is_str else fresh.astype(str),
              "bool": np.array([True] * m), "none": np.array([None] * m, dtype=object),
              "nan": np.full(m, np.nan), "fractional float": np.arange(m) + 100.5,
              "integral float": np.arange(m) + 100.0,
              "fresh object": fresh.astype(object)}[how]
    n = len(labels)
    gen = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    directions = gen.normal(size=(n, 6))
    scale = data.draw(st.sampled_from(ADD_SCALES), label="scale")
    corrupt = data.draw(st.sampled_from(ADD_TEXT), label="text")
    rows = directions * scale
    if corrupt in ("nan", "inf"):
        rows[data.draw(st.integers(0, n - 1)), 0] = np.nan if corrupt == "nan" else np.inf
    elif corrupt == "zero row":
        rows[0] = 0
    rows = {"wrong width": rows[:, :5], "wrong rows": np.vstack([rows, rows[:1]]),
            "one-dimensional": rows.ravel()}.get(corrupt, rows)
    dtype = data.draw(st.sampled_from(ADD_DTYPES), label="dtype")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = rows.astype(dtype)
    fits = {"b": (), "f": ("fresh", "fresh object", "integral float", "fractional float"),
            "U": ("fresh", "fresh object"), "O": ("fresh", "fresh object")}.get(
        old.dtype.kind, ("fresh", "fresh object", "integral float"))
    valid = how in fits and _valid_text(text, n, 6)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            warnings.simplefilter("error", RuntimeWarning)
            warnings.filterwarnings("ignore", "this model was fitted without new classes")
            clf.add_classes(labels, text_features=text)
    except Exception as exc:  # noqa: BLE001 - judged below
        assert not valid, f"refused valid input {labels!r}, {dtype} text: {exc!r}"
        assert_refused_untouched(exc, clf, old, X, before)
        return
    assert valid, f"accepted {labels!r} with {corrupt} {dtype} text at {scale:g}"
    proba = check_result(clf, X)
    # the same rows at another magnitude (their largest value in [0.5, 1), exactly: a
    # power of two) give the same model
    as_float = text.astype(np.float64)
    _, exponent = np.frexp(np.abs(as_float).max(axis=1, keepdims=True))
    same = copy.deepcopy(fitted_model(context, kind))
    same.add_classes(labels, text_features=np.ldexp(as_float, -exponent))
    np.testing.assert_allclose(proba, same.predict_proba(X), rtol=0, atol=1e-9)


@fuzz(60)
@given(data=st.data(), context=st.sampled_from(["isolated", "batch"]),
       kind=st.sampled_from(["int", "str", "integral float"]))
def test_add_classes_inputs_give_the_model_or_a_clean_error(data, context, kind):
    _add_classes_or_refuse_clearly(data, context, kind)


@pytest.mark.slow  # 600 generated cases
@fuzz(600)
@given(data=st.data(), context=st.sampled_from(["isolated", "batch"]),
       kind=st.sampled_from(["int", "str", "object str", "integral float", "bool"]))
def test_add_classes_inputs_many(data, context, kind):
    _add_classes_or_refuse_clearly(data, context, kind)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_scores_bitwise_among_inputs_of_one_size_at_block_edges(n_jobs):
    """Unpadded inputs of 5 or 33 rows ended in a part of one to three rows (BLAS splits
    rows among threads; the fused attention works in blocks of 32 queries), which takes
    other kernels: a sample's scores then depended on its place in the input."""
    data = make_clip_like_features(n_base=6, n_new=2, dim=512, max_per_class=4,
                                   imbalance_ratio=1.0, n_test_per_class=10, random_state=0)
    clf = _fit(data, max_steps=2, n_jobs=n_jobs)
    X = data.X_test
    for n in (5, 6, 7, 33, 34, 35, 66):
        first = clf.decision_function(X[:n])
        moved = clf.decision_function(np.roll(X[:n], -1, axis=0))
        np.testing.assert_array_equal(moved[-1], first[0])
        np.testing.assert_array_equal(moved[:-1], first[1:])


# ------------------------------------------------- whitened start of the projections
def _literal_whitening(X, y):
    """A literal version: each class's Helmert contrasts one by one, sklearn's OAS
    estimator, S^(-1/2) by scipy, scaled to the identity's norm."""
    from scipy.linalg import sqrtm
    from sklearn.covariance import OAS

    contrasts = []
    for c in np.unique(y):
        xc = X[y == c]
        for k in range(1, len(xc)):
            contrasts.append(np.sqrt(k / (k + 1)) * (xc[:k].mean(0) - xc[k]))
    S = OAS(assume_centered=True).fit(np.array(contrasts)).covariance_
    W = np.linalg.inv(sqrtm(S).real)
    return W * np.sqrt(len(W)) / np.linalg.norm(W)


def test_within_class_whitening_matches_a_literal_computation():
    from candle_sklearn.classifier import _within_class_whitening

    r = rng(1)
    X = r.normal(size=(60, 6)) * np.array([5.0, 1, 1, 1, 1, 0.2]) + 3.0
    y = r.integers(0, 4, 60)
    W = _within_class_whitening(X, y).numpy()
    np.testing.assert_allclose(W, _literal_whitening(X, y), rtol=1e-8, atol=1e-10)
    # the noisy direction is damped, the quiet one raised; the scale of X changes nothing
    assert W[0, 0] < 1 < W[5, 5]
    np.testing.assert_allclose(_within_class_whitening(X * 1e30, y).numpy(), W, rtol=1e-8)


def test_within_class_scatter_is_that_of_independent_deviations():
    """The scatter of the deviations from the class means equals that of the classes'
    Helmert contrasts (n - 1 per class of n, each distributed as one image's noise), so
    dividing by their number estimates the within-class covariance; in chunks as whole."""
    import candle_sklearn.classifier as clf_module

    r = rng(3)
    A = r.normal(size=(4, 4))
    y = np.repeat(np.arange(2000), 3)[:5999]  # the last class has two images
    X = r.multivariate_normal(np.zeros(4), A @ A.T, size=5999) + 10 * r.normal(
        size=(2000, 4))[y]
    contrasts = [np.sqrt(k / (k + 1)) * (X[y == c][:k].mean(0) - X[y == c][k])
                 for c in range(2000) for k in range(1, (y == c).sum())]
    scatter, n = clf_module._within_class_scatter(X, y)
    assert n == len(contrasts) == 3999
    Z = np.array(contrasts)
    np.testing.assert_allclose(scatter.numpy(), Z.T @ Z, rtol=1e-9)
    np.testing.assert_allclose(scatter.numpy() / n, A @ A.T, atol=0.1 * np.abs(A @ A.T).max())
    chunked = clf_module.SCATTER_CHUNK
    try:
        clf_module.SCATTER_CHUNK = 7
        np.testing.assert_allclose(clf_module._within_class_scatter(X, y)[0].numpy(),
                                   scatter.numpy(), rtol=1e-12)
    finally:
        clf_module.SCATTER_CHUNK = chunked


def test_whitening_of_an_isotropic_degenerate_scatter_is_not_rank_deficient():
    """Two classes, each an image and its exact opposite: the scatter is isotropic up to
    rounding, where scikit-learn's OAS formula can give a shrinkage of -7e15 and S
    negative eigenvalues (found by review); kept in [0, 1], the start is the identity."""
    from candle_sklearn.classifier import _within_class_whitening

    r = rng(5)
    for _ in range(200):
        a = r.normal(size=2)
        c = np.array([-a[1], a[0]])  # a turned by 90 degrees: a a^T + c c^T = |a|^2 I
        X = np.array([a, -a, c, -c], dtype=np.float32)
        W = _within_class_whitening(X, np.array([0, 0, 1, 1]))
        if W is not None:
            W = W.numpy()
            assert np.isfinite(W).all()
            s = np.linalg.svd(W, compute_uv=False)
            assert s.max() / s.min() < 10, s


@pytest.mark.parametrize("n, dim, n_classes", [(20, 96, 5), (60, 64, 30), (9, 40, 3)])
def test_whitening_from_fewer_images_than_features_is_the_full_computation(n, dim,
                                                                           n_classes):
    """With fewer images than features the start comes from the deviations' Gram matrix,
    not a (D, D) eigendecomposition: the same S^(-1/2), to rounding."""
    import candle_sklearn.classifier as clf_module

    r = rng(n)
    y = np.sort(np.r_[np.arange(n_classes), r.integers(0, n_classes, n - n_classes)])
    X = r.normal(size=(n_classes, dim))[y] * 2 + r.normal(size=(n, dim)) * np.linspace(
        0.2, 3, dim)
    scatter, n_dev = clf_module._within_class_scatter(X, y)
    scatter /= scatter.diagonal().max()
    values, V = np.linalg.eigh(clf_module._oas(scatter / n_dev, n_dev).numpy())
    full = (V / np.sqrt(values)) @ V.T
    full *= np.sqrt(dim) / np.linalg.norm(full)
    np.testing.assert_allclose(clf_module._within_class_whitening(X, y).numpy(), full,
                               rtol=0, atol=1e-10)


def test_few_images_per_class_start_at_about_the_identity():
    """Two images per class in many dimensions: too little to estimate a covariance, so
    the shrinkage keeps the start at (about) the identity."""
    from candle_sklearn.classifier import _within_class_whitening

    r = rng(4)
    y = np.repeat(np.arange(25), 2)
    X = r.normal(size=(25, 256))[y] + 0.5 * r.normal(size=(50, 256))
    W = _within_class_whitening(X, y).numpy()
    assert np.linalg.norm(W - np.eye(256)) / np.sqrt(256) < 0.02


def test_within_class_whitening_needs_variation_within_classes():
    from candle_sklearn.classifier import _within_class_whitening

    X = rng(2).normal(size=(5, 4))
    assert _within_class_whitening(X, np.arange(5)) is None  # one image per class
    assert _within_class_whitening(np.ones((6, 4)), np.repeat([0, 1, 2], 2)) is None


def test_default_recipe_starts_whitened_and_the_reference_at_the_identity(small_data):
    from candle_sklearn.classifier import _within_class_whitening

    d = small_data
    # a learning rate too small to move the projections: they stay at their start
    kw = dict(lr=1e-30, max_steps=1, new_class_bias=0.0)
    fitted = _fit(d, **kw)
    X = (d.X_train / fitted.feature_scale_).astype(np.float32)
    rank = np.argsort(fitted.head_order_)
    start = _within_class_whitening(X, rank[np.searchsorted(fitted.classes_,
                                                            d.y_train)]).numpy()
    np.testing.assert_allclose(fitted.head_.W_v.detach().numpy(), start, atol=1e-6)
    np.testing.assert_allclose(fitted.head_.W_t.detach().numpy(), start, atol=1e-6)
    # the reference's warm-up step (lr 1e-5) moves its identity start a little
    reference = _fit(d, recipe="reference", **kw)
    np.testing.assert_allclose(reference.head_.W_v.detach().numpy(), np.eye(X.shape[1]),
                               atol=1e-4)
    assert np.abs(start - np.eye(X.shape[1])).max() > 0.01  # 8 classes in 32 dimensions
