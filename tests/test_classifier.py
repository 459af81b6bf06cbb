import hashlib
import io

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy

from .conftest import FAST


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
    # bitwise: fixed-shape float32 chunks give every row the same kernels
    np.testing.assert_array_equal(clf.predict_proba(X[perm]), full[perm])
    one_by_one = np.vstack([clf.predict_proba(X[i:i + 1]) for i in range(0, len(X), 17)])
    np.testing.assert_array_equal(one_by_one, full[::17])
    mixed = np.vstack([X[:3], X[::-1], 100 * X[:5]])  # other chunk-mates, other chunks
    np.testing.assert_array_equal(clf.predict_proba(mixed)[:3], full[:3])


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
    np.testing.assert_array_equal(alone, clf.decision_function(X))


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


def test_grid_search_over_tau_in_a_pipeline(small_data):
    keep = np.isin(small_data.y_train, np.flatnonzero(small_data.train_counts >= 3))
    X, y = small_data.X_train[keep], small_data.y_train[keep]
    pipe = make_pipeline(StandardScaler(), CandleClassifier(**FAST))
    search = GridSearchCV(pipe, {"candleclassifier__tau": [0.0, 1.0, 2.0]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["candleclassifier__tau"] in (0.0, 1.0, 2.0)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.score(small_data.X_test[:40], small_data.y_test[:40]) >= 0


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
    """Scores are z^vt + visual_weight * z^vv; training is the same whatever the weight."""
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
    want = (zvt + weight * zvv)[:, np.argsort(clf.head_order_)]
    np.testing.assert_allclose(clf.decision_function(d.X_test[:5], calibrated=False), want,
                               rtol=1e-4, atol=1e-3)
    other = CandleClassifier(classes=d.classes, text_features=d.text_features,
                             new_class_bias=0.0, context=context, visual_weight=0.25,
                             **FAST).fit(d.X_train, d.y_train)
    np.testing.assert_array_equal(other.history_, clf.history_)
