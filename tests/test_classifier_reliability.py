"""Regression tests for the classifier items of issue 10 (one test per item), and for the
bugs the classifier fuzz (test_fuzz_classifier.py) found."""

import copy
import re
import warnings

import numpy as np
import pytest

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.exceptions import TrainingDivergedError
from candle_sklearn.metrics import base_new_accuracy

from .conftest import FAST


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
    depended on its position in the batch. Found by the fuzz."""
    gen = np.random.default_rng(dim)
    y = np.arange(40) % 5
    X = gen.normal(size=(40, dim)) + 2 * gen.normal(size=(5, dim))[y]
    for context in ("isolated", "batch"):
        clf = CandleClassifier(**{**QUICK, "context": context}).fit(X, y)
        full = clf.decision_function(X)
        for i in range(8):
            assert clf.decision_function(X[i:i + 1])[0].tobytes() == full[i].tobytes()


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


def test_seeded_seeds_and_restores_the_mps_generator(monkeypatch):
    """On MPS, dropout draws from the MPS generator: a seeded fit seeds it (so that
    random_state reproduces the fit) and restores the caller's state after."""
    import torch

    from candle_sklearn._train import seeded

    calls, state = [], {"mps": torch.tensor([7])}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda device="mps": state["mps"])
    monkeypatch.setattr(torch.mps, "set_rng_state",
                        lambda new, device="mps": calls.append(("restore", int(new[0]))))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda seed: calls.append(("seed", seed)))
    with seeded(5, torch.device("mps")):
        assert calls == [("seed", 5)]
    assert calls == [("seed", 5), ("restore", 7)]


def test_one_shot_data_is_not_called_a_regression_problem():
    # scikit-learn warns when more than half of 20+ samples are distinct classes
    one_shot = make_clip_like_features(n_base=24, n_new=2, dim=16, max_per_class=1,
                                       imbalance_ratio=1.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _clf(one_shot, new_class_bias=0.0).fit(one_shot.X_train, one_shot.y_train)
