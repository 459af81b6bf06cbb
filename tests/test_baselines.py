import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import normalize
from sklearn.utils.estimator_checks import (check_estimator_cloneable, check_estimator_repr,
                                            check_get_params_invariance,
                                            check_no_attributes_set_in_init,
                                            check_parameters_default_constructible,
                                            parametrize_with_checks)

from candle_sklearn.cli.scores import zero_shot_scores
from candle_sklearn.baselines import LinearProbeClassifier, ZeroShotClassifier


@parametrize_with_checks([LinearProbeClassifier(tau=1.0)])
def test_linear_probe_sklearn_compatible(estimator, check):
    check(estimator)


# ZeroShotClassifier needs one text feature per class of the data's dimension, which the
# generic checks cannot supply; the checks that do not fit on generic data apply.
@pytest.mark.parametrize("check", [check_no_attributes_set_in_init,
                                   check_parameters_default_constructible,
                                   check_get_params_invariance, check_estimator_repr,
                                   check_estimator_cloneable])
def test_zero_shot_contract_checks(check):
    check("ZeroShotClassifier", ZeroShotClassifier())


def test_zero_shot_matches_cosine_argmax(small_data):
    d = small_data
    zs = ZeroShotClassifier(d.classes, text_features=d.text_features).fit(d.X_test)
    scores = zero_shot_scores(d.X_test, d.text_features)
    np.testing.assert_array_equal(zs.predict(d.X_test), d.classes[scores.argmax(1)])
    np.testing.assert_allclose(zs.decision_function(d.X_test), scores, rtol=1e-5, atol=1e-4)
    proba = zs.predict_proba(d.X_test)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(zs.predict_log_proba(d.X_test)), proba, atol=1e-6)
    assert zs.score(d.X_test, d.y_test) > 0.3  # far above chance (1/12)


def test_zero_shot_sorts_classes_and_aligns_text():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(3, 8)).astype(np.float32)
    zs = ZeroShotClassifier(["c", "a", "b"], text_features=text).fit(np.zeros((1, 8)))
    assert zs.classes_.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(zs.text_features_[0], normalize(text)[1], rtol=1e-6)
    assert zs.predict(text[[0]] * 3).tolist() == ["c"]
    assert zs.class_names_.tolist() == ["a", "b", "c"]


def test_zero_shot_with_encoder_templates_and_y():
    class Encoder:
        def encode_text(self, texts):
            # one direction per class word, plus a template-dependent offset
            words = {"cat": 0, "dog": 1, "fox": 2}
            out = np.zeros((len(texts), 4))
            for i, t in enumerate(texts):
                out[i, next(v for k, v in words.items() if k in t)] = 1.0
                out[i, 3] = 0.1 * len(t)
            return out

    X = np.eye(4)[:3]
    zs = ZeroShotClassifier(encoder=Encoder(), templates=[lambda c: f"a {c}", "the {}!"])
    zs.fit(X, ["cat", "dog", "fox"])  # classes from y
    assert zs.predict(X).tolist() == ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match="not in classes"):
        clone(zs).set_params(classes=["cat", "dog"]).fit(X, ["cat", "dog", "fox"])


def test_zero_shot_binary_decision_function_and_pipeline():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    zs = make_pipeline(ZeroShotClassifier([0, 1], text_features=text))
    X = np.array([[2.0, 0.5], [0.1, 3.0]])
    zs.fit(X)
    assert zs.decision_function(X).shape == (2,)
    assert zs.predict(X).tolist() == [0, 1]


@pytest.mark.parametrize("params, X, y, match", [
    ({}, np.zeros((2, 3)), None, "needs classes"),
    ({"classes": [0, 1]}, np.zeros((2, 3)), None, "needs text"),
    ({"classes": [0, 1], "text_features": np.zeros((3, 2))}, np.zeros((2, 3)), None,
     "text_features_from_open_clip"),
    ({"classes": [0, 1], "text_features": np.zeros((2, 4))}, np.zeros((2, 3)), None,
     r"\(2, 3\), got \(2, 4\)"),
    ({"classes": [0, 1], "text_features": [[np.nan, 0, 0], [0, 1, 0]]}, np.zeros((2, 3)),
     None, "NaN"),
    ({"classes": [0, 0], "text_features": np.eye(2, 3)}, np.zeros((2, 3)), None,
     "duplicates"),
    ({"classes": [0, 1], "encoder": object()}, np.zeros((2, 3)), None, "encoder"),
    ({"classes": [0, 1], "text_features": np.eye(2, 3), "templates": "nope"},
     np.zeros((2, 3)), None, None),  # templates unused with text_features: no error
])
def test_zero_shot_errors_name_the_problem(params, X, y, match):
    zs = ZeroShotClassifier(**params)
    if match is None:
        zs.fit(X, y)
        return
    with pytest.raises((ValueError, TypeError), match=match):
        zs.fit(X, y)


def test_zero_shot_unfitted_and_pickle(small_data):
    d = small_data
    zs = ZeroShotClassifier(d.classes, text_features=d.text_features)
    with pytest.raises(NotFittedError):
        zs.predict(d.X_test)
    zs.fit(d.X_test)
    again = pickle.loads(pickle.dumps(zs))
    np.testing.assert_array_equal(again.predict(d.X_test), zs.predict(d.X_test))
    with pytest.raises(ValueError, match="features"):
        zs.predict(d.X_test[:, :5])


def test_linear_probe_is_logistic_regression_on_normalised_features(small_data):
    d = small_data
    probe = LinearProbeClassifier(C=2.0).fit(d.X_train, d.y_train)
    ref = LogisticRegression(C=2.0, max_iter=1000).fit(normalize(d.X_train), d.y_train)
    np.testing.assert_allclose(probe.predict_proba(d.X_test),
                               ref.predict_proba(normalize(d.X_test)), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(probe.class_counts_,
                                  [np.sum(d.y_train == c) for c in probe.classes_])


def test_linear_probe_logit_adjustment_favours_rare_classes(small_data):
    d = small_data
    plain = LinearProbeClassifier().fit(d.X_train, d.y_train)
    adjusted = clone(plain).set_params(tau=1.0).fit(d.X_train, d.y_train)
    z0, z1 = plain.decision_function(d.X_test), adjusted.decision_function(d.X_test)
    np.testing.assert_allclose(z1 - z0, np.broadcast_to(-plain.log_prior_, z0.shape))
    rare = plain.classes_[np.argmin(plain.class_counts_)]
    assert (adjusted.predict(d.X_test) == rare).sum() >= (plain.predict(d.X_test) == rare).sum()


def test_linear_probe_binary_adjustment_is_consistent():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(1, 1, (30, 4)), rng.normal(-1, 1, (6, 4))]
    y = np.r_[np.zeros(30, int), np.ones(6, int)]
    probe = LinearProbeClassifier(tau=1.0).fit(X, y)
    d = probe.decision_function(X)
    assert d.shape == (36,)
    proba = probe.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-d)))
    np.testing.assert_array_equal(probe.predict(X), probe.classes_[(d > 0).astype(int)])
