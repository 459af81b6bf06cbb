"""new_class_bias (joint calibration of base and new classes) and add_classes."""

import io
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.preprocessing import normalize

from candle_sklearn import CandleClassifier
from candle_sklearn._calibration import (ZERO_SHOT_WEIGHTS, best_bias, choose_calibration,
                                         class_balanced_weights, joint_hm_by_bias,
                                         plateau_bias)
from candle_sklearn._train import auto_lr
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy, make_base_new_scorer

from .conftest import FAST


@pytest.fixture(scope="module")
def data():
    """20 base and 10 new classes, 64-dim: enough base classes to hold some out."""
    return make_clip_like_features(n_base=20, n_new=10, dim=64, max_per_class=40,
                                   n_test_per_class=20, random_state=0)


def _fit(data, **params):
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           **{**FAST, "max_epochs": 8, **params})
    return clf.fit(data.X_train, data.y_train)


def _joint(clf, data):
    return base_new_accuracy(data.y_test, clf.decision_function(data.X_test), clf.classes_,
                             data.new_classes, protocol="joint")


def test_best_bias_is_exact_on_a_toy_case():
    # columns: base 0, base 1, new 2; rows 0-1 base samples, rows 2-3 new samples
    scores = np.array([[5.0, 1, 3], [1, 6, 2], [4, 0, 1], [0, 3, 2.5]])
    y = np.array([0, 1, 2, 2])
    is_new_col = np.array([False, False, True])
    is_new_row = np.array([False, False, True, True])
    bias, hm = best_bias(scores, y, is_new_col, is_new_row)
    # row flips to new above bias 2, 4, 3, 0.5: biases in (0.5, 2) give base 1, new 1/2;
    # biases in (3, 4) give base 1/2, new 1; both HM 2/3, nothing does better
    assert hm == pytest.approx(2 / 3)
    assert 0.5 < bias < 2 or 3 < bias < 4
    got = joint_hm_by_bias(scores, y, is_new_col, is_new_row, [bias])[0]
    assert got == hm
    grid = np.linspace(-10, 10, 2001)
    assert hm >= joint_hm_by_bias(scores, y, is_new_col, is_new_row, grid).max() - 1e-12


def test_best_bias_needs_both_kinds_of_rows():
    with pytest.raises(ValueError, match="both base and new"):
        best_bias(np.zeros((2, 3)), np.array([0, 1]), np.array([False, False, True]),
                  np.array([False, False]))


def test_zero_bias_keeps_previous_behaviour(data):
    a = _fit(data, new_class_bias=0.0)
    assert a.new_class_bias_ == 0.0 and a.calibration_ is None
    scores = a.decision_function(data.X_test)
    import torch

    from candle_sklearn._inference import HeadScorer
    raw = HeadScorer(a.head_, torch.device("cpu"))(data.X_test / a.feature_scale_).numpy()
    np.testing.assert_allclose(scores[:, a.head_order_], raw, rtol=1e-6, atol=1e-5)


def test_auto_bias_is_deterministic_and_lifts_joint_hm(data):
    auto = _fit(data)
    again = _fit(data)
    assert auto.new_class_bias_ == again.new_class_bias_
    assert len(auto.calibration_["held_out"]) == auto.calibration_repeats == 3
    plain = _fit(data, new_class_bias=0.0)
    joint_plain, joint_auto = _joint(plain, data), _joint(auto, data)
    assert auto.new_class_bias_ > 0
    assert joint_auto["hm"] > joint_plain["hm"] + 0.3, (joint_plain, joint_auto)
    # the head is the same: its uncalibrated scores, which the reference protocol
    # evaluates, are those of the uncalibrated model
    np.testing.assert_array_equal(auto.decision_function(data.X_test, calibrated=False),
                                  plain.decision_function(data.X_test))
    scorer = make_base_new_scorer("hm")
    assert scorer(auto, data.X_test, data.y_test) == scorer(plain, data.X_test, data.y_test)


def test_calibrated_probabilities_match_accuracy_better(data):
    """predict_proba was badly overconfident (issue 26, item 2: 61 % of probabilities
    above 0.999, 17 % of those wrong): calibrated probabilities divide the scores by a
    temperature fitted on the held-out classes. Predictions do not change."""
    from scipy.special import softmax
    from sklearn.metrics import log_loss

    auto = _fit(data)
    assert auto.temperature_ > 1
    scores = auto.decision_function(data.X_test)
    proba = auto.predict_proba(data.X_test)
    np.testing.assert_allclose(proba, softmax(scores / auto.temperature_, axis=1),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(auto.predict_log_proba(data.X_test), np.log(proba),
                               rtol=1e-6, atol=1e-10)
    np.testing.assert_array_equal(auto.classes_[proba.argmax(1)], auto.predict(data.X_test))
    raw = softmax(scores, axis=1)
    assert log_loss(data.y_test, proba, labels=auto.classes_) < log_loss(
        data.y_test, raw, labels=auto.classes_)
    np.testing.assert_allclose(auto.predict_proba(data.X_test, calibrated=False),
                               softmax(auto.decision_function(data.X_test, calibrated=False),
                                       axis=1), rtol=1e-10, atol=1e-12)
    assert _fit(data, new_class_bias=0.0).temperature_ == 1.0  # nothing held out


def test_auto_without_new_classes_is_zero(data):
    base = np.isin(data.y_train, data.base_classes)
    clf = CandleClassifier(**FAST).fit(data.X_train[base], data.y_train[base])
    assert clf.new_class_bias_ == 0.0


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_bias(data, bad):
    with pytest.raises(ValueError, match="new_class_bias"):
        _fit(data, new_class_bias=bad)


# ------------------------------------------------------------------ add_classes
def _fit_then_add(data, added):
    known = np.setdiff1d(data.classes, added)
    clf = CandleClassifier(classes=known, text_features=data.text_features[known],
                           **{**FAST, "max_epochs": 8})
    clf.fit(data.X_train, data.y_train)
    return clf.add_classes(added, text_features=data.text_features[added])


def test_add_classes_columns_follow_sorted_classes(data):
    added = np.array([27, 22, 29])
    clf = _fit_then_add(data, added)
    np.testing.assert_array_equal(clf.classes_, data.classes)
    np.testing.assert_array_equal(clf.new_classes_, data.new_classes)
    np.testing.assert_array_equal(clf.class_counts_, data.train_counts)
    np.testing.assert_allclose(clf.text_features_, data.text_features)
    proba = clf.predict_proba(data.X_test)
    assert proba.shape == (len(data.X_test), 30)
    # the added classes' own images are recognised among the new classes
    is_added = np.isin(data.y_test, added)
    ref = base_new_accuracy(data.y_test[is_added], proba[is_added], clf.classes_, added)
    assert ref["new"] > 0.6  # chance among 3 added classes: 1/3


def test_add_classes_to_a_model_without_new_classes(data):
    base = np.isin(data.y_train, data.base_classes)
    clf = CandleClassifier(classes=data.base_classes,
                           text_features=data.text_features[data.base_classes], **FAST)
    clf.fit(data.X_train[base], data.y_train[base])
    added = dict(text_features=data.text_features[data.new_classes])
    # nothing calibrated the bias for new classes: it warns (found by a review)
    with pytest.warns(UserWarning, match="fitted without new classes.*rarely predicted"):
        clf.add_classes(data.new_classes, **added)
    ref = base_new_accuracy(data.y_test, clf.predict_proba(data.X_test), clf.classes_,
                            data.new_classes)
    assert ref["new"] > 0.3  # chance among 10 new classes: 0.1
    fixed = clone(clf).set_params(new_class_bias=0.0).fit(data.X_train[base],
                                                          data.y_train[base])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bias the user chose: no warning
        fixed.add_classes(data.new_classes, **added)
        refit = clone(clf).fit(data.X_train[base], data.y_train[base])
        refit.new_class_bias_ = 5.0  # set after fit, as the warning suggests
        refit.add_classes(data.new_classes, **added)


def test_pickle_keeps_bias_and_added_classes(data):
    clf = _fit_then_add(data, np.array([25]))
    buf = io.BytesIO()
    joblib.dump(clf, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    assert loaded.new_class_bias_ == clf.new_class_bias_
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    np.testing.assert_array_equal(loaded.predict_proba(data.X_test),
                                  clf.predict_proba(data.X_test))


def test_add_classes_errors(data):
    clf = _fit(data, new_class_bias=0.0)
    with pytest.raises(ValueError, match=r"already present in classes_: \[3\]"):
        clf.add_classes([3, 40], text_features=np.ones((2, 64)))
    with pytest.raises(ValueError, match="text features must have shape"):
        clf.add_classes([40], text_features=np.ones((1, 63)))
    with pytest.raises(ValueError, match="same kind"):
        clf.add_classes(["cat"], text_features=np.ones((1, 64)))
    with pytest.raises(ValueError, match="duplicates"):
        clf.add_classes([40, 40], text_features=np.ones((2, 64)))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        CandleClassifier().add_classes([1], text_features=np.ones((1, 64)))
    base = np.isin(data.y_train, data.base_classes)
    no_text = CandleClassifier(**FAST).fit(data.X_train[base], data.y_train[base])
    with pytest.raises(ValueError, match="fitted without text"):
        no_text.add_classes([40], text_features=np.ones((1, 64)))


def test_best_new_class_bias_on_labelled_samples(data):
    from candle_sklearn.metrics import best_new_class_bias
    clf = _fit(data, new_class_bias=0.0)
    half = np.arange(len(data.y_test)) % 2 == 0  # choose on one half, judge on the other
    bias = best_new_class_bias(clf, data.X_test[half], data.y_test[half])
    before = base_new_accuracy(data.y_test[~half], clf.decision_function(data.X_test[~half]),
                               clf.classes_, data.new_classes, protocol="joint")["hm"]
    clf.new_class_bias_ = bias
    after = base_new_accuracy(data.y_test[~half], clf.decision_function(data.X_test[~half]),
                              clf.classes_, data.new_classes, protocol="joint")["hm"]
    assert after > before + 0.3
    with pytest.raises(ValueError, match="not in classes_"):
        best_new_class_bias(clf, data.X_test[:2], [0, 99])


# ------------------------------------------------------------ zero-shot blend, lr="auto"
def test_class_balanced_weights_count_every_class_once():
    y = np.array([0, 0, 0, 1, 2, 2])
    w = class_balanced_weights(y)
    np.testing.assert_allclose(np.bincount(y, weights=w), [1, 1, 1])
    # a bias's joint HM under these weights is the mean of per-class accuracies
    scores = np.array([[2.0, 0, 1], [2, 0, 1], [2, 0, 1], [0, 1, 3], [0, 0, 1], [2, 0, 1]])
    is_new_col = np.array([False, False, True])
    hm = joint_hm_by_bias(scores, y, is_new_col, y == 2, [0.0], weights=w)[0]
    base, new = (1 + 0) / 2, 0.5  # class 0 right, class 1 wrong; class 2: one of two
    assert hm == pytest.approx(2 * base * new / (base + new))


def test_fixed_zero_shot_weight_blends_the_calibrated_scores(data):
    clf = _fit(data, new_class_bias=3.0, zero_shot_weight=0.25)
    assert clf.zero_shot_weight_ == 0.25 and clf.new_class_bias_ == 3.0
    head = clf.decision_function(data.X_test, calibrated=False)
    X = data.X_test / np.linalg.norm(data.X_test, axis=1, keepdims=True)
    T = clf.text_features_ / np.linalg.norm(clf.text_features_, axis=1, keepdims=True)
    expected = 0.75 * head + 0.25 * 100 * X @ T.T
    expected[:, clf.class_counts_ == 0] += 3.0
    np.testing.assert_allclose(clf.decision_function(data.X_test), expected, rtol=1e-5,
                               atol=1e-3)
    # calibrated=False stays the head's own scores, also in predict_proba
    np.testing.assert_allclose(clf.predict_proba(data.X_test, calibrated=False),
                               _fit(data, new_class_bias=0.0).predict_proba(data.X_test),
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="zero_shot_weight"):
        CandleClassifier(zero_shot_weight=0.5, **FAST).fit(data.X_train, data.y_train)


def test_auto_chooses_the_weight_with_the_best_held_out_hm(data):
    clf = _fit(data)
    table = clf.calibration_["by_zero_shot_weight"]
    assert set(table) == {f"{w:g}" for w in ZERO_SHOT_WEIGHTS}
    best = max(table.values(), key=lambda r: r["held_out_hm"])
    assert table[f"{clf.zero_shot_weight_:g}"]["held_out_hm"] == best["held_out_hm"]
    assert clf.new_class_bias_ == table[f"{clf.zero_shot_weight_:g}"]["bias"]
    # a fixed weight is kept, and only the bias is chosen
    fixed = _fit(data, zero_shot_weight=0.0)
    assert fixed.zero_shot_weight_ == 0.0
    assert set(fixed.calibration_["by_zero_shot_weight"]) == {"0"}


def _record_fits(monkeypatch):
    """The training-set size of every CandleClassifier.fit from now on (the fit, then
    each calibration refit)."""
    sizes = []
    real_fit = CandleClassifier.fit
    monkeypatch.setattr(CandleClassifier, "fit",
                        lambda self, X, y: sizes.append(len(y)) or real_fit(self, X, y))
    return sizes


def test_one_image_per_class_falls_back_to_zero_shot_without_refits(monkeypatch):
    one = make_clip_like_features(n_base=8, n_new=4, dim=32, max_per_class=1,
                                  imbalance_ratio=1.0, n_test_per_class=10, random_state=1)
    refits = _record_fits(monkeypatch)
    clf = CandleClassifier(classes=one.classes, text_features=one.text_features, **FAST)
    clf.fit(one.X_train, one.y_train)
    assert refits == [len(one.y_train)]  # no held-out refit: nothing can be held back
    assert clf.zero_shot_weight_ == 1.0 and clf.calibration_["method"] == "zero-shot rate"
    zero_shot = base_new_accuracy(one.y_test, one.X_test @ one.text_features.T, one.classes,
                                  one.new_classes, protocol="joint")["hm"]
    assert _joint(clf, one)["hm"] >= zero_shot - 0.05


@pytest.mark.parametrize("shots, method", [(2, "few images per class"),
                                           (3, "few images per class"),
                                           (4, "held-out classes")])
def test_fewer_than_four_images_per_class_use_zero_shot_clip(monkeypatch, shots, method):
    """Holding back one image of a class of two or three leaves its refit a half or two
    thirds of them, and the bias chosen on such refits errs low: below a median of four
    images per base class the calibrated scores are zero-shot CLIP's, without refits."""
    few = make_clip_like_features(n_base=6, n_new=3, dim=32, max_per_class=shots,
                                  imbalance_ratio=1.0, n_test_per_class=5, random_state=0)
    refits = _record_fits(monkeypatch)
    clf = CandleClassifier(classes=few.classes, text_features=few.text_features, **FAST)
    clf.fit(few.X_train, few.y_train)
    assert clf.calibration_["method"] == method
    if method == "few images per class":
        assert refits == [len(few.y_train)]
        assert (clf.zero_shot_weight_, clf.new_class_bias_) == (1.0, 0.0)
        assert clf.calibration_["median_images"] == shots
        np.testing.assert_allclose(  # the calibrated scores are zero-shot CLIP's
            clf.decision_function(few.X_test),
            100 * normalize(few.X_test) @ normalize(few.text_features).T, atol=1e-4)
    else:
        assert len(refits) == 1 + clf.calibration_repeats
    # a fixed weight keeps the held-out refits: zero-shot CLIP is not the model asked for
    fixed = CandleClassifier(classes=few.classes, text_features=few.text_features,
                             zero_shot_weight=0.0, **FAST).fit(few.X_train, few.y_train)
    assert fixed.calibration_["method"] == "held-out classes"


@pytest.mark.parametrize("counts, method", [([1, 1, 1, 4, 9, 20], "held-out classes"),
                                            ([1, 1, 1, 1, 3, 3, 4], "few images per class"),
                                            ([2, 3, 4, 5], "few images per class"),
                                            ([2, 4, 4, 5], "held-out classes")])
def test_the_median_counts_the_classes_an_image_is_held_back_from(counts, method):
    """Classes of one image stay whole in the refits: a long tail of them does not make
    the head classes' refits any poorer (median of [4, 9, 20] is 9), nor do they make
    few-image classes richer (median of [3, 3, 4] is 3; of [2, 3, 4, 5], 3.5)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(counts) + 2, 16))
    y = np.repeat(np.arange(len(counts)), counts)
    X = centres[y] + 0.2 * rng.standard_normal((len(y), 16))
    clf = CandleClassifier(classes=np.arange(len(counts) + 2), text_features=centres,
                           **FAST).fit(X, y)
    assert clf.calibration_["method"] == method
    if method == "few images per class":
        many = np.array(counts)[np.array(counts) >= 2]
        assert clf.calibration_["median_images"] == np.median(many)
        assert (clf.zero_shot_weight_, clf.new_class_bias_) == (1.0, 0.0)


def test_one_base_class_of_few_images_still_warns():
    """One base class: nothing to hold out, whatever its images; the warning stays."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    X = centres[[0, 0, 0]] + 0.1 * rng.standard_normal((3, 16))
    with pytest.warns(UserWarning, match="at least two base classes"):
        clf = CandleClassifier(classes=[0, 1, 2], text_features=centres, **FAST).fit(
            X, [0, 0, 0])
    assert clf.calibration_["method"] == "zero-shot rate"


@pytest.mark.parametrize("seed", range(12))
def test_every_refit_keeps_a_class_with_images_to_hold_back(seed):
    """One base class of six images and two of one: a draw that held out the six-image
    class left nothing to score base accuracy on and was skipped; with all three
    skipped, the model fell back to zero-shot CLIP without a word."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16))
    y = np.array([0] * 6 + [1, 2])  # class 3 is new
    X = centres[y] + 0.1 * rng.standard_normal((len(y), 16))
    clf = CandleClassifier(classes=[0, 1, 2, 3], text_features=centres, max_steps=2,
                           device="cpu", random_state=seed).fit(X, y)
    assert clf.calibration_["method"] == "held-out classes"
    assert len(clf.calibration_["held_out"]) == clf.calibration_repeats
    assert all(0 not in held for held in clf.calibration_["held_out"])


def test_auto_learning_rate_and_steps_taken(data):
    clf = _fit(data, max_epochs=None, max_steps=7, batch_size=32)
    assert clf.lr_ == auto_lr(len(data.y_train), data.X_train.shape[1])
    assert clf.n_iter_ == 7
    assert auto_lr(5000, 512) == pytest.approx(1e-3)
    assert auto_lr(5000, 1024) == pytest.approx(5e-4)
    assert auto_lr(600, 256) == pytest.approx(6e-4)
    assert auto_lr(200, 512) == pytest.approx(3e-4)  # at least 0.3x from 90 samples
    assert auto_lr(90, 512) == pytest.approx(3e-4)
    assert auto_lr(30, 512) == pytest.approx(1e-4)  # n / 300 below: ten images barely
    assert auto_lr(10, 1024) == pytest.approx(1e-3 / 60)  # move the head from zero-shot
    assert _fit(data, lr=2e-3).lr_ == 2e-3
    defaults = CandleClassifier(classes=data.classes, text_features=data.text_features,
                                device="cpu", random_state=0, new_class_bias=0.0)
    n = len(data.y_train)
    assert defaults.fit(data.X_train, data.y_train).n_iter_ == min(20 * -(-n // 128), 200)


def test_weight_one_is_zero_shot_clip_itself_with_no_bias(data):
    rng = np.random.default_rng(0)
    n, c = 60, 6
    new_col = np.arange(c) >= 4
    y = rng.integers(0, c, n)
    zero_shot = rng.normal(size=(n, c)) + 3.0 * (np.arange(c)[None] == y[:, None])
    draw = {"scores": rng.normal(size=(n, c)), "zero_shot": zero_shot, "y": y,
            "new_col": new_col, "new_row": new_col[y], "weights": np.ones(n)}
    # held-out classes would ask for some bias on zero-shot CLIP's own scores...
    assert plateau_bias(zero_shot, y, new_col, new_col[y], 0.02)[0] != 0
    table = choose_calibration([draw], 0.02)[2]
    # ...but weight 1 is zero-shot CLIP as it is, judged at bias 0
    assert table[1.0][0] == 0.0
    assert table[1.0][1] == pytest.approx(
        joint_hm_by_bias(zero_shot, y, new_col, new_col[y], [0.0])[0])
    # a model that falls back to zero-shot CLIP predicts exactly as it does
    clf = _fit(data, zero_shot_weight=1.0)
    assert clf.new_class_bias_ == 0.0
    X = data.X_test / np.linalg.norm(data.X_test, axis=1, keepdims=True)
    T = clf.text_features_ / np.linalg.norm(clf.text_features_, axis=1, keepdims=True)
    np.testing.assert_allclose(clf.decision_function(data.X_test), 100 * X @ T.T,
                               rtol=1e-5, atol=1e-3)


def test_merits_at_each_draws_best_bias_and_at_the_bias_used():
    """By default a weight's merit is the mean of each draw's best held-out joint HM
    (an in-sample maximum); the table also records the HM at the averaged bias the model
    uses, which ``merit="used"`` chooses by. Weight 1 is judged at its bias 0 in both."""
    rng = np.random.default_rng(1)
    n, c = 80, 8
    new_col = np.arange(c) >= 5
    draws = []
    for _ in range(3):
        y = rng.integers(0, c, n)
        truth = 3.0 * (np.arange(c)[None] == y[:, None])
        draws.append({"scores": rng.normal(size=(n, c)) + truth + 2.0 * ~new_col,
                      "zero_shot": rng.normal(size=(n, c)) + truth, "y": y,
                      "new_col": new_col, "new_row": new_col[y], "weights": np.ones(n)})
    best, used = (choose_calibration(draws, 0.02, merit=m)[2] for m in ("best", "used"))
    for w, (bias, merit, at_bias) in best.items():
        blend = [d["zero_shot"] if w == 1 else (1 - w) * d["scores"] + w * d["zero_shot"]
                 for d in draws]
        assert at_bias == pytest.approx(np.mean([
            joint_hm_by_bias(s, d["y"], new_col, d["new_row"], [bias])[0]
            for s, d in zip(blend, draws)]))
        assert used[w] == (bias, at_bias, at_bias)
        assert merit >= at_bias
    assert best[1.0][1] == best[1.0][2]
    assert all(best[w][1] > best[w][2] for w in best if w != 1)


def test_fit_temperature_undoes_overconfidence():
    """Labels drawn from softmax(logits) and scores of 8 times those logits: the fitted
    temperature is about 8, whatever the zero-shot blend and the bias do to the rows."""
    from candle_sklearn._calibration import fit_temperature

    rng = np.random.default_rng(0)
    n, c = 4000, 6
    logits = rng.normal(0, 2, (n, c))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    new_col = np.arange(c) >= 4
    draw = {"scores": 8 * logits - np.where(new_col, 3.0, 0.0), "zero_shot": 8 * logits,
            "y": y, "new_col": new_col, "weights": np.ones(n)}
    assert fit_temperature([draw], 0.0, 3.0) == pytest.approx(8, rel=0.1)  # bias undone
    assert fit_temperature([draw], 1.0, 0.0) == pytest.approx(8, rel=0.1)  # zero-shot rows
    assert fit_temperature([{**draw, "zero_shot": logits}], 1.0, 0.0) == pytest.approx(
        1, rel=0.1)


@pytest.mark.parametrize("seed", range(4))
def test_fit_temperature_finds_the_log_loss_minimum(seed):
    """Against a fine grid of temperatures on the same draws (two of them, a blend and a
    bias): the fitted one's log loss is the grid's best or better."""
    from candle_sklearn._calibration import fit_temperature

    rng = np.random.default_rng(seed)
    draws = []
    for n, c in ((300, 12), (200, 12)):
        scores = rng.normal(0, 5, (n, c))
        y = np.where(rng.random(n) < 0.6, scores.argmax(1), rng.integers(0, c, n))
        draws.append({"scores": scores * rng.uniform(1, 30), "zero_shot": rng.normal(0, 3, (n, c)),
                      "y": y, "new_col": np.arange(c) >= 8, "weights": rng.uniform(0.5, 2, n)})

    def log_loss(t):
        total = 0.0
        for d in draws:
            s = 0.75 * d["scores"] + 0.25 * d["zero_shot"] + np.where(d["new_col"], 2.0, 0)
            s = s / t
            lse = np.logaddexp.reduce(s, axis=1)
            total += d["weights"] @ (lse - s[np.arange(len(d["y"])), d["y"]]) / d["weights"].sum()
        return total

    t = fit_temperature(draws, 0.25, 2.0)
    grid = np.exp(np.linspace(np.log(0.1), np.log(1e4), 2000))
    assert log_loss(t) <= min(log_loss(g) for g in grid) + 1e-9


@pytest.mark.parametrize("tolerance", [0.0, 0.06, 0.3])
def test_plateau_tolerance_is_on_the_error(tolerance):
    """plateau_bias takes the largest bias whose joint error 1 - HM is within
    ``tolerance`` of the best bias's error (not of its HM): near an HM of 1 the plateau
    is narrow, where a tolerance on HM would admit biases that double the error."""
    rng = np.random.default_rng(1)
    n, c = 300, 8
    new_col = np.arange(c) >= 5
    y = rng.integers(0, c, n)
    scores = rng.normal(size=(n, c)) + 2.5 * (np.arange(c)[None] == y[:, None])
    bias, best = plateau_bias(scores, y, new_col, new_col[y], tolerance)
    # the biases at which some prediction flips: one candidate inside each interval
    gaps = np.sort(scores[:, ~new_col].max(1) - scores[:, new_col].max(1))
    candidates = np.concatenate([[gaps[0] - 1], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] + 1]])
    hm = joint_hm_by_bias(scores, y, new_col, new_col[y], candidates)
    assert best == hm.max()
    assert bias == candidates[hm >= best - tolerance * (1 - best) - 1e-12].max()
    if tolerance == 0.3:  # a wider tolerance reaches further
        assert bias > plateau_bias(scores, y, new_col, new_col[y], 0.0)[0]
